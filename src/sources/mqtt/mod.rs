//! The MQTT source (docs/architecture.md §7): connects with rumqttc, resubscribes
//! whenever the broker has no session for us, reconnects with capped
//! exponential backoff, decodes every message and feeds the asset pipeline.
//! When scoring falls behind, sending windows on the bounded channel waits,
//! which stops polling the broker: backpressure instead of memory growth.

mod acks;
pub(crate) mod decode;

pub use decode::{DecodeError, Decoder};
mod journal_replay;
mod options;
mod ratelimit;
mod sync_pacer;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crate::core::timestamp::now_ns;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::core::reading::{DropReason, Message};
use crate::ops::metrics::Metrics;
use crate::pipeline::{
    Binder, FeatureStage, InferenceMsg, ModelSlot, ScoreRequest, StageSettings, WindowSender,
};
use crate::state::journal::Journal;
use acks::{ACK_QUEUE, ack_request, ack_task, commit_journal};
use journal_replay::replay_journal;
pub use options::{MqttError, mqtt_options, qos};
use ratelimit::RateLimitedLog;
use sync_pacer::SyncPacer;

/// New models and mappings for the source after a reload.
#[derive(Debug)]
pub struct SourceReload {
    pub slots: Vec<ModelSlot>,
    pub binder: Binder,
    pub settings: StageSettings,
    pub decoder: Decoder,
}

/// Most windows the source gathers before it hands them to the scoring
/// thread in one channel message; it sends sooner once the first of them
/// has waited `runtime.max_wait_ms` (the micro-batching wait, held here so
/// that the scoring thread is woken once per batch, not once per window:
/// docs/low-rate.md §2). The scoring channel's capacity is divided by
/// this, so it still bounds queued windows.
pub const WINDOWS_PER_SEND: usize = 64;

/// Hands the gathered windows to the scoring thread, waiting while its
/// queue is full (backpressure); false once the scoring thread is gone.
async fn send_windows(windows: &WindowSender, out: &mut Vec<ScoreRequest>) -> bool {
    let batch = std::mem::replace(out, Vec::with_capacity(WINDOWS_PER_SEND));
    windows
        .send_async(InferenceMsg::Windows(batch))
        .await
        .is_ok()
}

/// Everything the source task needs.
#[derive(Debug)]
pub struct SourceParts {
    pub options: MqttOptions,
    pub qos: crate::config::Qos,
    pub max_payload: usize,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// Longest a window waits here for others to share its inference call.
    pub max_wait: Duration,
    pub decoder: Decoder,
    pub stage: FeatureStage,
    /// The intake journal (QoS 1/2 with a state directory); the options
    /// then have manual acks on.
    pub journal: Option<JournalParts>,
}

/// The journal, the segments an earlier run left to replay, and where the
/// sink confirms barriers.
#[derive(Debug)]
pub struct JournalParts {
    pub journal: Journal,
    pub replay: Vec<std::path::PathBuf>,
    pub processed: watch::Receiver<Option<u64>>,
    /// Commit (sync and acknowledge) at most once per this interval ...
    pub sync_interval: Duration,
    /// ... unless this many messages wait for their acknowledgement.
    pub sync_max_pending: usize,
}

