//! The configuration file's schema: `deny_unknown_fields` structs with
//! their defaults, as the operator writes them. Values are checked in
//! `validate.rs` and turned into typed [`Settings`](super::Settings) there;
//! the schema imports nothing from the crate but the core's name of an
//! execution provider. `mqtt.rs` holds the broker and topic sections,
//! `influx.rs` the database and `[record]`, `state.rs` the state
//! directory, spool and journal; the rest is here.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod influx;
mod mqtt;
mod state;
pub use influx::*;
pub use mqtt::*;
pub use state::*;

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

fn default_degraded_after() -> u64 {
    60
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
    250
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

fn default_metrics_listen() -> String {
    "127.0.0.1:9464".into()
}

fn default_level() -> String {
    "info".into()
}

fn default_shutdown() -> u64 {
    20
}
