//! Handing the source's windows to the scoring thread: micro-batches,
//! backpressure (noted for readiness while it lasts), data-quality
//! transitions in order, and the per-asset marks a partition's handover
//! record carries.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crate::core::timestamp::now_ns;
use crate::ops::metrics::Metrics;
use crate::pipeline::{FeatureStage, InferenceMsg, ScoreRequest, WindowSender};

/// Most windows the source gathers before it hands them to the scoring
/// thread in one channel message; it sends sooner once the first of them
/// has waited `runtime.max_wait_ms` (the micro-batching wait, held here so
/// that the scoring thread is woken once per batch, not once per window:
/// docs/low-rate.md §2). The scoring channel's capacity is divided by
/// this, so it still bounds queued windows.
pub const WINDOWS_PER_SEND: usize = 64;

/// Hands the gathered windows to the scoring thread, waiting while its
/// queue is full (backpressure, noted for readiness while it lasts); false
/// once the scoring thread is gone.
pub(super) async fn send_windows(
    windows: &WindowSender,
    out: &mut Vec<ScoreRequest>,
    metrics: &Metrics,
) -> bool {
    let batch = std::mem::replace(out, Vec::with_capacity(WINDOWS_PER_SEND));
    let full = windows.is_full();
    if full {
        let now_s = u64::try_from(now_ns() / 1_000_000_000).unwrap_or(0);
        let _ = metrics
            .intake_waiting_since_unix_s
            .compare_exchange(0, now_s, Relaxed, Relaxed);
    }
    let sent = windows
        .send_async(InferenceMsg::Windows(batch))
        .await
        .is_ok();
    if full {
        metrics.intake_waiting_since_unix_s.store(0, Relaxed);
    }
    sent
}

/// Hands the stage's data-quality transitions to the scoring thread, after
/// the windows gathered before them; false once the scoring thread is gone.
pub(super) async fn send_quality(
    stage: &mut FeatureStage,
    windows: &WindowSender,
    out: &mut Vec<ScoreRequest>,
    metrics: &Metrics,
) -> bool {
    let q = stage.take_quality();
    if q.is_empty() {
        return true;
    }
    if !out.is_empty() && !send_windows(windows, out, metrics).await {
        return false;
    }
    windows.send_async(InferenceMsg::Quality(q)).await.is_ok()
}

/// Notes the newest window end per asset of `sent`.
pub(super) fn note_marks(marks: &mut HashMap<Arc<str>, i64>, sent: &[ScoreRequest]) {
    for w in sent {
        match marks.get_mut(&w.binding.asset) {
            Some(t) => *t = (*t).max(w.end_ts),
            None => {
                marks.insert(w.binding.asset.clone(), w.end_ts);
            }
        }
    }
}
