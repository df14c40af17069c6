//! The configuration file's schema: `deny_unknown_fields` structs with
//! their defaults, as the operator writes them. Values are checked in
//! `validate.rs` and turned into typed [`Settings`](super::Settings) there;
//! the schema imports nothing from the crate but the core's name of an
//! execution provider.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::core::execution_provider::ExecutionProvider;

/// A secret string (password, token) that never prints.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "***" })
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub mqtt: MqttConfig,
    #[serde(default)]
    pub topics: Vec<TopicConfig>,
    #[serde(default)]
    pub models: Vec<ModelConfig>,
    /// Name of the model used for assets no `[[assets]]` rule matches.
    #[serde(default)]
    pub default_model: Option<String>,
    #[serde(default)]
    pub assets: Vec<AssetRule>,
    #[serde(default)]
    pub runtime: RuntimeConfig,
    #[serde(default)]
    pub pipeline: PipelineConfig,
    pub influx: InfluxConfig,
    #[serde(default)]
    pub state: StateConfig,
    #[serde(default)]
    pub spool: SpoolConfig,
    #[serde(default)]
    pub journal: JournalConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// Data-quality alarms and alert outputs (`alerts.rs`).
    #[serde(default)]
    pub alerts: super::alerts::AlertsConfig,
    #[serde(default)]
    pub record: RecordConfig,
    /// This daemon's share of a partitioned fleet (`partitions.rs`).
    #[serde(default)]
    pub partitions: Option<super::partitions::PartitionsConfig>,
    /// Detector defaults for every asset: threshold adaptation (`detector.rs`).
    #[serde(default)]
    pub detector: super::detector::DetectorConfig,
}

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
pub struct MqttConfig {
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default = "default_mqtt_port")]
    pub port: u16,
    /// Several broker nodes (`host:port`), tried in order, the next one
    /// when a connection fails; replaces `host`/`port` when set.
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default = "default_client_id")]
    pub client_id: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// File holding the password (systemd `LoadCredential`), trailing newline stripped.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default = "default_keep_alive")]
    pub keep_alive_s: u64,
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// `false` keeps the broker-side session (with QoS 1, nothing published
    /// while the daemon is down is lost).
    #[serde(default)]
    pub clean_session: bool,
    #[serde(default = "default_max_packet")]
    pub max_packet_size: usize,
    #[serde(default = "default_reconnect_min")]
    pub reconnect_min_ms: u64,
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_ms: u64,
    #[serde(default)]
    pub tls: TlsConfig,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(default)]
    pub enabled: bool,
    /// CA bundle (PEM) that signs the broker's certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
}

/// How payloads on a topic filter are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadKind {
    /// A bare number (`21.5`); the topic names the channel.
    Number,
    /// A JSON object with a value field and an optional timestamp field; the
    /// topic names the channel.
    Json,
    /// A JSON object holding several channels (field name = channel) and an
    /// optional timestamp field.
    JsonObject,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// Topic with named segments: `{asset}` (required) and `{channel}`
    /// (required unless `payload = "json_object"`); `+`-like single segments.
    pub filter: String,
    pub payload: PayloadKind,
    #[serde(default = "default_value_field")]
    pub value_field: String,
    #[serde(default = "default_ts_field")]
    pub timestamp_field: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub name: String,
    pub path: PathBuf,
    /// Expected SHA-256 (hex) of the model file; a mismatch refuses it.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Channels the sensors publish for this model; a model file that lacks
    /// one of them is refused (e.g. a retrained model with other inputs).
    #[serde(default)]
    pub channels: Option<Vec<String>>,
}

/// Binds assets matching `pattern` to a model and optionally overrides the
/// detector settings for them. The first matching rule wins.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AssetRule {
    /// Asset id or glob (`*`, `?`).
    pub pattern: String,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub threshold: Option<f32>,
    #[serde(default)]
    pub raise_after: Option<u32>,
    #[serde(default)]
    pub clear_after: Option<u32>,
    #[serde(default)]
    pub clear_ratio: Option<f32>,
    /// Overrides `detector.adapt_half_life_h` for these assets.
    #[serde(default)]
    pub adapt_half_life_h: Option<f64>,
    /// Overrides `detector.adapt_max_factor` for these assets.
    #[serde(default)]
    pub adapt_max_factor: Option<f32>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Path of `libonnxruntime.so`; else `ORT_DYLIB_PATH`, else next to the binary.
    #[serde(default)]
    pub library_path: Option<PathBuf>,
    #[serde(default = "default_ep")]
    pub execution_provider: ExecutionProvider,
    #[serde(default = "one")]
    pub intra_threads: usize,
    /// Most windows scored in one ONNX Runtime call.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Longest a window waits for others to fill a batch.
    #[serde(default = "default_max_wait")]
    pub max_wait_ms: u64,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            library_path: None,
            execution_provider: default_ep(),
            intra_threads: 1,
            max_batch: default_max_batch(),
            max_wait_ms: default_max_wait(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// A channel value older than this many sample periods is imputed.
    #[serde(default = "default_max_age_periods")]
    pub max_age_periods: u32,
    /// How long a frame waits for late channels (event time).
    #[serde(default = "default_lateness")]
    pub allowed_lateness_ms: u64,
    /// Windows with more imputed cells than this fraction (per channel) are not scored.
    #[serde(default = "default_max_imputed")]
    pub max_imputed_fraction: f32,
    /// Bound of the queue between MQTT intake and scoring, in windows.
    #[serde(default = "default_queue")]
    pub queue_capacity: usize,
    /// Most assets tracked at once; readings for further assets are counted and dropped.
    #[serde(default = "default_max_assets")]
    pub max_assets: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            max_age_periods: default_max_age_periods(),
            allowed_lateness_ms: default_lateness(),
            max_imputed_fraction: default_max_imputed(),
            queue_capacity: default_queue(),
            max_assets: default_max_assets(),
        }
    }
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

