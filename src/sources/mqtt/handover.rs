//! A partition's handover record (docs/scale-out.md §4): what the daemon
//! that gives a partition up leaves on the broker, retained, for the one
//! that takes it over: the partition's messages of the last window span
//! (so the new owner's windows are warm from the first new reading), the
//! newest window end written per asset (so nothing is written twice), and
//! the open alerts (so an alert is cleared by the new owner, not raised
//! again).
//!
//! Payload: one JSON header line, then the messages in the intake
//! journal's record format (magic, length, CRC per record).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde::{Deserialize, Serialize};

use crate::core::detect::OpenAlert;
use crate::state::journal::{Journal, Record};

/// Largest record left on the broker: NATS's default `max_payload`. The
/// oldest messages are left out beyond it (windows of those assets then
/// start cold at the handover; logged).
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// The header line of a handover record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HandoverHeader {
    pub version: u32,
    pub partition: u32,
    /// Client id of the daemon that left it.
    pub owner: String,
    /// When it was left (the owner's clock, ns since the epoch).
    pub at_ns: i64,
    /// Per asset, the end of the newest window written.
    pub written_through: BTreeMap<String, i64>,
    pub open_alerts: BTreeMap<String, OpenAlert>,
    /// Messages the size cap left out (oldest first).
    #[serde(default)]
    pub messages_left_out: u64,
}

/// A decoded handover record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Handover {
    pub header: HandoverHeader,
    /// `(receive ns, topic, payload)`, oldest first.
    pub messages: Vec<(i64, String, Vec<u8>)>,
}

impl Handover {
    /// The payload, at most `max_bytes` (oldest messages left out first).
    pub fn encode(&self, max_bytes: usize) -> Vec<u8> {
        let mut skip = 0;
        loop {
            let mut header = self.header.clone();
            header.messages_left_out += skip as u64;
            let mut out = serde_json::to_vec(&header).unwrap_or_default();
            out.push(b'\n');
            out.extend(Journal::encode_records(self.messages[skip..].iter().map(
                |(recv_ns, topic, payload)| Record {
                    recv_ns: *recv_ns,
                    topic,
                    payload,
                },
            )));
            if out.len() <= max_bytes || skip >= self.messages.len() {
                return out;
            }
            // Drop about the share that is over, at least one message.
            let over = (out.len() - max_bytes) as f64 / out.len() as f64;
            let remaining = self.messages.len() - skip;
            skip += ((remaining as f64 * over).ceil() as usize).max(1);
            skip = skip.min(self.messages.len());
        }
    }

    /// Reads a payload written by [`Handover::encode`].
    ///
    /// # Errors
    /// No header line, or a header that does not parse.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let nl = bytes
            .iter()
            .position(|b| *b == b'\n')
            .ok_or("no header line")?;
        let header: HandoverHeader =
            serde_json::from_slice(&bytes[..nl]).map_err(|e| format!("header: {e}"))?;
        let mut messages = Vec::new();
        Journal::decode_records(&bytes[nl + 1..], |r| {
            messages.push((r.recv_ns, r.topic.to_string(), r.payload.to_vec()));
        });
        Ok(Self { header, messages })
    }

    pub fn open_alerts(&self) -> HashMap<String, OpenAlert> {
        self.header
            .open_alerts
            .iter()
            .map(|(a, o)| (a.clone(), *o))
            .collect()
    }
}

/// Reads the retained handover record on `topic` through a short clean
/// session on the first broker node that answers. `Ok(None)`: there is
/// none (or an empty one, which deletes it).
///
/// # Errors
/// No node answered within `wait`, or the record does not decode.
pub async fn fetch(
    brokers: &[MqttOptions],
    topic: &str,
    wait: Duration,
) -> Result<Option<Handover>, String> {
    let mut last = "no broker configured".to_string();
    for options in brokers {
        let mut o = options.clone();
        o.set_clean_session(true);
        o.set_manual_acks(false);
        o.set_client_id(format!("{}-handover", options.client_id()));
        match tokio::time::timeout(wait, fetch_from(o, topic)).await {
            Ok(Ok(found)) => return found.map(|b| Handover::decode(&b)).transpose(),
            Ok(Err(e)) => last = e,
            Err(_) => last = format!("no answer within {} ms", wait.as_millis()),
        }
    }
    Err(last)
}