/// Runs until `shutdown`: polls the broker, decodes, aligns and windows,
/// and sends windows to the scoring thread. `connected` fires once the
/// broker has confirmed the subscriptions (systemd READY). `heartbeat` is touched every loop turn.
pub async fn run_source(
    parts: SourceParts,
    windows: WindowSender,
    mut reloads: mpsc::Receiver<SourceReload>,
    metrics: Arc<Metrics>,
    heartbeat: Arc<std::sync::atomic::AtomicU64>,
    connected: oneshot::Sender<()>,
    shutdown: CancellationToken,
) {
    let SourceParts {
        options,
        qos: qos_level,
        max_payload,
        reconnect_min,
        reconnect_max,
        max_wait,
        mut decoder,
        mut stage,
        journal,
    } = parts;
    let (mut journal, mut processed, replay, mut pacer) = match journal {
        Some(JournalParts {
            journal,
            replay,
            processed,
            sync_interval,
            sync_max_pending,
        }) => (
            Some(journal),
            Some(processed),
            replay,
            SyncPacer::new(sync_interval, sync_max_pending),
        ),
        None => (None, None, Vec::new(), SyncPacer::new(Duration::ZERO, 1)),
    };
    // Wakes the loop when waiting acknowledgements are due; re-armed once
    // per commit, not per message.
    let commit_timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(commit_timer);
    let mut commit_armed = false;
    // Fires when the oldest gathered window has waited `max_wait`.
    let handover_timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(handover_timer);
    let (client, mut eventloop) = AsyncClient::new(options, 256);
    // Journal first: what an earlier run received is scored before new data.
    if let Some(j) = journal.as_mut() {
        let started = Instant::now();
        if !replay_journal(j, replay, &decoder, &mut stage, &windows, &metrics).await {
            return;
        }
        let n = metrics.journal_replayed.load(Relaxed);
        if n > 0 {
            tracing::info!(
                messages = n,
                ms = started.elapsed().as_millis() as u64,
                "replayed the intake journal"
            );
        }
    }
    let epoch = Arc::new(AtomicU64::new(0));
    let (ack_tx, ack_rx) = mpsc::channel(ACK_QUEUE);
    if journal.is_some() {
        tokio::spawn(ack_task(
            client.clone(),
            ack_rx,
            epoch.clone(),
            metrics.clone(),
        ));
    }
    let mut unacked: Vec<(u16, QoS)> = Vec::new();
    let mut connected = Some(connected);
    let mut pending_subacks = 0usize;
    let mut backoff = reconnect_min;
    let mut log = RateLimitedLog::new(Duration::from_secs(10));
    let mut out = Vec::with_capacity(WINDOWS_PER_SEND);
    // One message reused for every publish: decoding a frame allocates nothing.
    let mut msg = Message::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let event = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some(r) = reloads.recv() => {
                // Windows cut before the reload go to scoring before the
                // source switches models.
                if !out.is_empty() && !send_windows(&windows, &mut out).await {
                    break;
                }
                stage.replace_models(r.slots, r.binder, r.settings);
                let old = decoder.subscriptions();
                decoder = r.decoder;
                for s in decoder.subscriptions() {
                    if !old.contains(&s) && client.try_subscribe(s.clone(), qos(qos_level)).is_err() {
                        tracing::warn!(filter = %s, "could not queue the new subscription");
                    }
                }
                continue;
            }
            Some(seq) = async {
                let rx = processed.as_mut()?;
                rx.changed().await.ok()?;
                *rx.borrow_and_update()
            }, if processed.is_some() => {
                if let Some(j) = journal.as_mut() {
                    j.processed(seq);
                    metrics.journal_trimmed.store(j.trimmed, Relaxed);
                    metrics.journal_bytes.store(j.bytes(), Relaxed);
                }
                continue;
            }
            _ = tick.tick() => {
                heartbeat.store(now_ns() as u64, Relaxed);
                if let Some(j) = journal.as_mut()
                    && j.should_rotate()
                {
                    commit_journal(j, &mut unacked, epoch.load(Relaxed), &ack_tx, &metrics);
                    pacer.committed();
                    // Windows of the closed segment go first, then its barrier.
                    if !out.is_empty() && !send_windows(&windows, &mut out).await {
                        break;
                    }
                    if let Some(seq) = j.rotate()
                        && windows.send_async(InferenceMsg::Barrier(seq)).await.is_err()
                    {
                        break;
                    }
                }
                continue;
            }
            ev = eventloop.poll() => ev,
            () = &mut handover_timer, if !out.is_empty() => {
                if !send_windows(&windows, &mut out).await {
                    break;
                }
                continue;
            }
            () = &mut commit_timer, if commit_armed => {
                commit_armed = false;
                if let Some(j) = journal.as_mut() {
                    commit_journal(j, &mut unacked, epoch.load(Relaxed), &ack_tx, &metrics);
                    pacer.committed();
                }
                continue;
            }
            // Only when the broker has nothing more ready for us right now:
            // journaled messages are synced and acknowledged together once
            // the pacer says so.
            () = std::future::ready(()), if !unacked.is_empty()
                && pacer.due(unacked.len(), tokio::time::Instant::now()) => {
                if let Some(j) = journal.as_mut() {
                    commit_journal(j, &mut unacked, epoch.load(Relaxed), &ack_tx, &metrics);
                    pacer.committed();
                    commit_armed = false;
                }
                continue;
            }
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                // Acks still queued belong to the old connection.
                epoch.fetch_add(1, Relaxed);
                unacked.clear();
                pacer.committed();
                commit_armed = false;
                metrics.mqtt_connects.fetch_add(1, Relaxed);
                metrics.mqtt_connected.store(1, Relaxed);
                backoff = reconnect_min;
                tracing::info!(
                    session_present = ack.session_present,
                    "connected to the MQTT broker"
                );
                // rumqttc does not resubscribe by itself. Subscribing again
                // when the broker kept the session is harmless (SUBSCRIBE is
                // idempotent) and covers a session that lacks our filters,
                // e.g. one left by an older config under the same client id.
                for s in decoder.subscriptions() {
                    match client.try_subscribe(s.clone(), qos(qos_level)) {
                        Ok(()) => pending_subacks += 1,
                        Err(e) => {
                            tracing::error!(filter = %s, error = %e, "cannot queue subscription");
                        }
                    }
                }
                // Ready once the broker has confirmed every subscription, so
                // nothing published after READY can miss us.
                if pending_subacks == 0
                    && let Some(tx) = connected.take()
                {
                    let _ = tx.send(());
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                {
                    tracing::error!("the broker refused a subscription (check its ACL)");
                }
                pending_subacks = pending_subacks.saturating_sub(1);
                if pending_subacks == 0
                    && let Some(tx) = connected.take()
                {
                    let _ = tx.send(());
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                metrics.messages_received.fetch_add(1, Relaxed);
                let recv_ns = now_ns();
                if let Some(j) = journal.as_mut()
                    && p.qos != QoS::AtMostOnce
                {
                    // Journaled before anything else: whatever happens to
                    // the message below, a crash cannot lose it.
                    if p.payload.len() <= max_payload {
                        match j.append(recv_ns, &p.topic, &p.payload) {
                            Ok(()) => {
                                metrics.journal_records.fetch_add(1, Relaxed);
                            }
                            Err(e) => {
                                metrics.journal_errors.fetch_add(1, Relaxed);
                                tracing::error!(error = %e, "cannot journal a message");
                            }
                        }
                    }
                    unacked.push((p.pkid, p.qos));
                    if unacked.len() >= 1024 {
                        commit_journal(j, &mut unacked, epoch.load(Relaxed), &ack_tx, &metrics);
                        pacer.committed();
                    } else if unacked.len() == 1 {
                        let now = tokio::time::Instant::now();
                        pacer.note(1, now);
                        if let Some(at) = pacer.deadline(1) {
                            commit_timer.as_mut().reset(at);
                            commit_armed = true;
                        }
                    }
                }
                if p.payload.len() > max_payload {
                    metrics.count_drop(DropReason::Oversize, 1);
                    log.warn(DropReason::Oversize, || {
                        format!(
                            "message on {:?} has {} bytes, more than mqtt.max_packet_size",
                            p.topic,
                            p.payload.len()
                        )
                    });
                    continue;
                }
                match decoder.decode_into(&p.topic, &p.payload, &mut msg) {
                    Ok(()) => {
                        let gathered = out.len();
                        stage.push_message(&msg, recv_ns, &mut out);
                        if out.len() >= WINDOWS_PER_SEND {
                            if !send_windows(&windows, &mut out).await {
                                break;
                            }
                        } else if gathered == 0 && !out.is_empty() {
                            handover_timer
                                .as_mut()
                                .reset(tokio::time::Instant::now() + max_wait);
                        }
                    }
                    Err(e) => {
                        metrics.count_drop(e.reason(), 1);
                        log.warn(e.reason(), || format!("message skipped: {e}"));
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                // Windows already cut are not held back by the reconnect backoff.
                if !out.is_empty() && !send_windows(&windows, &mut out).await {
                    break;
                }
                metrics.mqtt_connected.store(0, Relaxed);
                pending_subacks = 0;
                if matches!(
                    &e,
                    rumqttc::ConnectionError::MqttState(rumqttc::StateError::Deserialization(
                        rumqttc::Error::PayloadSizeLimitExceeded(_)
                    ))
                ) {
                    metrics.count_drop(DropReason::Oversize, 1);
                }
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "MQTT connection lost; reconnecting");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(reconnect_max);
            }
        }
    }
    // Complete windows still gathered here are scored before shutdown.
    if !out.is_empty() {
        send_windows(&windows, &mut out).await;
    }
    // What was journaled is acknowledged now, best effort (otherwise the
    // broker redelivers it at the next start; duplicates are harmless).
    if let Some(j) = journal.as_mut()
        && !unacked.is_empty()
    {
        if let Ok(Some(f)) = j.commit() {
            let _ = f.sync_data();
        }
        for (pkid, qos) in unacked.drain(..) {
            if client.try_ack(&ack_request(pkid, qos)).is_err() {
                break;
            }
        }
    }
    // Stop reading: disconnect cleanly (best effort, bounded).
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while let Ok(ev) = eventloop.poll().await {
            if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    })
    .await;
    metrics.mqtt_connected.store(0, Relaxed);
    // Windows of frames still waiting for late channels are not closed here:
    // they would be scored on partial data.
    drop(windows);
}
