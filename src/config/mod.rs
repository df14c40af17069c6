//! The daemon's configuration: TOML file plus `ANOMALYD__SECTION__KEY`
//! environment overrides, parsed into `deny_unknown_fields` structs and then
//! validated as a whole, so the operator sees every problem with its key path
//! at once.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::ExecutionProvider;

/// Exit code for a configuration error (`EX_CONFIG` from sysexits.h).
pub const EXIT_CONFIG: i32 = 78;

/// One problem found in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `mqtt.port` or `topics[1].filter`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("config {origin} has {} problem(s):\n  {}", problems.len(), problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    Invalid {
        origin: String,
        problems: Vec<Problem>,
    },
}

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
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default = "default_mqtt_port")]
    pub port: u16,
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

/// The intake journal (at-least-once from the broker, `journal.rs`).
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
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_mb: default_journal_mb(),
            fsync: true,
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_journal_mb() -> u64 {
    256
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
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: default_metrics_listen(),
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
fn default_client_id() -> String {
    "anomalyd".into()
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
    5
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

impl Config {
    /// Loads `path`, applies `ANOMALYD__SECTION__KEY` environment overrides,
    /// and validates the result.
    ///
    /// # Errors
    /// Unreadable file, TOML syntax, unknown or mistyped keys (with their
    /// path), and every failed validation rule.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("ANOMALYD__"))
            .collect();
        let mut cfg = Self::from_toml_with_env(&text, &path.display().to_string(), &env)?;
        cfg.resolve_relative_paths(path.parent().unwrap_or(Path::new(".")));
        Ok(cfg)
    }

    /// Parses TOML text plus explicit environment overrides (pure; tests
    /// call it directly).
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn from_toml_with_env(
        text: &str,
        origin: &str,
        env: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml));
        for (k, v) in env {
            let Some(rest) = k.strip_prefix("ANOMALYD__") else {
                continue;
            };
            let key = rest.to_ascii_lowercase().replace("__", ".");
            builder = builder
                .set_override(key.clone(), typed_env_value(v))
                .map_err(|e| ConfigError::Parse {
                    origin: format!("{origin} (environment {k})"),
                    message: e.to_string(),
                })?;
        }
        let merged: serde_json::Value =
            builder
                .build()
                .and_then(|c| c.try_deserialize())
                .map_err(|e| ConfigError::Parse {
                    origin: origin.to_string(),
                    message: e.to_string(),
                })?;
        let cfg: Config = serde_path_to_error::deserialize(&merged).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::Invalid {
                origin: origin.to_string(),
                problems: vec![Problem {
                    key: if path == "." {
                        "(top level)".into()
                    } else {
                        path
                    },
                    message: e.into_inner().to_string(),
                }],
            }
        })?;
        let problems = cfg.problems();
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Invalid {
                origin: origin.to_string(),
                problems,
            })
        }
    }

    fn resolve_relative_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        };
        for m in &mut self.models {
            fix(&mut m.path);
        }
        for p in [
            &mut self.mqtt.password_file,
            &mut self.mqtt.tls.ca_file,
            &mut self.mqtt.tls.client_cert,
            &mut self.mqtt.tls.client_key,
            &mut self.influx.token_file,
            &mut self.influx.ca_file,
            &mut self.runtime.library_path,
            &mut self.spool.directory,
            &mut self.state.directory,
        ]
        .into_iter()
        .flatten()
        {
            fix(p);
        }
    }

    /// Every rule the configuration breaks, with its key path.
    pub fn problems(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        let mut bad = |key: String, message: String| p.push(Problem { key, message });
        let m = &self.mqtt;
        if m.host.trim().is_empty() {
            bad("mqtt.host".into(), "is empty".into());
        }
        if m.port == 0 {
            bad("mqtt.port".into(), "must not be 0".into());
        }
        if m.client_id.is_empty() && !m.clean_session {
            bad(
                "mqtt.client_id".into(),
                "a persistent session (clean_session = false) needs a fixed client id".into(),
            );
        }
        if m.qos > 2 {
            bad(
                "mqtt.qos".into(),
                format!("is {}, must be 0, 1 or 2", m.qos),
            );
        }
        if m.keep_alive_s < 5 {
            bad("mqtt.keep_alive_s".into(), "must be at least 5".into());
        }
        if m.max_packet_size < 1024 {
            bad(
                "mqtt.max_packet_size".into(),
                "must be at least 1024".into(),
            );
        }
        if m.reconnect_min_ms == 0 || m.reconnect_max_ms < m.reconnect_min_ms {
            bad(
                "mqtt.reconnect_max_ms".into(),
                "reconnect_min_ms must be > 0 and <= reconnect_max_ms".into(),
            );
        }
        if m.password.is_some() && m.password_file.is_some() {
            bad(
                "mqtt.password_file".into(),
                "set password or password_file, not both".into(),
            );
        }
        if (m.password.is_some() || m.password_file.is_some()) && m.username.is_none() {
            bad(
                "mqtt.username".into(),
                "a password is set but no username".into(),
            );
        }
        if m.tls.client_cert.is_some() != m.tls.client_key.is_some() {
            bad(
                "mqtt.tls.client_key".into(),
                "client_cert and client_key go together".into(),
            );
        }
        if self.topics.is_empty() {
            bad(
                "topics".into(),
                "no [[topics]] configured: nothing to subscribe to".into(),
            );
        }
        for (i, t) in self.topics.iter().enumerate() {
            if let Err(e) = crate::sources::mqtt::decode::TopicPattern::parse(&t.filter, t.payload)
            {
                bad(format!("topics[{i}].filter"), e.to_string());
            }
        }
        if self.models.is_empty() {
            bad("models".into(), "no [[models]] configured".into());
        }
        let mut names = std::collections::HashSet::new();
        for (i, mc) in self.models.iter().enumerate() {
            if mc.name.is_empty() {
                bad(format!("models[{i}].name"), "is empty".into());
            }
            if !names.insert(mc.name.as_str()) {
                bad(
                    format!("models[{i}].name"),
                    format!("{:?} is defined twice", mc.name),
                );
            }
            if let Some(h) = &mc.sha256
                && (h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()))
            {
                bad(
                    format!("models[{i}].sha256"),
                    "must be 64 hex digits".into(),
                );
            }
        }
        match &self.default_model {
            Some(d) if !names.contains(d.as_str()) => bad(
                "default_model".into(),
                format!("names {d:?}, which no [[models]] entry defines"),
            ),
            None if self.models.len() > 1 => bad(
                "default_model".into(),
                "several models are configured: say which one is the default".into(),
            ),
            _ => {}
        }
        for (i, r) in self.assets.iter().enumerate() {
            if r.pattern.is_empty() {
                bad(format!("assets[{i}].pattern"), "is empty".into());
            }
            if let Some(mname) = &r.model
                && !names.contains(mname.as_str())
            {
                bad(
                    format!("assets[{i}].model"),
                    format!("names {mname:?}, which no [[models]] entry defines"),
                );
            }
            if let Some(t) = r.threshold
                && !(t.is_finite() && t > 0.0)
            {
                bad(format!("assets[{i}].threshold"), "must be > 0".into());
            }
            if r.raise_after == Some(0) {
                bad(format!("assets[{i}].raise_after"), "must be >= 1".into());
            }
            if r.clear_after == Some(0) {
                bad(format!("assets[{i}].clear_after"), "must be >= 1".into());
            }
            if let Some(c) = r.clear_ratio
                && !(c > 0.0 && c <= 1.0)
            {
                bad(
                    format!("assets[{i}].clear_ratio"),
                    "must be in (0, 1]".into(),
                );
            }
        }
        let rt = &self.runtime;
        if rt.intra_threads == 0 {
            bad("runtime.intra_threads".into(), "must be >= 1".into());
        }
        if rt.max_batch == 0 || rt.max_batch > 65_536 {
            bad("runtime.max_batch".into(), "must be in 1..=65536".into());
        }
        let pl = &self.pipeline;
        if pl.max_age_periods == 0 {
            bad("pipeline.max_age_periods".into(), "must be >= 1".into());
        }
        if !(0.0..=1.0).contains(&pl.max_imputed_fraction) {
            bad(
                "pipeline.max_imputed_fraction".into(),
                "must be in [0, 1]".into(),
            );
        }
        if pl.queue_capacity == 0 {
            bad("pipeline.queue_capacity".into(), "must be >= 1".into());
        }
        if pl.max_assets == 0 {
            bad("pipeline.max_assets".into(), "must be >= 1".into());
        }
        let ix = &self.influx;
        match reqwest::Url::parse(&ix.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            Ok(u) => bad(
                "influx.url".into(),
                format!("{:?}: scheme must be http or https with a host", u.as_str()),
            ),
            Err(e) => bad(
                "influx.url".into(),
                format!("{:?} is not a URL: {e}", ix.url),
            ),
        }
        if ix.bucket.is_empty() {
            bad("influx.bucket".into(), "is empty".into());
        }
        if ix.token.is_some() && ix.token_file.is_some() {
            bad(
                "influx.token_file".into(),
                "set token or token_file, not both".into(),
            );
        }
        if ix.batch_size == 0 {
            bad("influx.batch_size".into(), "must be >= 1".into());
        }
        if ix.flush_interval_ms == 0 {
            bad("influx.flush_interval_ms".into(), "must be >= 1".into());
        }
        if ix.queue_capacity < ix.batch_size {
            bad(
                "influx.queue_capacity".into(),
                "must be at least batch_size".into(),
            );
        }
        if ix.retry_min_ms == 0 || ix.retry_max_ms < ix.retry_min_ms {
            bad(
                "influx.retry_max_ms".into(),
                "retry_min_ms must be > 0 and <= retry_max_ms".into(),
            );
        }
        for (key, v) in [
            ("influx.score_measurement", &ix.score_measurement),
            ("influx.alert_measurement", &ix.alert_measurement),
        ] {
            if v.is_empty() {
                bad(key.into(), "is empty".into());
            }
        }
        if !self.metrics.listen.is_empty()
            && self.metrics.listen.parse::<std::net::SocketAddr>().is_err()
        {
            bad(
                "metrics.listen".into(),
                format!(
                    "{:?} is not an address like 127.0.0.1:9464",
                    self.metrics.listen
                ),
            );
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            bad(
                "log.level".into(),
                format!("{:?} is not a tracing filter", self.log.level),
            );
        }
        if self.spool.max_mb == 0 {
            bad("spool.max_mb".into(), "must be >= 1".into());
        }
        if self.journal.max_mb == 0 {
            bad("journal.max_mb".into(), "must be >= 1".into());
        }
        if self.shutdown.timeout_s == 0 {
            bad("shutdown.timeout_s".into(), "must be >= 1".into());
        }
        p
    }

    /// The MQTT password, from the config or its file.
    ///
    /// # Errors
    /// The password file cannot be read.
    pub fn mqtt_password(&self) -> Result<Option<Secret>, ConfigError> {
        read_secret(
            self.mqtt.password.as_ref(),
            self.mqtt.password_file.as_deref(),
        )
    }

    /// The InfluxDB token, from the config or its file (empty when neither).
    ///
    /// # Errors
    /// The token file cannot be read.
    pub fn influx_token(&self) -> Result<Secret, ConfigError> {
        Ok(read_secret(
            self.influx.token.as_ref(),
            self.influx.token_file.as_deref(),
        )?
        .unwrap_or_default())
    }

    /// The model and detector overrides that apply to `asset`.
    pub fn rule_for(&self, asset: &str) -> Option<&AssetRule> {
        self.assets.iter().find(|r| glob_match(&r.pattern, asset))
    }

    /// Name of the model `asset` is bound to.
    pub fn model_for(&self, asset: &str) -> Option<&str> {
        self.rule_for(asset)
            .and_then(|r| r.model.as_deref())
            .or(self.default_model.as_deref())
            .or_else(|| (self.models.len() == 1).then(|| self.models[0].name.as_str()))
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown.timeout_s)
    }
}

