//! What the daemon keeps on disk in its state directory so that nothing is
//! lost across a restart or a `kill -9`: the intake journal, the sink's
//! spool, and the open alerts (docs/architecture.md, "Delivery guarantees").

pub mod journal;
pub mod open_alerts;
pub mod spool;
