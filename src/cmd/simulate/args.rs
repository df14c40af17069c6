//! The `anomalyd simulate` command line and its translation into
//! [`SimulateOptions`].

use std::ops::Range;
use std::path::PathBuf;

use super::{
    ChannelPayload, DEFAULT_CHANNEL_TOPIC, DEFAULT_TOPIC, Layout, Pace, SimSource, SimTls,
    SimulateError, SimulateOptions, invalid,
};
use crate::core::synth::FaultKind;

/// `anomalyd simulate` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// MQTT broker as HOST:PORT (a bare HOST means port 1883).
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub broker: String,
    /// Publish the rows of this CSV or line-protocol log.
    #[arg(long, conflicts_with = "synthetic")]
    pub input: Option<PathBuf>,
    /// Publish generated data of this kind (`pump`, the default when no --input).
    #[arg(long, value_parser = ["pump"])]
    pub synthetic: Option<String>,
    /// Number of assets (each publishes every row).
    #[arg(long, default_value_t = 1)]
    pub assets: usize,
    /// Rows per second per asset [default: 1].
    #[arg(long, conflicts_with_all = ["speed", "fast"])]
    pub rate: Option<f64>,
    /// Follow the rows' timestamps at this multiple of real time.
    #[arg(long, conflicts_with = "fast")]
    pub speed: Option<f64>,
    /// Publish as fast as the broker accepts.
    #[arg(long)]
    pub fast: bool,
    /// With --rate: spread each row's messages evenly over the row
    /// interval, as devices on their own clocks do, instead of one burst.
    #[arg(long, conflicts_with_all = ["speed", "fast"])]
    pub spread: bool,
    /// Rows per asset [default: the whole log; the synthetic pump runs until Ctrl-C].
    #[arg(long)]
    pub rows: Option<usize>,
    /// Topic template with {asset} (and {channel} with --per-channel)
    /// [default: sensors/{asset}, or sensors/{asset}/{channel}].
    #[arg(long)]
    pub topic_template: Option<String>,
    /// One message per channel instead of one JSON object per row.
    #[arg(long)]
    pub per_channel: bool,
    /// With --per-channel: send bare numbers instead of {"value":..,"ts":..}.
    #[arg(long, requires = "per_channel")]
    pub bare: bool,
    /// MQTT QoS (0, 1 or 2).
    #[arg(long, default_value_t = 1)]
    pub qos: u8,
    /// Asset names are this prefix plus 001, 002, ...
    #[arg(long, default_value = "pump-")]
    pub asset_prefix: String,
    /// Inject a synthetic fault: bearing, cavitation or blockage.
    #[arg(long, requires = "fault_rows")]
    pub fault: Option<FaultKind>,
    /// Rows with the fault, START..END (0-based, END exclusive).
    #[arg(long, requires = "fault")]
    pub fault_rows: Option<String>,
    /// Inject the fault into every asset, not only the first.
    #[arg(long, requires = "fault")]
    pub fault_all_assets: bool,
    /// Event time of the first row (RFC 3339 or an epoch number).
    #[arg(long)]
    pub start_ts: Option<String>,
    /// Seed of the synthetic pump (asset N uses seed + N).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub username: Option<String>,
    /// File holding the MQTT password (keeps it out of the process list).
    #[arg(long, conflicts_with = "password")]
    pub password_file: Option<PathBuf>,
    #[arg(long)]
    pub password: Option<String>,
    /// Connect with TLS, trusting this CA certificate (PEM).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, requires_all = ["client_key", "ca_file"])]
    pub client_cert: Option<PathBuf>,
    #[arg(long, requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// MQTT client id [default: a unique one].
    #[arg(long)]
    pub client_id: Option<String>,
}

/// Parses `HOST:PORT` (or a bare host, port 1883; `[v6]:PORT` for IPv6).
pub fn parse_broker(s: &str) -> Result<(String, u16), SimulateError> {
    let bad = || invalid("broker", format!("{s:?} is not HOST:PORT"));
    if let Some(rest) = s.strip_prefix('[') {
        let (host, port) = rest.split_once("]:").ok_or_else(bad)?;
        return Ok((host.to_string(), port.parse().map_err(|_| bad())?));
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !host.contains(':') => {
            Ok((host.to_string(), port.parse().map_err(|_| bad())?))
        }
        None if !s.is_empty() => Ok((s.to_string(), 1883)),
        _ => Err(bad()),
    }
}

/// Parses `START..END` into a row range.
pub fn parse_row_range(s: &str) -> Result<Range<usize>, SimulateError> {
    let bad = || invalid("fault rows", format!("{s:?} is not START..END"));
    let (a, b) = s.split_once("..").ok_or_else(bad)?;
    let start = a.trim().parse().map_err(|_| bad())?;
    let end = b.trim().parse().map_err(|_| bad())?;
    Ok(start..end)
}

