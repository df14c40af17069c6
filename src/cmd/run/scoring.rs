//! The scoring thread: owns the ONNX Runtime sessions (through the
//! [`Scorer`]), micro-batches windows across assets, runs the detectors,
//! persists open alerts, and hands outputs to the sink. Never on the async
//! runtime: `Session::run` blocks (docs/architecture.md §8).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::sinks::SinkSender;
use flume::{RecvTimeoutError, TryRecvError};

use super::models::model_status;
use crate::core::timestamp::now_ns;
use crate::ops::metrics::Metrics;
use crate::pipeline::{
    InferenceMsg, NamedModel, Output, QualityRecord, ScoredBatch, Scorer, WindowReceiver,
};
use crate::sinks::alerts::ActiveAlarms;
use crate::state::Outbox;
use crate::state::open_alerts::AlertStore;

/// Where alarm transitions go besides the sink: the outbox the alert
/// outputs deliver from (docs/alerts.md §5).
pub(super) struct AlertFanout {
    pub outbox: Arc<Outbox>,
    pub active: ActiveAlarms,
    pub metrics: Arc<Metrics>,
    /// Where the active alarms are saved (`<state>/outbox/active.json`).
    pub active_path: Option<std::path::PathBuf>,
}

impl AlertFanout {
    /// Writes the alarm transitions among `outputs` to the outbox. Called
    /// before the open alerts are saved: a crash in between raises the
    /// alert again after the restart rather than never delivering it.
    fn publish(&mut self, outputs: &[Output]) {
        let msgs = self.active.messages(outputs);
        if !msgs.is_empty()
            && let Some(path) = &self.active_path
            && let Err(e) = crate::state::write_atomic(path, self.active.to_json().as_bytes())
        {
            tracing::error!(error = %e, "cannot save the active alarms");
        }
        for m in msgs {
            let json = match serde_json::to_string(&m) {
                Ok(j) => j,
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode an alert message");
                    continue;
                }
            };
            if let Err(e) = self.outbox.append(&json) {
                tracing::error!(error = %e, asset = %m.asset, alarm = %m.alarm, "cannot write an alert to the outbox; it is delivered unless the daemon stops first");
            }
        }
        self.metrics
            .outbox_dropped
            .store(self.outbox.dropped(), Relaxed);
    }
}

/// What ends a batch: it applies after the windows before it.
#[derive(Default)]
struct BatchEnd {
    swap: Option<Vec<NamedModel>>,
    /// Partition handovers (docs/scale-out.md §4), in order.
    handover: Vec<InferenceMsg>,
    barriers: Vec<crate::pipeline::Barrier>,
}

impl BatchEnd {
    fn is_set(&self) -> bool {
        self.swap.is_some() || !self.barriers.is_empty() || !self.handover.is_empty()
    }
}

/// Takes one message into the batch being gathered. A model swap, a
/// journal barrier, a rebuild switch or a data-quality transition ends
/// the batch.
fn gather(
    msg: InferenceMsg,
    pending: &mut Vec<crate::pipeline::ScoreRequest>,
    quality: &mut Vec<QualityRecord>,
    end: &mut BatchEnd,
) {
    match msg {
        InferenceMsg::Windows(w) => pending.extend(w),
        // Data-quality transitions follow the windows queued before them.
        InferenceMsg::Quality(q) => quality.extend(q),
        InferenceMsg::Swap(m) => end.swap = Some(m),
        InferenceMsg::Barrier(b) => end.barriers.push(b),
        m @ (InferenceMsg::AdoptAlerts(_) | InferenceMsg::ReleaseAssets(..)) => {
            end.handover.push(m)
        }
    }
}

