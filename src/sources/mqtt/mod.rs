//! The MQTT source (DESIGN.md §7): connects with rumqttc, resubscribes
//! whenever the broker has no session for us, reconnects with capped
//! exponential backoff, decodes every message and feeds the asset pipeline.
//! When scoring falls behind, sending windows on the bounded channel waits,
//! which stops polling the broker: backpressure instead of memory growth.

pub mod decode;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{MqttConfig, Secret};
use crate::ops::metrics::Metrics;
use crate::pipeline::{Binder, FeatureStage, ModelSlot, ScoreRequest, StageSettings};
use crate::sources::mqtt::decode::{Decoder, DropReason, Message};
use crate::state::journal::Journal;

/// Why the MQTT client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("cannot read {what} {path}: {source}")]
    File {
        what: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// A message to the scoring thread.
#[derive(Debug)]
pub enum InferenceMsg {
    Windows(Vec<ScoreRequest>),
    Swap(Vec<crate::pipeline::NamedModel>),
    /// Journal segments up to this sequence are behind every window sent
    /// before it (see [`crate::state::journal`]).
    Barrier(u64),
}

/// New models and mappings for the source after a reload.
#[derive(Debug)]
pub struct SourceReload {
    pub slots: Vec<ModelSlot>,
    pub binder: Binder,
    pub settings: StageSettings,
    pub decoder: Decoder,
}

/// Logs a recurring problem at most once per interval, with a count of
/// what was suppressed in between.
#[derive(Debug)]
pub struct RateLimitedLog {
    interval: Duration,
    last: [Option<Instant>; DropReason::ALL.len()],
    suppressed: [u64; DropReason::ALL.len()],
}

impl RateLimitedLog {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: [None; DropReason::ALL.len()],
            suppressed: [0; DropReason::ALL.len()],
        }
    }

    /// Logs `message` for `reason` unless one was logged recently.
    pub fn warn(&mut self, reason: DropReason, message: impl FnOnce() -> String) -> bool {
        let i = reason as usize;
        let now = Instant::now();
        if self.last[i].is_some_and(|t| now.duration_since(t) < self.interval) {
            self.suppressed[i] += 1;
            return false;
        }
        let suppressed = std::mem::take(&mut self.suppressed[i]);
        tracing::warn!(reason = reason.as_str(), suppressed, "{}", message());
        self.last[i] = Some(now);
        true
    }
}

/// Builds rumqttc options from the config.
///
/// # Errors
/// TLS files that cannot be read.
pub fn mqtt_options(cfg: &MqttConfig, password: Option<&Secret>) -> Result<MqttOptions, MqttError> {
    let mut o = MqttOptions::new(cfg.client_id.clone(), cfg.host.clone(), cfg.port);
    o.set_keep_alive(Duration::from_secs(cfg.keep_alive_s));
    o.set_clean_session(cfg.clean_session);
    // rumqttc treats an oversize packet as a connection error, and a
    // persistent session would redeliver it forever; allow headroom and
    // count oversize payloads ourselves.
    let incoming = cfg
        .max_packet_size
        .saturating_mul(4)
        .max(cfg.max_packet_size);
    o.set_max_packet_size(incoming, cfg.max_packet_size);
    o.set_request_channel_capacity(256);
    o.set_inflight(1000);
    if let Some(user) = &cfg.username {
        o.set_credentials(
            user.clone(),
            password.map(|p| p.expose().to_string()).unwrap_or_default(),
        );
    }
    if cfg.tls.enabled {
        let read = |what: &'static str, path: &std::path::Path| {
            std::fs::read(path).map_err(|source| MqttError::File {
                what,
                path: path.to_path_buf(),
                source,
            })
        };
        let transport = match &cfg.tls.ca_file {
            Some(ca) => {
                let client_auth = match (&cfg.tls.client_cert, &cfg.tls.client_key) {
                    (Some(c), Some(k)) => Some((
                        read("mqtt.tls.client_cert", c)?,
                        read("mqtt.tls.client_key", k)?,
                    )),
                    _ => None,
                };
                Transport::tls_with_config(TlsConfiguration::Simple {
                    ca: read("mqtt.tls.ca_file", ca)?,
                    alpn: None,
                    client_auth,
                })
            }
            // No CA file: the system's roots, verification still on.
            None => Transport::tls_with_default_config(),
        };
        o.set_transport(transport);
    }
    Ok(o)
}

fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        2 => QoS::ExactlyOnce,
        _ => QoS::AtLeastOnce,
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Most windows the source gathers before it hands them to the scoring
/// thread in one channel message. It sends sooner whenever the broker has
/// nothing more ready, so batching adds no waiting; it saves a channel
/// operation (and often a thread wake-up) per window. The scoring channel's
/// capacity is divided by this, so it still bounds queued windows.
pub const WINDOWS_PER_SEND: usize = 64;

/// Hands the gathered windows to the scoring thread, waiting while its
/// queue is full (backpressure); false once the scoring thread is gone.
async fn send_windows(windows: &mpsc::Sender<InferenceMsg>, out: &mut Vec<ScoreRequest>) -> bool {
    let batch = std::mem::replace(out, Vec::with_capacity(WINDOWS_PER_SEND));
    windows.send(InferenceMsg::Windows(batch)).await.is_ok()
}

/// Everything the source task needs.
#[derive(Debug)]
pub struct SourceParts {
    pub options: MqttOptions,
    pub qos: u8,
    pub max_payload: usize,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
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
    pub processed: mpsc::UnboundedReceiver<u64>,
}

/// Messages acknowledged after one journal sync.
struct AckBatch {
    /// Connection the messages came on; acks for an older one are not sent
    /// (the broker redelivers those messages, which the journal absorbs).
    epoch: u64,
    sync: Option<std::fs::File>,
    acks: Vec<(u16, QoS)>,
}

/// What `ack`/`try_ack` need of a delivered message: its packet id and QoS.
fn ack_request(pkid: u16, qos: QoS) -> rumqttc::Publish {
    let mut p = rumqttc::Publish::new("", qos, Vec::<u8>::new());
    p.pkid = pkid;
    p
}

/// Sends acknowledgements once their journal records are durable. Runs
/// beside the poll loop: awaiting `ack` inside it would deadlock when the
/// request channel is full (DESIGN.md §7).
async fn ack_task(
    client: AsyncClient,
    mut rx: mpsc::UnboundedReceiver<AckBatch>,
    epoch: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
) {
    let mut batches = Vec::new();
    while rx.recv_many(&mut batches, 64).await > 0 {
        // One sync per file covers every batch gathered meanwhile.
        let files: Vec<std::fs::File> = batches.iter_mut().filter_map(|b| b.sync.take()).collect();
        if !files.is_empty() {
            let synced = tokio::task::spawn_blocking(move || {
                files.iter().try_for_each(std::fs::File::sync_data)
            })
            .await;
            if !matches!(synced, Ok(Ok(()))) {
                metrics.journal_errors.fetch_add(1, Relaxed);
                tracing::error!("journal sync failed; acknowledging anyway (at most once)");
            }
        }
        for b in batches.drain(..) {
            if b.epoch != epoch.load(Relaxed) {
                continue;
            }
            for (pkid, qos) in b.acks {
                if client.ack(&ack_request(pkid, qos)).await.is_err() {
                    return;
                }
                metrics.acks_sent.fetch_add(1, Relaxed);
            }
        }
    }
}

/// Makes the journaled messages durable (in the ack task) and hands their
/// acknowledgements over.
fn commit_journal(
    journal: &mut Journal,
    unacked: &mut Vec<(u16, QoS)>,
    epoch: u64,
    acks: &mpsc::UnboundedSender<AckBatch>,
    metrics: &Metrics,
) {
    if unacked.is_empty() {
        return;
    }
    let sync = journal.commit().unwrap_or_else(|e| {
        metrics.journal_errors.fetch_add(1, Relaxed);
        tracing::error!(error = %e, "cannot write the journal; acknowledging anyway (at most once)");
        None
    });
    metrics.journal_bytes.store(journal.bytes(), Relaxed);
    let _ = acks.send(AckBatch {
        epoch,
        sync,
        acks: std::mem::take(unacked),
    });
}

