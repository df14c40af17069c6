//! Where scores and alerts go: a generic batch/retry/spool [`runner`] over
//! a writer trait, the InfluxDB writer and line protocol ([`influx`]) for
//! the daemon, the alert outputs ([`alerts`]: MQTT, webhook), and [`csv`]
//! for `replay`; [`http`] builds the client of both HTTP outputs.

pub mod alerts;
pub mod csv;
pub mod http;
pub mod influx;
pub mod runner;

pub use runner::{
    BatchSettings, BatchWriter, Runner, SinkReceiver, SinkSender, SinkStore, WriteFailure,
    sink_queue,
};
