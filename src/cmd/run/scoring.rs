//! The scoring thread: owns the ONNX Runtime sessions (through the
//! [`Scorer`]), micro-batches windows across assets, runs the detectors,
//! persists open alerts, and hands outputs to the sink. Never on the async
//! runtime: `Session::run` blocks (docs/architecture.md §8).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use flume::{RecvTimeoutError, TryRecvError};
use tokio::sync::mpsc;

use super::models::model_status;
use crate::core::timestamp::now_ns;
use crate::pipeline::{InferenceMsg, NamedModel, Output, Scorer, WindowReceiver};
use crate::state::open_alerts::AlertStore;

/// Takes one message into the batch being gathered. A model swap or a
/// journal barrier ends the batch: it applies after the windows before it.
fn gather(
    msg: InferenceMsg,
    pending: &mut Vec<crate::pipeline::ScoreRequest>,
    swap: &mut Option<Vec<NamedModel>>,
    barrier: &mut Option<u64>,
) {
    match msg {
        InferenceMsg::Windows(w) => pending.extend(w),
        InferenceMsg::Swap(m) => *swap = Some(m),
        InferenceMsg::Barrier(b) => *barrier = Some(b),
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
    tx: mpsc::Sender<Output>,
    max_batch: usize,
    heartbeat: Arc<AtomicU64>,
    board: Arc<crate::ops::status::StatusBoard>,
    mut alerts: Option<AlertStore>,
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
                let mut swap = None;
                let mut barrier = None;
                gather(msg, &mut pending, &mut swap, &mut barrier);
                // Fill the batch with what is queued now.
                while swap.is_none() && barrier.is_none() && pending.len() < max_batch {
                    match rx.try_recv() {
                        Ok(m) => gather(m, &mut pending, &mut swap, &mut barrier),
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
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
                    board.record(&outputs);
                    for o in outputs.drain(..) {
                        if tx.blocking_send(o).is_err() {
                            return;
                        }
                    }
                }
                // The barrier follows the outputs of every window before it.
                if let Some(b) = barrier
                    && tx.blocking_send(Output::Barrier(b)).is_err()
                {
                    return;
                }
                if let Some(models) = swap {
                    board.set_models(model_status(&models));
                    scorer.replace_models(models);
                }
            }
        })
}