fn read_secret(
    inline: Option<&Secret>,
    file: Option<&Path>,
) -> Result<Option<Secret>, ConfigError> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        return Ok(Some(Secret::new(text.trim_end_matches(['\r', '\n']))));
    }
    Ok(inline.cloned())
}

/// Environment values are strings; numbers and booleans are typed so that
/// `ANOMALYD__MQTT__PORT=1884` overrides an integer field.
fn typed_env_value(v: &str) -> config::Value {
    if let Ok(i) = v.parse::<i64>() {
        return i.into();
    }
    if let Ok(f) = v.parse::<f64>()
        && v.contains('.')
    {
        return f.into();
    }
    match v {
        "true" => true.into(),
        "false" => false.into(),
        _ => v.into(),
    }
}

/// Glob match with `*` (any run) and `?` (one character).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [mqtt]
        host = "127.0.0.1"
        [[topics]]
        filter = "plant/{asset}/{channel}"
        payload = "number"
        [[models]]
        name = "pump"
        path = "models/pump.onnx"
        [influx]
        url = "http://127.0.0.1:8086"
        bucket = "b"
    "#;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_toml_with_env(text, "test.toml", &env)
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL, &[]).unwrap();
        assert_eq!(c.mqtt.port, 1883);
        assert_eq!(c.mqtt.qos, 1);
        assert_eq!(c.runtime.intra_threads, 1);
        assert_eq!(c.model_for("anything"), Some("pump"));
        assert_eq!(c.influx.score_measurement, "anomaly_score");
    }

    #[test]
    fn environment_overrides_typed_values() {
        let c = parse(
            MINIMAL,
            &[
                ("ANOMALYD__MQTT__PORT", "1884"),
                ("ANOMALYD__MQTT__CLEAN_SESSION", "true"),
                ("ANOMALYD__INFLUX__BUCKET", "plant"),
            ],
        )
        .unwrap();
        assert_eq!(c.mqtt.port, 1884);
        assert!(c.mqtt.clean_session);
        assert_eq!(c.influx.bucket, "plant");
    }

    #[test]
    fn unknown_key_is_named_with_its_path() {
        let text = MINIMAL.replace("host = \"127.0.0.1\"", "hots = \"x\"");
        let err = parse(&text, &[]).unwrap_err().to_string();
        assert!(err.contains("mqtt") && err.contains("hots"), "{err}");
    }

    #[test]
    fn wrong_type_is_named_with_its_path() {
        let err = parse(MINIMAL, &[("ANOMALYD__MQTT__PORT", "lots")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("mqtt.port"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = MINIMAL
            .replace(
                "payload = \"number\"",
                "payload = \"number\"\n[[topics]]\nfilter = \"x/y\"\npayload = \"json\"",
            )
            .replace("bucket = \"b\"", "bucket = \"\"\nbatch_size = 0");
        let err = parse(&text, &[("ANOMALYD__MQTT__QOS", "3")]).unwrap_err();
        let ConfigError::Invalid { problems, .. } = &err else {
            panic!("{err}")
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        for k in [
            "mqtt.qos",
            "topics[1].filter",
            "influx.bucket",
            "influx.batch_size",
        ] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}");
        }
    }

    #[test]
    fn bad_url_is_a_problem_not_a_panic() {
        let err = parse(&MINIMAL.replace("http://127.0.0.1:8086", "not a url"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("influx.url"), "{err}");
    }

    #[test]
    fn asset_rules_bind_models_first_match_wins() {
        let text = format!(
            "default_model = \"pump\"\n{MINIMAL}\n[[models]]\nname = \"fan\"\npath = \"f.onnx\"\n\
             [[assets]]\npattern = \"fan-*\"\nmodel = \"fan\"\nthreshold = 2.0\n\
             [[assets]]\npattern = \"*\"\nraise_after = 5\n"
        );
        let c = parse(&text, &[]).unwrap();
        assert_eq!(c.model_for("fan-7"), Some("fan"));
        assert_eq!(c.model_for("pump-1"), Some("pump"));
        assert_eq!(c.rule_for("pump-1").unwrap().raise_after, Some(5));
        assert_eq!(c.rule_for("fan-7").unwrap().threshold, Some(2.0));
    }

    #[test]
    fn secrets_never_print() {
        let text = MINIMAL.replace(
            "host = \"127.0.0.1\"",
            "host = \"127.0.0.1\"\nusername = \"u\"\npassword = \"hunter2\"",
        );
        let c = parse(&text, &[]).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&c).unwrap().contains("hunter2"));
        assert_eq!(c.mqtt_password().unwrap().unwrap().expose(), "hunter2");
    }

    #[test]
    fn secret_from_file_strips_newline() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "s3cret\n").unwrap();
        let text = MINIMAL.replace(
            "bucket = \"b\"",
            &format!("bucket = \"b\"\ntoken_file = {:?}", f),
        );
        let c = parse(&text, &[]).unwrap();
        assert_eq!(c.influx_token().unwrap().expose(), "s3cret");
    }

    #[test]
    fn glob_patterns() {
        assert!(glob_match("pump-*", "pump-12"));
        assert!(glob_match("*", ""));
        assert!(glob_match("p?mp", "pump"));
        assert!(!glob_match("pump-*", "fan-1"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
    }

    #[test]
    fn shipped_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                n += 1;
            }
        }
        assert!(n >= 1, "no config/*.toml found");
    }
}
