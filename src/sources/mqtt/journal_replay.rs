//! Replaying the intake journal at start-up: what an earlier run received
//! (and acknowledged) is scored before anything new (docs/architecture.md
//! §12). Segments up to the barrier the sink confirmed before the restart
//! are replayed in rebuild mode: scored for the detectors' and windows'
//! history, not written again (docs/durability.md §4).

use std::time::{Duration, Instant};

use std::sync::atomic::Ordering::Relaxed;

use super::decode::Decoder;
use super::{WINDOWS_PER_SEND, send_windows};
use crate::core::reading::Message;
use crate::ops::metrics::Metrics;
use crate::pipeline::{FeatureStage, InferenceMsg, WindowSender};
use crate::state::journal::Journal;

/// Replays what an earlier run journaled, oldest first, through the
/// pipeline, and logs how many messages it took how long; then a barrier
/// covers it.
pub(super) async fn replay_journal(
    journal: &mut Journal,
    paths: Vec<std::path::PathBuf>,
    decoder: &Decoder,
    stage: &mut FeatureStage,
    windows: &WindowSender,
    metrics: &Metrics,
    confirm: &std::sync::Arc<tokio::sync::watch::Sender<Option<u64>>>,
) -> bool {
    let started = Instant::now();
    let mut msg = Message::default();
    let mut out = Vec::with_capacity(WINDOWS_PER_SEND);
    let total = paths.len();
    let mut last_note = Instant::now();
    let confirmed = journal.confirmed_at_open();
    for (i, path) in paths.into_iter().enumerate() {
        let written =
            confirmed.is_some_and(|c| Journal::segment_seq(&path).is_some_and(|s| s <= c));
        // A long replay (a big journal after a crash) shows its progress.
        if last_note.elapsed() >= Duration::from_secs(5) {
            last_note = Instant::now();
            tracing::info!(
                segment = i + 1,
                of = total,
                messages = metrics.journal_replayed.load(Relaxed),
                "replaying the intake journal"
            );
        }
        let mut records = Vec::new();
        let report = match Journal::replay_segment(&path, |r| {
            records.push((r.recv_ns, r.topic.to_string(), r.payload.to_vec()));
        }) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot read a journal segment; skipping it");
                continue;
            }
        };
        journal.note_replayed(&path, report.last_recv_ns);
        metrics.journal_damaged.fetch_add(report.damaged, Relaxed);
        metrics.journal_replayed.fetch_add(report.records, Relaxed);
        if report.damaged > 0 {
            tracing::warn!(segment = %path.display(), damaged = report.damaged, "journal records cut short or corrupt were skipped");
        }
        for (recv_ns, topic, payload) in records {
            let before = out.len();
            match decoder.decode_into(&topic, &payload, &mut msg) {
                Ok(()) => stage.push_message(&msg, recv_ns, &mut out),
                Err(e) => metrics.count_drop(e.reason(), 1),
            }
            for w in &mut out[before..] {
                w.rebuild = written;
            }
            if out.len() >= WINDOWS_PER_SEND && !send_windows(windows, &mut out, metrics).await {
                return false;
            }
        }
    }
    if !out.is_empty() && !send_windows(windows, &mut out, metrics).await {
        return false;
    }
    let n = metrics.journal_replayed.load(Relaxed);
    if n > 0 {
        tracing::info!(
            messages = n,
            ms = started.elapsed().as_millis() as u64,
            "replayed the intake journal"
        );
    }
    if let Some(seq) = journal.newest_closed() {
        let barrier = crate::pipeline::Barrier {
            seq,
            confirm: confirm.clone(),
        };
        return windows
            .send_async(InferenceMsg::Barrier(barrier))
            .await
            .is_ok();
    }
    true
}