/// Where the daemon keeps state across restarts (spool, open alerts).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// Unset: `$STATE_DIRECTORY` (systemd `StateDirectory=`); without
    /// either, nothing is kept across restarts.
    #[serde(default)]
    pub directory: Option<PathBuf>,
}

impl StateConfig {
    /// The directory in use, if any.
    pub fn resolved_directory(&self) -> Option<PathBuf> {
        match &self.directory {
            Some(d) if !d.as_os_str().is_empty() => Some(d.clone()),
            _ => std::env::var_os("STATE_DIRECTORY").and_then(|s| std::env::split_paths(&s).next()),
        }
    }
}

/// The on-disk store-and-forward spool for batches the database cannot take.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Directory of the spool; unset means `spool/` in the state directory,
    /// and without one, no spool (failed batches are retried in memory).
    #[serde(default)]
    pub directory: Option<PathBuf>,
    /// Size limit in MiB; when full, the oldest batches are dropped and counted.
    #[serde(default = "default_spool_mb")]
    pub max_mb: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            directory: None,
            max_mb: default_spool_mb(),
        }
    }
}

impl SpoolConfig {
    /// The directory in use, if any, given the state directory.
    pub fn resolved_directory(&self, state: Option<&Path>) -> Option<PathBuf> {
        match &self.directory {
            Some(d) if !d.as_os_str().is_empty() => Some(d.clone()),
            _ => state.map(|d| d.join("spool")),
        }
    }
}

/// The intake journal (at-least-once from the broker, `state/journal/`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    /// Journal messages before acknowledging them; in effect with QoS 1 or
    /// 2 and a state directory (`journal/` in it).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Size limit in MiB of the journal directory.
    #[serde(default = "default_journal_mb")]
    pub max_mb: u64,
    /// `fdatasync` before acknowledging (safe against power cuts too).
    #[serde(default = "default_true")]
    pub fsync: bool,
    /// Size cap in MiB of the dead-letter files (oversize messages kept in
    /// the state directory); 0 keeps none.
    #[serde(default = "default_dead_letter_mb")]
    pub dead_letter_mb: u64,
    /// Sync and acknowledge at most once per this many ms
    /// (docs/low-rate.md §1) ...
    #[serde(default = "default_sync_interval_ms")]
    pub sync_interval_ms: u64,
    /// ... or at once when this many messages wait for their
    /// acknowledgement (keep it below the broker's in-flight window).
    #[serde(default = "default_sync_max_pending")]
    pub sync_max_pending: usize,
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_mb: default_journal_mb(),
            fsync: true,
            dead_letter_mb: default_dead_letter_mb(),
            sync_interval_ms: default_sync_interval_ms(),
            sync_max_pending: default_sync_max_pending(),
        }
    }
}

fn default_sync_interval_ms() -> u64 {
    1000
}

fn default_sync_max_pending() -> usize {
    16
}

fn default_true() -> bool {
    true
}

fn default_journal_mb() -> u64 {
    256
}

fn default_dead_letter_mb() -> u64 {
    16
}

fn default_degraded_after() -> u64 {
    60
}

fn default_spool_mb() -> u64 {
    256
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of `/metrics` and `/healthz`; empty disables the listener.
    #[serde(default = "default_metrics_listen")]
    pub listen: String,
    /// `/readyz` reports degraded once database writes have failed, or
    /// intake has waited on a full queue, for this many seconds in a row.
    #[serde(default = "default_degraded_after")]
    pub degraded_after_s: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: default_metrics_listen(),
            degraded_after_s: default_degraded_after(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Plain,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
    /// `tracing` filter, e.g. `info` or `anomalyd=debug`; `RUST_LOG` wins.
    #[serde(default = "default_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Plain,
            level: default_level(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Deadline for draining the pipeline and flushing the sink on SIGTERM.
    #[serde(default = "default_shutdown")]
    pub timeout_s: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            timeout_s: default_shutdown(),
        }
    }
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_mqtt_port() -> u16 {
    1883
}
/// Unique per gateway and stable across restarts, so two daemons on one
/// broker never take each other's persistent session.
fn default_client_id() -> String {
    format!("anomalyd-{}", host_name())
}
fn default_keep_alive() -> u64 {
    30
}
fn default_qos() -> u8 {
    1
}
fn default_max_packet() -> usize {
    256 * 1024
}
fn default_reconnect_min() -> u64 {
    200
}
fn default_reconnect_max() -> u64 {
    30_000
}
fn default_value_field() -> String {
    "value".into()
}
fn default_ts_field() -> String {
    "ts".into()
}
fn default_ep() -> ExecutionProvider {
    ExecutionProvider::Cpu
}
fn one() -> usize {
    1
}
fn default_max_batch() -> usize {
    64
}
fn default_max_wait() -> u64 {
    100
}
fn default_max_age_periods() -> u32 {
    3
}
fn default_lateness() -> u64 {
    2000
}
fn default_max_imputed() -> f32 {
    0.2
}
/// Four batches of 256: enough to keep the scoring thread busy; beyond it
/// the broker is the better buffer (BENCHMARKS.md, footprint).
fn default_queue() -> usize {
    1024
}
fn default_max_assets() -> usize {
    10_000
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
fn default_metrics_listen() -> String {
    "127.0.0.1:9464".into()
}
fn default_level() -> String {
    "info".into()
}
fn default_shutdown() -> u64 {
    20
}
