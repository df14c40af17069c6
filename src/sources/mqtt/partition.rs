//! A partition's session taking over from the daemon that had the
//! partition before, and leaving it to the next one (docs/scale-out.md
//! §4). Leaving: every window sent is confirmed written, the scorer gives
//! up the partition's assets and their open alerts, and a handover record
//! with the recent messages is left retained on the broker. Taking: the
//! record is read before the session connects (its backlog follows the
//! record's messages in time), its open alerts are adopted and its
//! messages are replayed for window history; windows the last owner
//! wrote are scored for history only.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use rumqttc::{AsyncClient, EventLoop, MqttOptions};
use tokio::sync::{oneshot, watch};

use super::handover::{self, Handover, HandoverHeader, MAX_RECORD_BYTES};
use super::{PartitionParts, WINDOWS_PER_SEND, send_windows};
use crate::core::reading::Message;
use crate::core::timestamp::now_ns;
use crate::ops::metrics::Metrics;
use crate::pipeline::{FeatureStage, InferenceMsg, WindowSender};
use crate::sources::mqtt::decode::Decoder;
use crate::state::journal::Journal;

/// Longest wait for the broker at a handover (each of: reading the
/// record, the PUBACK of a new one).
const BROKER_WAIT: Duration = Duration::from_secs(5);
/// Longest wait for the sink to confirm the partition's last windows.
const SINK_WAIT: Duration = Duration::from_secs(10);

/// Newest modification time of journal segments left by an earlier run.
pub(super) fn newest_segment_ns(paths: &[PathBuf]) -> Option<i64> {
    paths
        .iter()
        .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .filter_map(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .max()
}

/// Reads the partition's handover record and, when it is newer than this
/// daemon's own journal of the partition, adopts its open alerts and
/// replays its messages. False once the scoring thread is gone.
pub(super) async fn take(
    p: &PartitionParts,
    brokers: &[MqttOptions],
    local_newest_ns: Option<i64>,
    decoder: &Decoder,
    stage: &mut FeatureStage,
    windows: &WindowSender,
    metrics: &Metrics,
) -> bool {
    let record = match handover::fetch(brokers, &p.handover_topic, BROKER_WAIT).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            tracing::info!(
                partition = p.index,
                "no handover record: the partition's windows start with its backlog"
            );
            return true;
        }
        Err(e) => {
            tracing::warn!(partition = p.index, error = %e, "cannot read the partition's handover record; its windows start with its backlog");
            return true;
        }
    };
    let h = &record.header;
    // This daemon left the record itself (a restart), or its journal of
    // the partition is newer: the journal's replay has the history, and
    // its open alerts are in the state directory.
    if local_newest_ns.is_some_and(|t| h.owner == p.owner || t >= h.at_ns) {
        tracing::info!(
            partition = p.index,
            from = %h.owner,
            "the local journal has the partition's history: its handover record is not needed"
        );
        return true;
    }
    let open = record.open_alerts();
    let alerts = open.len();
    if !open.is_empty()
        && windows
            .send_async(InferenceMsg::AdoptAlerts(open))
            .await
            .is_err()
    {
        return false;
    }
    if !replay(&record, decoder, stage, windows, metrics).await {
        return false;
    }
    metrics.handovers_taken.fetch_add(1, Relaxed);
    tracing::info!(
        partition = p.index,
        from = %h.owner,
        messages = record.messages.len(),
        left_out = h.messages_left_out,
        open_alerts = alerts,
        "took the partition over from its handover record"
    );
    true
}

/// Pushes the record's messages through the stage; windows that end at
/// or before what the last owner wrote are history only.
async fn replay(
    record: &Handover,
    decoder: &Decoder,
    stage: &mut FeatureStage,
    windows: &WindowSender,
    metrics: &Metrics,
) -> bool {
    let written = &record.header.written_through;
    let mut msg = Message::default();
    let mut out = Vec::with_capacity(WINDOWS_PER_SEND);
    for (recv_ns, topic, payload) in &record.messages {
        let before = out.len();
        match decoder.decode_into(topic, payload, &mut msg) {
            Ok(()) => stage.push_message(&msg, *recv_ns, &mut out),
            Err(e) => metrics.count_drop(e.reason(), 1),
        }
        for w in &mut out[before..] {
            w.rebuild = written
                .get(&*w.binding.asset)
                .is_some_and(|t| w.end_ts <= *t);
        }
        metrics.handover_messages.fetch_add(1, Relaxed);
        if out.len() >= WINDOWS_PER_SEND && !send_windows(windows, &mut out, metrics).await {
            return false;
        }
    }
    out.is_empty() || send_windows(windows, &mut out, metrics).await
}