/// The scoring thread: owns the ONNX Runtime sessions, scores what is
/// queued in batches of up to `max_batch` windows (the source has gathered
/// them for at most `runtime.max_wait_ms`, so the thread never waits for a
/// batch to fill), runs the detectors and hands outputs to the sink. Its
/// idle wait is a thread park on the windows channel, not an async timer
/// (docs/low-rate.md §2).
#[allow(clippy::too_many_arguments)] // Each is a distinct part the thread owns.
pub(super) fn spawn_scorer(
    mut scorer: Scorer,
    rx: WindowReceiver,
    tx: SinkSender<ScoredBatch>,
    max_batch: usize,
    heartbeat: Arc<AtomicU64>,
    board: Arc<crate::ops::status::StatusBoard>,
    metrics: Arc<Metrics>,
    mut alerts: Option<AlertStore>,
    mut fanout: Option<AlertFanout>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("anomalyd-score".into())
        .spawn(move || {
            let mut pending = Vec::with_capacity(max_batch);
            let mut outputs = Vec::with_capacity(max_batch * 2);
            let mut open = true;
            while open {
                heartbeat.store(now_ns() as u64, Relaxed);
                // Wait (bounded, so the heartbeat keeps beating) for work.
                let msg = match rx.recv_timeout(Duration::from_secs(1)) {
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => break,
                    Ok(m) => m,
                };
                let mut end = BatchEnd::default();
                let mut quality = Vec::new();
                gather(msg, &mut pending, &mut quality, &mut end);
                // Fill the batch with what is queued now.
                while !end.is_set() && quality.is_empty() && pending.len() < max_batch {
                    match rx.try_recv() {
                        Ok(m) => gather(m, &mut pending, &mut quality, &mut end),
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            open = false;
                            break;
                        }
                    }
                }
                while !pending.is_empty() || !quality.is_empty() {
                    // One call scores windows of one kind: rebuilt history
                    // (outputs not sent) or new (docs/durability.md §4).
                    let rebuilding = pending.first().is_some_and(|w| w.rebuild);
                    let take = pending
                        .iter()
                        .take(max_batch)
                        .take_while(|w| w.rebuild == rebuilding)
                        .count();
                    let mut chunk: Vec<_> = pending.drain(..take).collect();
                    let changed = scorer.score(&mut chunk, &mut outputs);
                    if pending.is_empty() {
                        for q in quality.drain(..) {
                            metrics.count_quality(q.event.kind.as_str(), q.event.state.as_str());
                            outputs.push(Output::Quality(q));
                        }
                    }
                    if rebuilding {
                        let n = outputs
                            .iter()
                            .filter(|o| matches!(o, Output::Score(_)))
                            .count();
                        metrics.windows_rebuilt.fetch_add(n as u64, Relaxed);
                        outputs.clear();
                    }
                    if let Some(f) = fanout.as_mut() {
                        f.publish(&outputs);
                    }
                    if changed && let Some(store) = alerts.as_mut() {
                        store.save(scorer.open_alerts());
                    }
                    board.record(&outputs);
                    // One message per batch; the sink takes it at its next
                    // flush tick, or at once under load (sinks/runner/queue.rs).
                    if !outputs.is_empty() {
                        let batch = ScoredBatch::new(
                            std::mem::replace(&mut outputs, Vec::with_capacity(max_batch * 2)),
                            metrics.clone(),
                        );
                        if tx.blocking_send(batch).is_err() {
                            return;
                        }
                    }
                }
                // The barriers follow the outputs of every window before them.
                if !end.barriers.is_empty() {
                    let barriers = end.barriers.into_iter().map(Output::Barrier).collect();
                    if tx
                        .blocking_send(ScoredBatch::new(barriers, metrics.clone()))
                        .is_err()
                    {
                        return;
                    }
                }
                for m in end.handover {
                    match m {
                        InferenceMsg::AdoptAlerts(open) => scorer.adopt_open_alerts(open),
                        InferenceMsg::ReleaseAssets(assets, forget, reply) => {
                            let _ = reply.send(scorer.release_assets(&assets, forget));
                        }
                        _ => {}
                    }
                    if let Some(store) = alerts.as_mut() {
                        store.save(scorer.open_alerts());
                    }
                }
                if let Some(models) = end.swap {
                    board.set_models(model_status(&models));
                    scorer.replace_models(models);
                }
            }
        })
}
