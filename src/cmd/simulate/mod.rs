//! `anomalyd simulate`: publishes sensor rows as MQTT messages, for demos,
//! tests and load tests.
//!
//! Rows come from a CSV/line-protocol log or from the synthetic pump
//! ([`crate::core::synth`]); each of `assets` assets gets its own copy (the synthetic
//! pump of asset `a` is seeded with `seed + a`, so asset 0 reproduces
//! [`crate::core::synth::generate`] with the same seed). A row becomes one JSON
//! object per asset ([`Layout::JsonFrame`]) or one message per channel
//! ([`Layout::PerChannel`]). Missing (NaN) values are left out, as a gap in a
//! historian export would be.
//!
//! Event time: row `i` carries `start + (row_time_i - row_time_0)` in
//! milliseconds, where the synthetic pump's rows are 1 s apart. `start` is
//! [`SimulateOptions::start_ts_ms`] when given; otherwise a log replayed
//! [`Pace::AsFastAsPossible`] keeps its own timestamps, and everything else
//! starts at the current time, so with [`Pace::Speed`]`(1.0)` the timestamps
//! follow the wall clock.
//!
//! Delivery: with QoS 1/2 [`simulate`] returns only after the broker
//! acknowledged every message, so a caller knows everything reached the
//! broker. A lost connection is retried with capped backoff and unacknowledged
//! messages are sent again (at least once); only the first connection failing
//! or the broker staying away for [`RECONNECT_GIVE_UP`] is an error.

mod args;
mod link;
mod options;
mod payload;
mod publisher;
mod rows;

use std::path::PathBuf;

use rumqttc::ConnectionError;

use crate::core::log::LoadError;

pub use self::args::{SimulateArgs, parse_broker, parse_row_range};
pub use self::link::RECONNECT_GIVE_UP;
pub use self::options::{
    ChannelPayload, DEFAULT_CHANNEL_TOPIC, DEFAULT_TOPIC, Layout, Pace, SimSource, SimTls,
    SimulateOptions,
};
pub use self::payload::{MessageFormatter, asset_name};
pub use self::publisher::{SimulateReport, due_after, simulate};
pub use self::rows::SYNTHETIC_PERIOD_MS;

/// Why a simulation could not run or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error("simulate: {option}: {reason}")]
    InvalidOption {
        option: &'static str,
        reason: String,
    },
    #[error("simulate: cannot load rows: {0}")]
    Load(#[from] LoadError),
    #[error("simulate: cannot read {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("simulate: cannot connect to MQTT broker {broker}: {source}")]
    Connect {
        broker: String,
        #[source]
        source: Box<ConnectionError>,
    },
    #[error("simulate: lost MQTT broker {broker} for more than {}s: {source}", RECONNECT_GIVE_UP.as_secs())]
    ConnectionLost {
        broker: String,
        #[source]
        source: Box<ConnectionError>,
    },
    #[error("simulate: the MQTT connection task stopped unexpectedly: {0}")]
    Link(String),
}

fn invalid(option: &'static str, reason: impl Into<String>) -> SimulateError {
    SimulateError::InvalidOption {
        option,
        reason: reason.into(),
    }
}
