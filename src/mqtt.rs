//! The MQTT source (DESIGN.md §7): connects with rumqttc, resubscribes
//! whenever the broker has no session for us, reconnects with capped
//! exponential backoff, decodes every message and feeds the asset pipeline.
//! When scoring falls behind, sending windows on the bounded channel waits,
//! which stops polling the broker: backpressure instead of memory growth.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{MqttConfig, Secret};
use crate::decode::{Decoder, DropReason, Message};
use crate::metrics::Metrics;
use crate::pipeline::{Binder, FeatureStage, ModelSlot, ScoreRequest, StageSettings};

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
    } = parts;
    let (client, mut eventloop) = AsyncClient::new(options, 256);
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
            _ = tick.tick() => {
                heartbeat.store(now_ns() as u64, Relaxed);
                continue;
            }
            ev = eventloop.poll() => ev,
            // Only when the broker has nothing more ready for us right now:
            // windows gathered from a burst go to scoring in one message.
            () = std::future::ready(()), if !out.is_empty() => {
                if !send_windows(&windows, &mut out).await {
                    break;
                }
                continue;
            }
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
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
                        stage.push_message(&msg, now_ns(), &mut out);
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
