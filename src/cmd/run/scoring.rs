//! The scoring thread: owns the ONNX Runtime sessions (through the
//! [`Scorer`]), micro-batches windows across assets, runs the detectors,
//! persists open alerts, and hands outputs to the sink. Never on the async
//! runtime: `Session::run` blocks (docs/architecture.md §8).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::models::model_status;
use crate::core::timestamp::now_ns;
use crate::pipeline::{InferenceMsg, NamedModel, Output, Scorer};
use crate::state::open_alerts::AlertStore;

/// What ends a batch: it applies after the windows before it.
#[derive(Default)]
struct BatchEnd {
    swap: Option<Vec<NamedModel>>,
    barrier: Option<u64>,
    rebuild: Option<bool>,
}

impl BatchEnd {
    fn is_set(&self) -> bool {
        self.swap.is_some() || self.barrier.is_some() || self.rebuild.is_some()
    }
}

/// Takes one message into the batch being gathered. A model swap, a
/// journal barrier or a rebuild switch ends the batch.
fn gather(msg: InferenceMsg, pending: &mut Vec<crate::pipeline::ScoreRequest>, end: &mut BatchEnd) {
    match msg {
        InferenceMsg::Windows(w) => pending.extend(w),
        InferenceMsg::Swap(m) => end.swap = Some(m),
        InferenceMsg::Barrier(b) => end.barrier = Some(b),
        InferenceMsg::Rebuild(on) => end.rebuild = Some(on),
    }
}

/// The scoring thread: owns the ONNX Runtime sessions, micro-batches
/// windows across assets (up to `max_batch`, waiting at most `max_wait` for
/// a batch to fill), runs the detectors and hands outputs to the sink.
#[allow(clippy::too_many_arguments)] // Each is a distinct part the thread owns.
pub(super) fn spawn_scorer(
    mut scorer: Scorer,
    mut rx: mpsc::Receiver<InferenceMsg>,
    tx: mpsc::Sender<Output>,
    max_batch: usize,
    max_wait: Duration,
    heartbeat: Arc<AtomicU64>,
    board: Arc<crate::ops::status::StatusBoard>,
    metrics: Arc<crate::ops::metrics::Metrics>,
    mut alerts: Option<AlertStore>,
    rt: tokio::runtime::Handle,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("anomalyd-score".into())
        .spawn(move || {
            let mut pending = Vec::with_capacity(max_batch);
            let mut outputs = Vec::with_capacity(max_batch * 2);
            let mut open = true;
            // Replaying confirmed journal segments: outputs are not sent.
            let mut rebuilding = false;
            while open {
                heartbeat.store(now_ns() as u64, Relaxed);
                // Wait (bounded, so the heartbeat keeps beating) for work.
                let first = rt.block_on(async {
                    tokio::time::timeout(Duration::from_secs(1), rx.recv()).await
                });
                let msg = match first {
                    Err(_) => continue,
                    Ok(None) => break,
                    Ok(Some(m)) => m,
                };
                let mut end = BatchEnd::default();
                gather(msg, &mut pending, &mut end);
                // Fill the batch: what is queued now, then wait up to max_wait.
                let deadline = Instant::now() + max_wait;
                while !end.is_set() && pending.len() < max_batch {
                    match rx.try_recv() {
                        Ok(m) => gather(m, &mut pending, &mut end),
                        Err(mpsc::error::TryRecvError::Empty) => {
                            let left = deadline.saturating_duration_since(Instant::now());
                            if left.is_zero() {
                                break;
                            }
                            match rt.block_on(async { tokio::time::timeout(left, rx.recv()).await })
                            {
                                Err(_) => break,
                                Ok(None) => {
                                    open = false;
                                    break;
                                }
                                Ok(Some(m)) => gather(m, &mut pending, &mut end),
                            }
                        }
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            open = false;
                            break;
                        }
                    }
                }
                while !pending.is_empty() {
                    let take = pending.len().min(max_batch);
                    let mut chunk: Vec<_> = pending.drain(..take).collect();
                    if scorer.score(&mut chunk, &mut outputs)
                        && let Some(store) = alerts.as_mut()
                    {
                        store.save(scorer.open_alerts());
                    }
                    if rebuilding {
                        let n = outputs
                            .iter()
                            .filter(|o| matches!(o, Output::Score(_)))
                            .count();
                        metrics.windows_rebuilt.fetch_add(n as u64, Relaxed);
                        outputs.clear();
                    }
                    board.record(&outputs);
                    for o in outputs.drain(..) {
                        if tx.blocking_send(o).is_err() {
                            return;
                        }
                    }
                }
                // The barrier follows the outputs of every window before it.
                if let Some(b) = end.barrier
                    && tx.blocking_send(Output::Barrier(b)).is_err()
                {
                    return;
                }
                if let Some(on) = end.rebuild {
                    rebuilding = on;
                }
                if let Some(models) = end.swap {
                    board.set_models(model_status(&models));
                    scorer.replace_models(models);
                }
            }
        })
}
