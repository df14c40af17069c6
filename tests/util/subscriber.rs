//! An MQTT subscriber that records every message on a background thread,
//! for tests that check what `anomalyd simulate` or a broker delivers.

use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Outgoing, Packet};

use super::{client_id, qos};

/// One message a [`MqttSubscriber`] received.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    /// When the subscriber received it.
    pub at: Instant,
}

impl Received {
    pub fn payload_str(&self) -> &str {
        std::str::from_utf8(&self.payload).expect("payload is not UTF-8")
    }

    /// The payload parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "payload on {} is not JSON ({e}): {:?}",
                self.topic,
                self.payload_str()
            )
        })
    }
}

/// A subscriber that collects every message on a background thread.
/// Subscribed (SubAck received) when [`connect`](Self::connect) returns, so
/// nothing published afterwards is missed.
pub struct MqttSubscriber {
    client: Client,
    received: Arc<Mutex<Vec<Received>>>,
    error: Arc<Mutex<Option<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl MqttSubscriber {
    /// Subscribes to `filter` at QoS 1 on an anonymous broker.
    pub fn connect(port: u16, filter: &str) -> MqttSubscriber {
        let opts = MqttOptions::new(client_id("test-sub"), "127.0.0.1", port);
        Self::connect_with(opts, filter, 1)
    }

    /// Subscribes to `filter` at `qos_level` with `opts`; panics when the
    /// broker refuses the connection or the subscription within 10 s.
    pub fn connect_with(opts: MqttOptions, filter: &str, qos_level: u8) -> MqttSubscriber {
        Self::try_connect_with(opts, filter, qos_level)
            .unwrap_or_else(|e| panic!("MQTT subscriber for {filter}: {e}"))
    }

    /// [`connect_with`](Self::connect_with) that returns the broker's
    /// refusal (credentials, TLS, subscription) instead of panicking.
    pub fn try_connect_with(
        mut opts: MqttOptions,
        filter: &str,
        qos_level: u8,
    ) -> Result<MqttSubscriber, String> {
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut connection) = Client::new(opts, 1000);
        client
            .subscribe(filter, qos(qos_level))
            .map_err(|e| e.to_string())?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let error = Arc::new(Mutex::new(None));
        let subscribed = Arc::new(Mutex::new(None::<bool>));
        let thread = {
            let (received, error, subscribed) =
                (received.clone(), error.clone(), subscribed.clone());
            thread::spawn(move || {
                for event in connection.iter() {
                    match event {
                        Ok(Event::Incoming(Packet::SubAck(ack))) => {
                            let ok = ack
                                .return_codes
                                .iter()
                                .all(|c| !matches!(c, rumqttc::SubscribeReasonCode::Failure));
                            *subscribed.lock().unwrap() = Some(ok);
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            received.lock().unwrap().push(Received {
                                topic: p.topic.clone(),
                                payload: p.payload.to_vec(),
                                qos: p.qos as u8,
                                retain: p.retain,
                                at: Instant::now(),
                            });
                        }
                        Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                        Ok(_) => {}
                        Err(e) => {
                            *error.lock().unwrap() = Some(e.to_string());
                            return;
                        }
                    }
                }
            })
        };
        let start = Instant::now();
        loop {
            if let Some(e) = error.lock().unwrap().clone() {
                let _ = thread.join();
                return Err(format!("cannot connect: {e}"));
            }
            match *subscribed.lock().unwrap() {
                Some(true) => break,
                Some(false) => return Err(format!("broker refused subscription to {filter}")),
                None => {}
            }
            if start.elapsed() > Duration::from_secs(10) {
                return Err("no SubAck within 10 s".to_string());
            }
            thread::sleep(Duration::from_millis(2));
        }
        Ok(MqttSubscriber {
            client,
            received,
            error,
            thread: Some(thread),
        })
    }

    /// All messages received so far, in arrival order.
    pub fn messages(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// Waits until at least `n` messages arrived; panics after `deadline`
    /// (saying how many did, and the last few) or when the connection failed.
    pub fn wait_for(&self, n: usize, deadline: Duration) -> Vec<Received> {
        let start = Instant::now();
        loop {
            if let Some(e) = self.error.lock().unwrap().as_ref() {
                panic!("MQTT subscriber failed: {e}");
            }
            let got = self.messages();
            if got.len() >= n {
                return got;
            }
            if start.elapsed() >= deadline {
                let last: Vec<_> = got
                    .iter()
                    .rev()
                    .take(3)
                    .map(|m| (m.topic.as_str(), String::from_utf8_lossy(&m.payload)))
                    .collect();
                panic!(
                    "timed out after {deadline:?} waiting for {n} MQTT messages: got {}; last: {last:?}",
                    got.len()
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for MqttSubscriber {
    fn drop(&mut self) {
        let _ = self.client.disconnect();
        if let Some(t) = self.thread.take() {
            // Errors end the thread too; either way it ends promptly.
            let _ = t.join();
        }
    }
}
