//! What leaves the scorer for the sinks: one record per scored window,
//! alert transitions and data-quality alarm transitions (docs/architecture.md §6 for how they are written).

use std::sync::Arc;

use super::binding::AssetBinding;
use crate::core::detect::AlertEvent;
use crate::core::quality::QualityEvent;

/// One scored window, ready for the sink.
#[derive(Debug, Clone)]
pub struct ScoreRecord {
    pub binding: Arc<AssetBinding>,
    pub ts: i64,
    pub score: f32,
    pub threshold: f32,
    pub anomalous: bool,
    pub probability: f64,
    pub channel_error: Vec<f32>,
}

/// What leaves the scorer: scores and alert transitions.
#[derive(Debug, Clone)]
pub enum Output {
    Score(ScoreRecord),
    Alert {
        binding: Arc<AssetBinding>,
        event: AlertEvent,
    },
    /// A data-quality alarm (`stale`, `stuck`, `out_of_range`) raised or
    /// cleared.
    Quality(QualityRecord),
    /// Everything before this came from journal segments up to this
    /// sequence; the sink confirms it once that is written or spooled.
    Barrier(u64),
}

/// A data-quality alarm transition of one asset (docs/alerts.md §1).
#[derive(Debug, Clone)]
pub struct QualityRecord {
    pub binding: Arc<AssetBinding>,
    pub event: QualityEvent,
}
