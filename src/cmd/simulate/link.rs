//! The MQTT connection task: client options, acknowledgement counting and
//! reconnecting with capped backoff while the publisher keeps queueing.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use rumqttc::{
    ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet, Request, TlsConfiguration,
    Transport,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{SimulateError, SimulateOptions};
use crate::core::timestamp::{NANOS_PER_SEC, now_ns};

/// How long the broker may stay unreachable after the first connection
/// before [`simulate`](super::simulate) gives up.
pub const RECONNECT_GIVE_UP: Duration = Duration::from_secs(30);
/// After shutdown, how long to wait for outstanding acknowledgements.
pub(super) const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Requests queued between the publisher and the MQTT event loop: deep
/// enough to keep the connection busy, bounded so memory is too.
pub(super) const REQUEST_CAPACITY: usize = 10_000;
/// QoS 1/2 messages in flight (sent, not yet acknowledged).
const INFLIGHT: u16 = 1000;
const MAX_PACKET_SIZE: usize = 256 * 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// State of the connection task, watched by the publisher.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct LinkStatus {
    pub(super) connected: bool,
    /// Successful connections (the first one included).
    pub(super) connects: u64,
    pub(super) acked: u64,
}

pub(super) fn mqtt_options(opts: &SimulateOptions) -> Result<MqttOptions, SimulateError> {
    let client_id = opts.client_id.clone().unwrap_or_else(|| {
        let nanos = now_ns().rem_euclid(NANOS_PER_SEC);
        format!("anomalyd-sim-{}-{nanos:x}", std::process::id())
    });
    let mut m = MqttOptions::new(client_id, opts.broker_host.clone(), opts.broker_port);
    m.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true)
        .set_inflight(INFLIGHT)
        .set_request_channel_capacity(REQUEST_CAPACITY)
        .set_max_packet_size(MAX_PACKET_SIZE, MAX_PACKET_SIZE);
    if let Some(user) = &opts.username {
        m.set_credentials(user.clone(), opts.password.clone().unwrap_or_default());
    }
    if let Some(tls) = &opts.tls {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| SimulateError::ReadFile {
                path: path.clone(),
                source,
            })
        };
        let client_auth = match &tls.client_cert {
            Some((cert, key)) => Some((read(cert)?, read(key)?)),
            None => None,
        };
        crate::sources::mqtt::install_tls_provider();
        m.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
            ca: read(&tls.ca_file)?,
            alpn: None,
            client_auth,
        }));
    }
    Ok(m)
}

/// Polls the event loop: counts acknowledgements, reconnects with capped
/// backoff and re-queues what was not acknowledged (rumqttc drops it on a
/// new clean session), until the client disconnects.
pub(super) async fn drive(
    mut eventloop: EventLoop,
    status: watch::Sender<LinkStatus>,
    broker: String,
) -> Result<(), SimulateError> {
    let mut held: VecDeque<Request> = VecDeque::new();
    let mut ever_connected = false;
    let mut down_since: Option<Instant> = None;
    let mut backoff = BACKOFF_MIN;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                eventloop.pending.extend(held.drain(..));
                if down_since.take().is_some() {
                    tracing::info!(%broker, "simulate: reconnected to the MQTT broker");
                }
                ever_connected = true;
                backoff = BACKOFF_MIN;
                status.send_modify(|s| {
                    s.connected = true;
                    s.connects += 1;
                });
            }
            Ok(Event::Incoming(Packet::PubAck(_) | Packet::PubComp(_))) => {
                status.send_modify(|s| s.acked += 1);
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(ConnectionError::RequestsDone) => {
                return Ok(());
            }
            Ok(_) => {}
            Err(source) => {
                if !ever_connected {
                    return Err(SimulateError::Connect {
                        broker,
                        source: Box::new(source),
                    });
                }
                held.extend(eventloop.pending.drain(..));
                status.send_modify(|s| s.connected = false);
                let since = *down_since.get_or_insert_with(Instant::now);
                if since.elapsed() > RECONNECT_GIVE_UP {
                    return Err(SimulateError::ConnectionLost {
                        broker,
                        source: Box::new(source),
                    });
                }
                tracing::warn!(%broker, error = %source, retry_in_ms = backoff.as_millis() as u64,
                    "simulate: MQTT connection lost");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// The connection task's error, once it has ended.
pub(super) async fn link_error(link: JoinHandle<Result<(), SimulateError>>) -> SimulateError {
    match link.await {
        Ok(Err(e)) => e,
        Ok(Ok(())) => SimulateError::Link("it ended before the publisher".to_string()),
        Err(join) => SimulateError::Link(join.to_string()),
    }
}
