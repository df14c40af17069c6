//! Where scores and alerts go: InfluxDB (and anything that speaks its v2
//! write API) for the daemon, CSV for `replay`.

pub mod influx;
