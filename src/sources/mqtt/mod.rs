//! The MQTT source (docs/architecture.md §7): connects with rumqttc, resubscribes
//! whenever the broker has no session for us, reconnects with capped
//! exponential backoff, decodes every message and feeds the asset pipeline.
//! When scoring falls behind, sending windows on the bounded channel waits,
//! which stops polling the broker: backpressure instead of memory growth.
//! The backoff returns to its minimum only after a connection has stayed
//! up for [`STABLE_CONNECTION`], so a broker that accepts and then drops
//! us at once (a poison message it redelivers first) is not hammered.
//! Oversize messages are dropped on purpose (`oversize.rs`); while the
//! journal cannot write, intake waits (`stall.rs`). With several broker
//! nodes it moves to the next one when a connection fails; a partition's
//! session takes and leaves its handover record (`partition.rs`).

mod acks;
mod connection;
pub(crate) mod decode;
pub mod handover;
mod intake_pace;
mod partition;

pub use decode::{DecodeError, Decoder};
mod journal_replay;
mod options;
pub use options::install_tls_provider;
mod oversize;
mod parts;
pub use parts::{JournalParts, PartitionParts, SourceParts, SourceReload};
mod ratelimit;
mod stall;
mod sync_pacer;
mod to_scoring;

pub use to_scoring::WINDOWS_PER_SEND;
use to_scoring::{note_marks, send_quality, send_windows};

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crate::core::timestamp::now_ns;

use rumqttc::{AsyncClient, Event, Packet, QoS};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::core::reading::Message;
use crate::ops::metrics::Metrics;
use crate::pipeline::{Barrier, InferenceMsg, WindowSender};
use acks::{AckQueues, HELD_ACKS, ack_at_shutdown, ack_read, commit_journal, hold_ack, send_acks};
use intake_pace::IntakePace;
use journal_replay::replay_journal;
pub use options::{MqttError, broker_options, mqtt_options, qos};
use oversize::OversizePolicy;
use ratelimit::RateLimitedLog;
use stall::JournalStall;
use sync_pacer::SyncPacer;

