//! Several daemons sharing the partitions of a NATS cluster.
