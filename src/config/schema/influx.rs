//! `[influx]` and `[record]`: where scores, alerts and recorded frames are
//! written.

use super::*;

/// `[record]`: the aligned frames the daemon sees, written to the same
/// database as training data (docs/influxdb.md §6). Off by default.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RecordConfig {
    #[serde(default)]
    pub enabled: bool,
    /// One point per asset and frame; tags `asset`, `host`; one field per channel.
    #[serde(default = "default_record_measurement")]
    pub measurement: String,
    /// Frames waiting to be written; beyond it frames are counted and not recorded.
    #[serde(default = "default_influx_queue")]
    pub queue_capacity: usize,
}

impl Default for RecordConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            measurement: default_record_measurement(),
            queue_capacity: default_influx_queue(),
        }
    }
}

fn default_record_measurement() -> String {
    "anomalyd_frames".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxConfig {
    pub url: String,
    #[serde(default)]
    pub org: String,
    /// v2: the bucket (required there).
    #[serde(default)]
    pub bucket: String,
    #[serde(default)]
    pub token: Option<Secret>,
    /// File holding the token (systemd `LoadCredential`).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Extra CA (PEM) for an https URL with a private CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    #[serde(default = "default_request_timeout")]
    pub request_timeout_ms: u64,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    #[serde(default = "default_flush")]
    pub flush_interval_ms: u64,
    #[serde(default = "default_retry_min")]
    pub retry_min_ms: u64,
    #[serde(default = "default_retry_max")]
    pub retry_max_ms: u64,
    /// Points held in memory while the database is slow or away; beyond it
    /// the pipeline is slowed (backpressure), then the oldest are dropped and counted.
    #[serde(default = "default_influx_queue")]
    pub queue_capacity: usize,
    #[serde(default = "default_score_measurement")]
    pub score_measurement: String,
    #[serde(default = "default_alert_measurement")]
    pub alert_measurement: String,
    /// Which write API the database speaks (docs/influxdb.md §1).
    #[serde(default)]
    pub api: InfluxApi,
    /// v1: the database (`db`, required there).
    #[serde(default)]
    pub database: String,
    /// v1: the retention policy (`rp`); unset: the database's default.
    #[serde(default)]
    pub retention_policy: Option<String>,
    /// v1: user for HTTP basic auth, with `password` or `password_file`.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// File holding the password (systemd `LoadCredential`).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Compress request bodies (`Content-Encoding: gzip`).
    #[serde(default)]
    pub gzip: bool,
    /// The `host` tag on every point: unset, this machine's host name;
    /// empty, no `host` tag.
    #[serde(default)]
    pub host_tag: Option<String>,
}

impl InfluxConfig {
    /// The `host` tag's value, if points carry one.
    pub fn host_tag_value(&self) -> Option<String> {
        match &self.host_tag {
            Some(h) if h.is_empty() => None,
            Some(h) => Some(h.clone()),
            None => Some(host_name()),
        }
    }
}

/// This machine's host name (`/proc/sys/kernel/hostname`, else
/// `$HOSTNAME`, else `localhost`): stable across restarts and, on a
/// gateway fleet, one per gateway.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The InfluxDB write API the sink talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InfluxApi {
    /// `/api/v2/write` with org, bucket and token: InfluxDB 2.x/3.x/Cloud,
    /// 1.8+, VictoriaMetrics.
    #[default]
    V2,
    /// `/write` with db, rp and user/password or token: InfluxDB 1.x.
    V1,
}

fn default_connect_timeout() -> u64 {
    2000
}

fn default_request_timeout() -> u64 {
    10_000
}

fn default_batch_size() -> usize {
    1000
}

fn default_flush() -> u64 {
    1000
}

fn default_retry_min() -> u64 {
    200
}

fn default_retry_max() -> u64 {
    30_000
}

fn default_influx_queue() -> usize {
    20_000
}

fn default_score_measurement() -> String {
    "anomaly_score".into()
}

fn default_alert_measurement() -> String {
    "anomaly_alert".into()
}
