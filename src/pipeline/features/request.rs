//! What the feature stage hands on and how it is set up: the normalised
//! window waiting for its score, and the aligner and window settings.

use std::sync::Arc;

use crate::config::Config;
use crate::pipeline::binding::AssetBinding;

/// A normalised window waiting for its score.
#[derive(Debug, Clone)]
pub struct ScoreRequest {
    pub binding: Arc<AssetBinding>,
    pub end_ts: i64,
    /// `C x T`, channel-major, normalised.
    pub data: Vec<f32>,
    /// History only: its outputs were written before (a journal replayed
    /// after a restart, a partition's handover); scored for the detector's
    /// state and not written again (docs/durability.md §4).
    pub rebuild: bool,
    /// When the window was cut (receive clock, ns): its wait for scoring
    /// is `anomalyd_window_wait_seconds`.
    pub cut_ns: i64,
}

/// Settings of the aligner and window stages.
#[derive(Debug, Clone, Copy)]
pub struct StageSettings {
    pub max_age_periods: u32,
    pub allowed_lateness_ns: i64,
    pub max_imputed_fraction: f32,
    pub max_assets: usize,
}

impl StageSettings {
    pub fn from_config(cfg: &Config) -> Self {
        Self {
            max_age_periods: cfg.pipeline.max_age_periods,
            allowed_lateness_ns: cfg.pipeline.allowed_lateness_ms as i64 * 1_000_000,
            max_imputed_fraction: cfg.pipeline.max_imputed_fraction,
            max_assets: cfg.pipeline.max_assets,
        }
    }
}

impl Default for StageSettings {
    fn default() -> Self {
        Self {
            max_age_periods: 3,
            allowed_lateness_ns: 2_000_000_000,
            max_imputed_fraction: 0.2,
            max_assets: 10_000,
        }
    }
}