/// How long a retained message may follow the SUBACK. A clustered broker
/// spreads a new retained message to its other nodes within about a
/// second (NATS: 0.4-0.7 s measured, once 4.7 s). When a record exists it
/// usually arrives at once; only a partition without one waits this long.
const RETAINED_GRACE: Duration = Duration::from_secs(5);

async fn fetch_from(options: MqttOptions, topic: &str) -> Result<Option<Vec<u8>>, String> {
    let addr = options.broker_address();
    let (client, mut eventloop) = AsyncClient::new(options, 8);
    // QoS 0: no broker-side consumer to create (NATS makes each QoS 1
    // subscription a replicated JetStream consumer, about 1 s each).
    client
        .try_subscribe(topic, QoS::AtMostOnce)
        .map_err(|e| e.to_string())?;
    let mut until: Option<tokio::time::Instant> = None;
    let found = loop {
        let ev = match until {
            Some(t) => match tokio::time::timeout_at(t, eventloop.poll()).await {
                Ok(ev) => ev,
                Err(_) => break None,
            },
            None => eventloop.poll().await,
        };
        match ev {
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                until = Some(tokio::time::Instant::now() + RETAINED_GRACE);
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == topic => {
                break (!p.payload.is_empty()).then(|| p.payload.to_vec());
            }
            Ok(_) => {}
            Err(e) => return Err(format!("{}:{}: {e}", addr.0, addr.1)),
        }
    };
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
    Ok(found)
}

/// Publishes `payload` retained at QoS 1 on the source's own connection
/// and waits for the broker's PUBACK.
///
/// # Errors
/// The request could not be queued, the connection failed, or no PUBACK
/// came within `wait`.
pub async fn publish(
    client: &AsyncClient,
    eventloop: &mut EventLoop,
    topic: &str,
    payload: Vec<u8>,
    wait: Duration,
) -> Result<(), String> {
    client
        .try_publish(topic, QoS::AtLeastOnce, true, payload)
        .map_err(|e| e.to_string())?;
    let acked = async {
        let mut pkid = None;
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(rumqttc::Outgoing::Publish(id))) => pkid = Some(id),
                Ok(Event::Incoming(Packet::PubAck(a))) if pkid == Some(a.pkid) => {
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    tokio::time::timeout(wait, acked)
        .await
        .map_err(|_| format!("no PUBACK within {} ms", wait.as_millis()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: usize) -> Handover {
        Handover {
            header: HandoverHeader {
                version: 1,
                partition: 2,
                owner: "anomalyd-a".into(),
                at_ns: 42,
                written_through: [("pump-1".to_string(), 7)].into(),
                open_alerts: [(
                    "pump-1".to_string(),
                    OpenAlert {
                        start_ts: 5,
                        peak: 3.5,
                    },
                )]
                .into(),
                messages_left_out: 0,
            },
            messages: (0..n)
                .map(|i| {
                    (
                        i as i64,
                        format!("sensors/2/pump-{i}"),
                        format!("{{\"v\":{i}}}").into_bytes(),
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn a_record_round_trips() {
        let r = record(50);
        let back = Handover::decode(&r.encode(MAX_RECORD_BYTES)).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.open_alerts()["pump-1"].start_ts, 5);
    }

    #[test]
    fn the_size_cap_leaves_the_oldest_messages_out() {
        let r = record(1000);
        let bytes = r.encode(4096);
        assert!(bytes.len() <= 4096, "{}", bytes.len());
        let back = Handover::decode(&bytes).unwrap();
        let kept = back.messages.len();
        assert!(kept > 10, "{kept}");
        assert_eq!(back.header.messages_left_out as usize, 1000 - kept);
        // The newest are kept, in order.
        assert_eq!(back.messages.last(), r.messages.last());
        assert_eq!(back.messages[0], r.messages[1000 - kept]);
    }

    #[test]
    fn garbage_is_a_clear_error() {
        assert!(Handover::decode(b"no newline").is_err());
        assert!(
            Handover::decode(b"{not json}\n")
                .unwrap_err()
                .contains("header")
        );
    }
}
