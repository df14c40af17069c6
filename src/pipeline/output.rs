//! What leaves the scorer for the sinks: one record per scored window,
//! alert transitions, data-quality alarm transitions and, with `[record]`,
//! the aligned frames (docs/architecture.md §6 for how they are written).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use super::binding::AssetBinding;
use crate::core::detect::AlertEvent;
use crate::core::quality::QualityEvent;
use crate::ops::metrics::Metrics;

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
    /// Everything before this came from journal segments up to its
    /// sequence; the sink confirms it once that is written or spooled.
    Barrier(Barrier),
    /// An aligned frame, for `[record]` (docs/influxdb.md §6).
    Frame(FrameRecord),
}

/// A journal barrier: every window sent before it came from segments up
/// to `seq` of the journal that `confirm` answers (one per MQTT session:
/// docs/architecture.md §12).
#[derive(Debug, Clone)]
pub struct Barrier {
    pub seq: u64,
    pub confirm: Arc<tokio::sync::watch::Sender<Option<u64>>>,
}

impl Barrier {
    /// Tells the journal that everything up to `seq` is written or spooled;
    /// a later barrier covers every earlier one.
    pub fn confirm(&self) {
        let seq = self.seq;
        self.confirm.send_if_modified(|done| {
            let newer = done.is_none_or(|d| seq > d);
            if newer {
                *done = Some(seq);
            }
            newer
        });
    }
}

/// One aligned frame of an asset, as the model sees it before windowing.
#[derive(Debug, Clone)]
pub struct FrameRecord {
    pub binding: Arc<AssetBinding>,
    pub ts: i64,
    /// One value per channel of the binding, in its order.
    pub values: Vec<f32>,
    /// True where the value was carried forward (not measured at this tick).
    pub imputed: Vec<bool>,
}

/// A data-quality alarm transition of one asset (docs/alerts.md §1).
#[derive(Debug, Clone)]
pub struct QualityRecord {
    pub binding: Arc<AssetBinding>,
    pub event: QualityEvent,
}

/// What a sink's channel carries: one output at a time, or the outputs of
/// one scored batch together ([`ScoredBatch`]).
pub trait SinkItem: Send + 'static {
    type Outputs: Iterator<Item = Output> + Send;
    /// The outputs, in order.
    fn outputs(self) -> Self::Outputs;
}

impl SinkItem for Output {
    type Outputs = std::iter::Once<Output>;
    fn outputs(self) -> Self::Outputs {
        std::iter::once(self)
    }
}

/// The outputs of one scored batch, sent to the sink as one message: the
/// sink's task takes them together, not once per output, which at a low
/// rate was most of what scoring cost the async runtime; at a low rate it
/// takes them only at its flush tick (docs/low-rate.md §2, §6). Counted in `sink_queue_points` from when it is
/// made until the sink takes it.
pub struct ScoredBatch {
    outputs: Vec<Output>,
    metrics: Arc<Metrics>,
}

impl ScoredBatch {
    /// Takes `outputs` and counts them as queued.
    pub fn new(outputs: Vec<Output>, metrics: Arc<Metrics>) -> Self {
        metrics
            .sink_queue_depth
            .fetch_add(outputs.len() as u64, Relaxed);
        Self { outputs, metrics }
    }
}

impl SinkItem for ScoredBatch {
    type Outputs = std::vec::IntoIter<Output>;
    fn outputs(self) -> Self::Outputs {
        let n = self.outputs.len() as u64;
        let _ = self
            .metrics
            .sink_queue_depth
            .fetch_update(Relaxed, Relaxed, |q| Some(q.saturating_sub(n)));
        self.outputs.into_iter()
    }
}