/// What leaving a partition needs from the source.
pub(super) struct Release<'a, B: Fn(u64) -> Option<InferenceMsg>> {
    pub journal: Option<&'a mut Journal>,
    pub processed: Option<&'a mut watch::Receiver<Option<u64>>>,
    pub barrier: &'a B,
    pub stage: &'a FeatureStage,
    pub marks: &'a HashMap<Arc<str>, i64>,
    pub windows: &'a WindowSender,
    pub metrics: &'a Metrics,
}

/// Leaves the partition's handover record on the broker (best effort:
/// without it the next owner's windows start cold; logged).
pub(super) async fn leave<B: Fn(u64) -> Option<InferenceMsg>>(
    p: &PartitionParts,
    r: Release<'_, B>,
    client: &AsyncClient,
    eventloop: &mut EventLoop,
) {
    let Release {
        journal,
        processed,
        barrier,
        stage,
        marks,
        windows,
        metrics,
    } = r;
    // Every window sent is written (or spooled) before the record says so.
    if let (Some(j), Some(rx)) = (journal, processed) {
        let seq = match j.rotate() {
            Some(seq) => match barrier(seq) {
                Some(b) => windows.send_async(b).await.ok().map(|()| seq),
                None => None,
            },
            None => j.newest_closed(),
        };
        if let Some(seq) = seq {
            let confirmed = tokio::time::timeout(SINK_WAIT, async {
                loop {
                    if rx.borrow_and_update().is_some_and(|d| d >= seq) {
                        return true;
                    }
                    if rx.changed().await.is_err() {
                        return false;
                    }
                }
            })
            .await;
            if !matches!(confirmed, Ok(true)) {
                tracing::warn!(
                    partition = p.index,
                    "the sink did not confirm the partition's last windows in time; the next owner may write some again"
                );
            }
        }
        let messages = j.recent(now_ns().saturating_sub(p.span_ns));
        let (tx, rx) = oneshot::channel();
        let alerts = match windows
            .send_async(InferenceMsg::ReleaseAssets(
                stage.asset_names(),
                p.given_up.load(Relaxed),
                tx,
            ))
            .await
        {
            Ok(()) => tokio::time::timeout(BROKER_WAIT, rx)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default(),
            Err(_) => HashMap::new(),
        };
        let record = Handover {
            header: HandoverHeader {
                version: 1,
                partition: p.index,
                owner: p.owner.clone(),
                at_ns: now_ns(),
                written_through: marks.iter().map(|(a, t)| (a.to_string(), *t)).collect(),
                open_alerts: alerts.into_iter().collect(),
                messages_left_out: 0,
            },
            messages,
        };
        let payload = record.encode(MAX_RECORD_BYTES);
        let kept = Handover::decode(&payload).map_or(0, |h| h.messages.len());
        let left_out = record.messages.len().saturating_sub(kept);
        if left_out > 0 {
            tracing::warn!(
                partition = p.index,
                left_out,
                "the handover record is over its size cap: the oldest messages are left out, and some windows start cold at the next owner"
            );
        }
        match handover::publish(client, eventloop, &p.handover_topic, payload, BROKER_WAIT).await {
            Ok(()) => {
                metrics.handovers_published.fetch_add(1, Relaxed);
                tracing::info!(
                    partition = p.index,
                    messages = kept,
                    assets = marks.len(),
                    open_alerts = record.header.open_alerts.len(),
                    "left the partition's handover record"
                );
            }
            Err(e) => tracing::warn!(
                partition = p.index,
                error = %e,
                "cannot leave the partition's handover record; its next owner's windows start cold"
            ),
        }
    }
}