/// Replays what an earlier run journaled, oldest first, through the
/// pipeline; then a barrier covers it.
async fn replay_journal(
    journal: &mut Journal,
    paths: Vec<std::path::PathBuf>,
    decoder: &Decoder,
    stage: &mut FeatureStage,
    windows: &mpsc::Sender<InferenceMsg>,
    metrics: &Metrics,
) -> bool {
    let mut msg = Message::default();
    let mut out = Vec::with_capacity(WINDOWS_PER_SEND);
    let total = paths.len();
    let mut last_note = Instant::now();
    for (i, path) in paths.into_iter().enumerate() {
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
            match decoder.decode_into(&topic, &payload, &mut msg) {
                Ok(()) => stage.push_message(&msg, recv_ns, &mut out),
                Err(e) => metrics.count_drop(e.reason(), 1),
            }
            if out.len() >= WINDOWS_PER_SEND && !send_windows(windows, &mut out).await {
                return false;
            }
        }
    }
    if !out.is_empty() && !send_windows(windows, &mut out).await {
        return false;
    }
    if let Some(seq) = journal.newest_closed() {
        return windows.send(InferenceMsg::Barrier(seq)).await.is_ok();
    }
    true
}

/// Runs until `shutdown`: polls the broker, decodes, aligns and windows,
/// and sends windows to the scoring thread. `connected` fires once the
/// broker has confirmed the subscriptions (systemd READY). `heartbeat` is touched every loop turn.
pub async fn run_source(
    parts: SourceParts,
    windows: mpsc::Sender<InferenceMsg>,
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
        mut decoder,
        mut stage,
        journal,
    } = parts;
    let (mut journal, mut processed, replay) = match journal {
        Some(JournalParts {
            journal,
            replay,
            processed,
        }) => (Some(journal), Some(processed), replay),
        None => (None, None, Vec::new()),
    };
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
    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
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
            Some(seq) = async { processed.as_mut()?.recv().await }, if processed.is_some() => {
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
                    // Windows of the closed segment go first, then its barrier.
                    if !out.is_empty() && !send_windows(&windows, &mut out).await {
                        break;
                    }
                    if let Some(seq) = j.rotate()
                        && windows.send(InferenceMsg::Barrier(seq)).await.is_err()
                    {
                        break;
                    }
                }
                continue;
            }
            ev = eventloop.poll() => ev,
            // Only when the broker has nothing more ready for us right now:
            // windows gathered from a burst go to scoring in one message,
            // and journaled messages are synced and acknowledged together.
            () = std::future::ready(()), if !out.is_empty() || !unacked.is_empty() => {
                if let Some(j) = journal.as_mut() {
                    commit_journal(j, &mut unacked, epoch.load(Relaxed), &ack_tx, &metrics);
                }
                if !out.is_empty() && !send_windows(&windows, &mut out).await {
                    break;
                }
                continue;
            }
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                // Acks still queued belong to the old connection.
                epoch.fetch_add(1, Relaxed);
                unacked.clear();
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
                        stage.push_message(&msg, recv_ns, &mut out);
                        if out.len() >= WINDOWS_PER_SEND && !send_windows(&windows, &mut out).await
                        {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limited_log_suppresses_and_counts() {
        let mut l = RateLimitedLog::new(Duration::from_secs(60));
        assert!(l.warn(DropReason::BadPayload, || "a".into()));
        assert!(!l.warn(DropReason::BadPayload, || "b".into()));
        assert!(!l.warn(DropReason::BadPayload, || "c".into()));
        assert_eq!(l.suppressed[DropReason::BadPayload as usize], 2);
        // Another reason is limited separately.
        assert!(l.warn(DropReason::UnknownTopic, || "d".into()));
    }

    #[test]
    fn options_follow_config() {
        let cfg: MqttConfig = serde_json::from_value(serde_json::json!({
            "host": "127.0.0.1", "port": 1999, "client_id": "gw1", "username": "u",
            "clean_session": false, "keep_alive_s": 15, "max_packet_size": 4096
        }))
        .unwrap();
        let o = mqtt_options(&cfg, Some(&Secret::new("p"))).unwrap();
        assert_eq!(o.broker_address(), ("127.0.0.1".to_string(), 1999));
        assert_eq!(o.client_id(), "gw1");
        assert!(!o.clean_session());
        assert_eq!(o.keep_alive(), Duration::from_secs(15));
        assert_eq!(o.credentials().map(|l| l.username), Some("u".to_string()));
    }

    #[test]
    fn missing_tls_file_is_a_clear_error() {
        let cfg: MqttConfig = serde_json::from_value(serde_json::json!({
            "tls": {"enabled": true, "ca_file": "/nonexistent/ca.pem"}
        }))
        .unwrap();
        let err = mqtt_options(&cfg, None).unwrap_err().to_string();
        assert!(
            err.contains("mqtt.tls.ca_file") && err.contains("/nonexistent/ca.pem"),
            "{err}"
        );
    }
}