/// A connection that stays up this long resets the reconnect backoff.
pub const STABLE_CONNECTION: Duration = Duration::from_secs(10);

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
        brokers,
        qos: qos_level,
        max_payload,
        max_wait,
        reconnect_min,
        reconnect_max,
        mut decoder,
        mut stage,
        journal,
        dead_letters,
        partition,
    } = parts;
    let mut oversize = OversizePolicy::new(max_payload, dead_letters);
    let (mut journal, confirm, replay, mut pacer) = match journal {
        Some(JournalParts {
            journal,
            replay,
            confirm,
            sync_interval,
            sync_max_pending,
        }) => (
            Some(journal),
            Some(confirm),
            replay,
            SyncPacer::new(sync_interval, sync_max_pending),
        ),
        None => (None, None, Vec::new(), SyncPacer::new(Duration::ZERO, 1)),
    };
    let mut processed = confirm.as_ref().map(|c| c.subscribe());
    let barrier = |seq: u64| {
        confirm.as_ref().map(|c| {
            InferenceMsg::Barrier(Barrier {
                seq,
                confirm: c.clone(),
            })
        })
    };
    // Per asset, the end of the newest window sent: a partition's handover
    // record tells its next owner what not to write again.
    let mut marks: std::collections::HashMap<Arc<str>, i64> = Default::default();
    // Wakes the loop when waiting acknowledgements are due; re-armed once
    // per commit, not per message.
    let commit_timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(commit_timer);
    let mut commit_armed = false;
    // Fires when the oldest gathered window's message may have waited
    // `max_wait` since it reached the socket (IntakePace::handover_at).
    let handover_timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(handover_timer);
    let Some(first) = brokers.first().cloned() else {
        tracing::error!("no MQTT broker configured");
        return;
    };
    let mut broker = 0usize;
    let (client, mut eventloop) = AsyncClient::new(first, 256);
    let local_newest = partition::newest_segment_ns(&replay);
    // Journal first: what an earlier run received is scored before new data.
    if let (Some(j), Some(confirm)) = (journal.as_mut(), confirm.as_ref())
        && !replay_journal(j, replay, &decoder, &mut stage, &windows, &metrics, confirm).await
    {
        return;
    }
    // A partition taken from another daemon: its history and open alerts.
    if let Some(p) = &partition
        && !partition::take(
            p,
            &brokers,
            local_newest,
            &decoder,
            &mut stage,
            &windows,
            &metrics,
        )
        .await
    {
        return;
    }
    // Counts connections: acknowledgements of an older one are not sent.
    let mut epoch = 0u64;
    let sync_failed = Arc::new(AtomicBool::new(false));
    let mut acks = AckQueues::start(journal.is_some(), sync_failed.clone(), metrics.clone());
    let mut stall: Option<JournalStall> = None;
    // This session counted as connected (metrics: all sessions up).
    let mut session_up = false;
    let mut connected_at: Option<Instant> = None;
    let mut unacked: Vec<(u16, QoS)> = Vec::new();
    let mut connected = Some(connected);
    let mut pending_subacks = 0usize;
    let mut backoff = reconnect_min;
    let mut log = RateLimitedLog::new(Duration::from_secs(10));
    let mut out = Vec::with_capacity(WINDOWS_PER_SEND);
    // One message reused for every publish: decoding a frame allocates nothing.
    let mut msg = Message::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // When the broker connection came up (receive-time clock); silence
    // while disconnected is not the sensors' (docs/alerts.md §2).
    let mut connected_since: Option<i64> = None;
    let mut pace = IntakePace::new(max_wait, journal.is_some());
    loop {
        // rumqttc's connect is not cancel-safe: a connect dropped half-way
        // (another branch firing) leaves the broker a second connection
        // under our client id, which takes the session from the first and
        // can cost its backlog. Until the broker has answered, only
        // shutdown interrupts it.
        let event = if !session_up && stall.is_none() {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                ev = eventloop.poll() => ev,
            }
        } else {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(r) = reloads.recv() => {
                    // Windows cut before the reload go to scoring before the
                    // source switches models.
                    if !out.is_empty() && !send_windows(&windows, &mut out, &metrics).await {
                        break;
                    }
                    stage.replace_models(r.slots, r.binder, r.settings);
                    stage.set_quality_rules(r.quality);
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
                    let now = now_ns();
                    heartbeat.store(now as u64, Relaxed);
                    if connected_at.is_some_and(|t| t.elapsed() >= STABLE_CONNECTION) {
                        backoff = reconnect_min;
                        metrics.mqtt_flapping.store(0, Relaxed);
                    }
                    if stall.is_none() && sync_failed.swap(false, Relaxed) {
                        // Messages of the failed sync stay unacknowledged.
                        unacked.clear();
                        stall = Some(JournalStall::begin(&"a journal sync failed", &metrics));
                    }
                    // The clock closes the frames of silent assets and decides
                    // their `stale` alarms.
                    let gathered = out.len();
                    stage.tick(now, connected_since, &mut out);
                    if partition.is_some() {
                        note_marks(&mut marks, &out[gathered..]);
                    }
                    if gathered == 0 && !out.is_empty() {
                        handover_timer
                            .as_mut()
                            .reset(pace.handover_at(tokio::time::Instant::now()));
                    }
                    if !send_quality(&mut stage, &windows, &mut out, &metrics).await {
                        break;
                    }
                    if stall.is_none()
                        && let Some(j) = journal.as_mut()
                        && j.should_rotate()
                    {
                        if let Err(e) = commit_journal(j, &mut unacked, epoch, &acks, &metrics, &mut pacer) {
                            stall = Some(JournalStall::begin(&e, &metrics));
                            continue;
                        }
                        // Windows of the closed segment go first, then its barrier.
                        if !out.is_empty() && !send_windows(&windows, &mut out, &metrics).await {
                            break;
                        }
                        if let Some(b) = j.rotate().and_then(barrier)
                            && windows.send_async(b).await.is_err()
                        {
                            break;
                        }
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(stall.as_ref().map_or_else(tokio::time::Instant::now, JournalStall::retry_at)), if stall.is_some() => {
                    let (Some(j), Some(s)) = (journal.as_mut(), stall.as_mut()) else {
                        continue;
                    };
                    if let Err(e) = j.probe() {
                        s.probe_failed(&e);
                        continue;
                    }
                    if let Some(s) = stall.take() {
                        s.end(&metrics);
                    }
                    // A sync that failed during the stall is covered by the
                    // reconnect below: the broker redelivers what it missed.
                    sync_failed.store(false, Relaxed);
                    // A fresh segment after the failure; the old one's windows
                    // go first, then its barrier.
                    if !out.is_empty() && !send_windows(&windows, &mut out, &metrics).await {
                        break;
                    }
                    if let Some(b) = j.rotate().and_then(barrier)
                        && windows.send_async(b).await.is_err()
                    {
                        break;
                    }
                    // Reconnect: the broker redelivers what was not acknowledged.
                    // Events read before the stall are dropped with the old
                    // connection: their packet ids mean nothing on the new one.
                    eventloop.clean();
                    eventloop.state.events.clear();
                    epoch += 1;
                    unacked.clear();
                    if std::mem::take(&mut session_up) {
                        metrics.session_connected(false);
                    }
                    connected_at = None;
                    pending_subacks = 0;
                    continue;
                }
                // Synced journal records: their PUBACKs go out together.
                Some(b) = acks.synced.recv(), if journal.is_some() => {
                    let all = pacer.synced(b.len());
                    send_acks(&mut eventloop, b, epoch, &metrics).await;
                    if all {
                        pace.acked();
                    }
                    continue;
                }
                // While the journal cannot write, the broker is not polled:
                // it keeps what it has not delivered.
                ev = eventloop.poll(), if stall.is_none() => ev,
                () = &mut handover_timer, if !out.is_empty() => {
                    if !send_windows(&windows, &mut out, &metrics).await {
                        break;
                    }
                    continue;
                }
                () = &mut commit_timer, if commit_armed && stall.is_none() => {
                    commit_armed = false;
                    if let Some(j) = journal.as_mut()
                        && let Err(e) = commit_journal(j, &mut unacked, epoch, &acks, &metrics, &mut pacer)
                    {
                        stall = Some(JournalStall::begin(&e, &metrics));
                    }
                    continue;
                }
                // Only when the broker has nothing more ready for us right now:
                // journaled messages are synced and acknowledged together once
                // the pacer says so.
                () = std::future::ready(()), if stall.is_none() && journal.is_some() && !unacked.is_empty()
                    && pacer.due(unacked.len(), tokio::time::Instant::now()) => {
                    if let Some(j) = journal.as_mut() {
                        pacer.commit_due(unacked.len(), tokio::time::Instant::now());
                        if let Err(e) = commit_journal(j, &mut unacked, epoch, &acks, &metrics, &mut pacer) {
                            stall = Some(JournalStall::begin(&e, &metrics));
                        }
                        commit_armed = false;
                    }
                    continue;
                }
                // Nothing more ready: due windows go (their timer cannot fire
                // while we run), then maybe a sleep (intake_pace.rs).
                () = std::future::ready(()), if pace.after_reads() => {
                    if journal.is_none() && !unacked.is_empty() {
                        ack_read(&mut eventloop, &mut unacked, epoch, &metrics).await;
                        pace.acked();
                    }
                    let now = tokio::time::Instant::now();
                    let sleep = pace.rest(now, pacer.take_committed());
                    // Windows due before the sleep ends go now: a wake-up
                    // for them alone costs more than their early call.
                    if !out.is_empty()
                        && handover_timer.deadline() <= now + sleep.unwrap_or_default()
                        && !send_windows(&windows, &mut out, &metrics).await
                    {
                        break;
                    }
                    // What waits for its commit reaches the file before the
                    // source rests, so that a crash of the process loses none
                    // of it however long the commit waits (§8 of
                    // docs/low-rate.md).
                    if stall.is_none()
                        && !unacked.is_empty()
                        && let Some(j) = journal.as_mut()
                        && let Err(e) = j.write_out()
                    {
                        unacked.clear();
                        stall = Some(JournalStall::begin(&e, &metrics));
                        continue;
                    }
                    pacer.rested(unacked.len(), sleep.map(|s| pace.expected(s)));
                    if let Some(sleep) = sleep {
                        std::thread::sleep(sleep);
                        // Let the runtime look at the socket: until it does,
                        // a read finds nothing, and the pacer would take
                        // that for a broker that stopped (sync_pacer.rs).
                        tokio::task::yield_now().await;
                    } else if let Some(at) = pacer.commit_by(unacked.len(), now, pace.tick())
                        && (!commit_armed || commit_timer.deadline() > at)
                    {
                        // No sleep to judge a stopped broker by: the commit
                        // goes within a tick (sync_pacer.rs).
                        commit_timer.as_mut().reset(at);
                        commit_armed = true;
                    }
                    continue;
                }
            }
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                // Acks still queued belong to the old connection.
                epoch += 1;
                unacked.clear();
                pacer.dropped();
                commit_armed = false;
                metrics.mqtt_connects.fetch_add(1, Relaxed);
                if !session_up {
                    session_up = true;
                    metrics.session_connected(true);
                }
                // The backoff resets once the connection has held (tick).
                connected_at = Some(Instant::now());
                connected_since = Some(now_ns());
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
                pace.read();
                metrics.messages_received.fetch_add(1, Relaxed);
                let recv_ns = now_ns();
                // Over the limit: dropped on purpose, acknowledged below.
                let rejected = oversize.reject(recv_ns, &p.topic, &p.payload, &metrics, &mut log);
                if let Some(j) = journal.as_mut()
                    && p.qos != QoS::AtMostOnce
                    && stall.is_none()
                {
                    // Journaled before anything else: whatever happens to
                    // the message below, a crash cannot lose it.
                    let appended = if rejected {
                        Ok(())
                    } else {
                        j.append(recv_ns, &p.topic, &p.payload)
                    };
                    match appended {
                        Ok(()) => {
                            if !rejected {
                                metrics.journal_records.fetch_add(1, Relaxed);
                            }
                            unacked.push((p.pkid, p.qos));
                            if unacked.len() >= HELD_ACKS {
                                if let Err(e) = commit_journal(
                                    j,
                                    &mut unacked,
                                    epoch,
                                    &acks,
                                    &metrics,
                                    &mut pacer,
                                ) {
                                    stall = Some(JournalStall::begin(&e, &metrics));
                                }
                            } else if unacked.len() == 1 {
                                let now = tokio::time::Instant::now();
                                pacer.note(1, now);
                                if let Some(at) = pacer.deadline(1) {
                                    commit_timer.as_mut().reset(at);
                                    commit_armed = true;
                                }
                            }
                        }
                        Err(e) => {
                            // Nothing since the last commit is acknowledged:
                            // the broker redelivers it after the stall.
                            unacked.clear();
                            stall = Some(JournalStall::begin(&e, &metrics));
                        }
                    }
                }
                if journal.is_none() && p.qos != QoS::AtMostOnce {
                    let ack = (p.pkid, p.qos);
                    hold_ack(&mut eventloop, &mut unacked, ack, epoch, &metrics).await;
                }
                if rejected {
                    continue;
                }
                match decoder.decode_into(&p.topic, &p.payload, &mut msg) {
                    Ok(()) => {
                        let gathered = out.len();
                        stage.push_message(&msg, recv_ns, &mut out);
                        if partition.is_some() {
                            note_marks(&mut marks, &out[gathered..]);
                        }
                        if out.len() >= WINDOWS_PER_SEND
                            && out.len() >= pace.handover_size(windows.is_empty())
                        {
                            if !send_windows(&windows, &mut out, &metrics).await {
                                break;
                            }
                        } else if gathered == 0 && !out.is_empty() {
                            handover_timer
                                .as_mut()
                                .reset(pace.handover_at(tokio::time::Instant::now()));
                        }
                        if !send_quality(&mut stage, &windows, &mut out, &metrics).await {
                            break;
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
                if !out.is_empty() && !send_windows(&windows, &mut out, &metrics).await {
                    break;
                }
                if std::mem::take(&mut session_up) {
                    metrics.session_connected(false);
                }
                connected_since = None;
                pending_subacks = 0;
                connection::note_lost(&e, &metrics, connected_at.take(), backoff);
                // Several nodes: the next one (the session resumes there).
                if brokers.len() > 1 {
                    broker = (broker + 1) % brokers.len();
                    eventloop.mqtt_options = brokers[broker].clone();
                    let (host, port) = brokers[broker].broker_address();
                    tracing::info!(%host, port, "trying the next broker node");
                }
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
        send_windows(&windows, &mut out, &metrics).await;
    }
    if stall.is_none() {
        let j = journal.as_mut();
        ack_at_shutdown(j, &mut unacked, acks, &mut eventloop, epoch, &metrics).await;
    }
    // A partition's session leaves its handover record for the next owner.
    if let Some(p) = &partition
        && stall.is_none()
    {
        let release = partition::Release {
            journal: journal.as_mut(),
            processed: processed.as_mut(),
            barrier: &barrier,
            stage: &stage,
            marks: &marks,
            windows: &windows,
            metrics: &metrics,
        };
        partition::leave(p, release, &client, &mut eventloop).await;
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
    if std::mem::take(&mut session_up) {
        metrics.session_connected(false);
    }
    // Windows of frames still waiting for late channels are not closed here:
    // they would be scored on partial data.
    drop(windows);
}