impl SimulateArgs {
    /// Checks the arguments and turns them into [`SimulateOptions`].
    ///
    /// # Errors
    /// [`SimulateError::InvalidOption`] for a malformed row range or start
    /// time, [`SimulateError::ReadFile`] for an unreadable password file.
    pub fn into_options(self) -> Result<SimulateOptions, SimulateError> {
        let pace = match (self.rate, self.speed, self.fast) {
            (_, _, true) => Pace::AsFastAsPossible,
            (_, Some(x), _) => Pace::Speed(x),
            (r, None, false) => Pace::Rate(r.unwrap_or(1.0)),
        };
        let layout = match (self.per_channel, self.bare) {
            (false, _) => Layout::JsonFrame,
            (true, false) => Layout::PerChannel(ChannelPayload::Json),
            (true, true) => Layout::PerChannel(ChannelPayload::Bare),
        };
        let topic_template = self.topic_template.unwrap_or_else(|| {
            if self.per_channel {
                DEFAULT_CHANNEL_TOPIC
            } else {
                DEFAULT_TOPIC
            }
            .to_string()
        });
        let fault = match (self.fault, self.fault_rows) {
            (Some(kind), Some(rows)) => Some((kind, parse_row_range(&rows)?)),
            _ => None,
        };
        let start_ts_ms = self
            .start_ts
            .map(|s| {
                crate::core::timestamp::parse_timestamp(&s)
                    .map(|ns| ns.div_euclid(1_000_000))
                    .map_err(|e| invalid("start ts", e.to_string()))
            })
            .transpose()?;
        let password = match self.password_file {
            Some(path) => Some(
                std::fs::read_to_string(&path)
                    .map_err(|source| SimulateError::ReadFile { path, source })?
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
            ),
            None => self.password,
        };
        let tls = self.ca_file.map(|ca_file| SimTls {
            ca_file,
            client_cert: self.client_cert.zip(self.client_key),
        });
        let (broker_host, broker_port) = parse_broker(&self.broker)?;
        Ok(SimulateOptions {
            broker_host,
            broker_port,
            source: self.input.map_or(SimSource::SyntheticPump, SimSource::Csv),
            assets: self.assets,
            pace,
            rows: self.rows,
            topic_template,
            layout,
            qos: self.qos,
            asset_prefix: self.asset_prefix,
            fault,
            fault_all_assets: self.fault_all_assets,
            start_ts_ms,
            seed: self.seed,
            username: self.username,
            password,
            tls,
            client_id: self.client_id,
            spread: self.spread,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: SimulateArgs,
    }

    fn parse(args: &[&str]) -> SimulateOptions {
        let cli =
            Cli::try_parse_from(std::iter::once("simulate").chain(args.iter().copied())).unwrap();
        cli.args.into_options().unwrap()
    }

    #[test]
    fn broker_addresses() {
        assert_eq!(parse_broker("h:1").unwrap(), ("h".to_string(), 1));
        assert_eq!(parse_broker("h").unwrap(), ("h".to_string(), 1883));
        assert_eq!(parse_broker("[::1]:99").unwrap(), ("::1".to_string(), 99));
        assert!(parse_broker("h:x").is_err());
        assert!(parse_broker("").is_err());
    }

    #[test]
    fn command_line_defaults_and_choices() {
        assert_eq!(parse(&[]), SimulateOptions::default());
        let o = parse(&[
            "--broker",
            "127.0.0.1:1884",
            "--assets",
            "3",
            "--fast",
            "--per-channel",
            "--bare",
            "--qos",
            "0",
            "--fault",
            "cavitation",
            "--fault-rows",
            "10..20",
            "--start-ts",
            "2024-01-01T00:00:00Z",
            "--rows",
            "50",
        ]);
        assert_eq!(o.broker_port, 1884);
        assert_eq!(o.assets, 3);
        assert_eq!(o.pace, Pace::AsFastAsPossible);
        assert_eq!(o.layout, Layout::PerChannel(ChannelPayload::Bare));
        assert_eq!(o.topic_template, DEFAULT_CHANNEL_TOPIC);
        assert_eq!(o.fault, Some((FaultKind::Cavitation, 10..20)));
        assert_eq!(o.start_ts_ms, Some(1_704_067_200_000));
        assert_eq!(o.rows, Some(50));
        assert_eq!(parse(&["--speed", "60"]).pace, Pace::Speed(60.0));
        assert_eq!(parse(&["--rate", "100"]).pace, Pace::Rate(100.0));
        assert!(Cli::try_parse_from(["simulate", "--rate", "1", "--fast"]).is_err());
        assert!(Cli::try_parse_from(["simulate", "--fault", "bearing"]).is_err());
        let cli = Cli::try_parse_from(["simulate", "--fault", "bearing", "--fault-rows", "9"]);
        assert!(cli.unwrap().args.into_options().is_err());
    }
}
