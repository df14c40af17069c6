//! What a simulation publishes and how: [`SimulateOptions`] and its parts,
//! and the checks a run makes before it connects.

use std::ops::Range;
use std::path::PathBuf;

use super::{SimulateError, invalid};
use crate::core::synth::FaultKind;

/// Where rows come from.
#[derive(Debug, Clone, PartialEq)]
pub enum SimSource {
    /// A CSV or line-protocol log (any format [`load_log`](crate::core::log::load_log) reads); its
    /// non-label numeric columns are the channels.
    Csv(PathBuf),
    /// [`PumpSimulator`](crate::core::synth::PumpSimulator): the eight
    /// [`PUMP_CHANNELS`](crate::core::synth::PUMP_CHANNELS) at 1 Hz.
    SyntheticPump,
}

/// How fast rows are published.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// Rows per second per asset (every asset publishes row `i` together).
    Rate(f64),
    /// A multiple of real time, following the rows' own timestamps.
    Speed(f64),
    /// No pauses: as fast as the broker takes them.
    AsFastAsPossible,
}

/// What a per-channel message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelPayload {
    /// `12.5` (the receiver uses its receive time).
    Bare,
    /// `{"value":12.5,"ts":1700000000000}`.
    Json,
}

/// Message layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One message per asset and row on the asset's topic:
    /// `{"ts":<ms>,"<channel>":<value>,...}`.
    JsonFrame,
    /// One message per asset, row and channel; the topic template must
    /// contain `{channel}`.
    PerChannel(ChannelPayload),
}

/// TLS for the broker connection (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimTls {
    pub ca_file: PathBuf,
    /// Client certificate and key, for brokers that require one.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// Everything [`simulate`](super::simulate) needs; see [`SimulateOptions::default`].
#[derive(Debug, Clone, PartialEq)]
pub struct SimulateOptions {
    pub broker_host: String,
    pub broker_port: u16,
    pub source: SimSource,
    /// Number of assets, named `{asset_prefix}001`, `{asset_prefix}002`, …
    pub assets: usize,
    pub pace: Pace,
    /// Rows per asset; `None`: the whole log, or forever for the synthetic
    /// pump (until shutdown).
    pub rows: Option<usize>,
    /// Topic with `{asset}` (and `{channel}` for [`Layout::PerChannel`]).
    pub topic_template: String,
    pub layout: Layout,
    /// MQTT QoS 0, 1 or 2.
    pub qos: u8,
    pub asset_prefix: String,
    /// A synthetic fault switched on for these rows (0-based, end
    /// exclusive) of asset 0, or of every asset with `fault_all_assets`.
    pub fault: Option<(FaultKind, Range<usize>)>,
    pub fault_all_assets: bool,
    /// Event time of the first row, ms since the epoch (see the module doc).
    pub start_ts_ms: Option<i64>,
    pub seed: u64,
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls: Option<SimTls>,
    /// MQTT client id; `None` makes a unique one.
    pub client_id: Option<String>,
    /// With [`Pace::Rate`]: asset `a` of `n` publishes each row `a / n` of
    /// a row interval late, so messages arrive evenly rather than in bursts.
    pub spread: bool,
}

impl Default for SimulateOptions {
    /// One synthetic pump at 1 row/s as JSON frames on `sensors/pump-001`,
    /// QoS 1, to `127.0.0.1:1883`.
    fn default() -> Self {
        Self {
            broker_host: "127.0.0.1".to_string(),
            broker_port: 1883,
            source: SimSource::SyntheticPump,
            assets: 1,
            pace: Pace::Rate(1.0),
            rows: None,
            topic_template: DEFAULT_TOPIC.to_string(),
            layout: Layout::JsonFrame,
            qos: 1,
            asset_prefix: "pump-".to_string(),
            fault: None,
            fault_all_assets: false,
            start_ts_ms: None,
            seed: 0,
            username: None,
            password: None,
            tls: None,
            client_id: None,
            spread: false,
        }
    }
}

/// Default topic for [`Layout::JsonFrame`].
pub const DEFAULT_TOPIC: &str = "sensors/{asset}";
/// Default topic for [`Layout::PerChannel`].
pub const DEFAULT_CHANNEL_TOPIC: &str = "sensors/{asset}/{channel}";

pub(super) fn check_options(opts: &SimulateOptions) -> Result<(), SimulateError> {
    if opts.broker_host.is_empty() {
        return Err(invalid("broker host", "is empty"));
    }
    if opts.broker_port == 0 {
        return Err(invalid("broker port", "must not be 0"));
    }
    if opts.assets == 0 {
        return Err(invalid("assets", "must be at least 1"));
    }
    if crate::config::Qos::from_level(opts.qos).is_none() {
        return Err(invalid(
            "qos",
            format!("is {}, must be 0, 1 or 2", opts.qos),
        ));
    }
    match opts.pace {
        Pace::Rate(v) if !(v.is_finite() && v > 0.0) => {
            return Err(invalid("rate", format!("{v} is not a positive number")));
        }
        Pace::Speed(v) if !(v.is_finite() && v > 0.0) => {
            return Err(invalid("speed", format!("{v} is not a positive number")));
        }
        _ => {}
    }
    if let Some((_, r)) = &opts.fault
        && r.start >= r.end
    {
        return Err(invalid("fault rows", format!("{r:?} is empty")));
    }
    if opts.password.is_some() && opts.username.is_none() {
        return Err(invalid("password", "given without a username"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_options_are_refused() {
        let bad = |opts: SimulateOptions| check_options(&opts).unwrap_err().to_string();
        let d = SimulateOptions::default;
        assert!(bad(SimulateOptions { assets: 0, ..d() }).contains("assets"));
        assert!(bad(SimulateOptions { qos: 3, ..d() }).contains("qos"));
        assert!(
            bad(SimulateOptions {
                pace: Pace::Rate(0.0),
                ..d()
            })
            .contains("rate")
        );
        assert!(
            bad(SimulateOptions {
                pace: Pace::Speed(f64::NAN),
                ..d()
            })
            .contains("speed")
        );
        let fault = Some((FaultKind::Blockage, 5..5));
        assert!(bad(SimulateOptions { fault, ..d() }).contains("fault rows"));
    }
}
