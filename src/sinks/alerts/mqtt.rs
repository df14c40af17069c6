//! The MQTT alert output (docs/alerts.md §4): each alert message is
//! published as JSON at QoS 1 to a topic from a template (`{asset}`,
//! `{model}`, `{alarm}`), retained by default so that an HMI connecting
//! later sees each asset's current state. A message counts as delivered
//! once the broker's PUBACK arrives. The output has its own connection;
//! after any failure it starts a fresh one and publishes the message again
//! (at least once).

use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};

use super::{AlertMessage, AlertSender};
use crate::sinks::runner::WriteFailure;

/// Publishes alert messages to a broker.
pub struct MqttAlertSender {
    options: MqttOptions,
    topic: String,
    retain: bool,
    timeout: Duration,
    conn: Option<(AsyncClient, EventLoop)>,
}

impl std::fmt::Debug for MqttAlertSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttAlertSender")
            .field("topic", &self.topic)
            .field("retain", &self.retain)
            .finish_non_exhaustive()
    }
}

/// The topic for `m` from `template`; MQTT wildcards in names become `_`.
pub fn topic_for(template: &str, m: &AlertMessage) -> String {
    let clean = |s: &str| s.replace(['+', '#'], "_");
    template
        .replace("{asset}", &clean(&m.asset))
        .replace("{model}", &clean(&m.model))
        .replace("{alarm}", &clean(&m.alarm))
}

impl MqttAlertSender {
    /// `options` name the broker and a client id of the output's own.
    pub fn new(options: MqttOptions, topic: String, retain: bool, timeout: Duration) -> Self {
        Self {
            options,
            topic,
            retain,
            timeout,
            conn: None,
        }
    }

    /// Polls the event loop until `done` says the event is the awaited
    /// one; an error or the timeout drops the connection.
    async fn poll_until(&mut self, done: impl Fn(&Event) -> bool) -> Result<(), WriteFailure> {
        let timeout = self.timeout;
        let Some((_, eventloop)) = self.conn.as_mut() else {
            return Err(WriteFailure::Retry("not connected".into()));
        };
        let result = tokio::time::timeout(timeout, async {
            loop {
                match eventloop.poll().await {
                    Ok(ev) if done(&ev) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        })
        .await;
        let result = match result {
            Ok(r) => r,
            Err(_) => Err(format!("no answer from the broker within {timeout:?}")),
        };
        if result.is_err() {
            self.conn = None;
        }
        result.map_err(WriteFailure::Retry)
    }
}

impl AlertSender for MqttAlertSender {
    async fn send(&mut self, json: &str, msg: &AlertMessage) -> Result<(), WriteFailure> {
        if self.conn.is_none() {
            self.conn = Some(AsyncClient::new(self.options.clone(), 16));
            self.poll_until(|e| matches!(e, Event::Incoming(Packet::ConnAck(_))))
                .await?;
        }
        let topic = topic_for(&self.topic, msg);
        let Some((client, _)) = self.conn.as_ref() else {
            return Err(WriteFailure::Retry("not connected".into()));
        };
        if let Err(e) = client
            .publish(
                topic,
                QoS::AtLeastOnce,
                self.retain,
                json.as_bytes().to_vec(),
            )
            .await
        {
            self.conn = None;
            return Err(WriteFailure::Retry(e.to_string()));
        }
        // One message in flight at a time: the next PUBACK is ours.
        self.poll_until(|e| matches!(e, Event::Incoming(Packet::PubAck(_))))
            .await
    }

    async fn idle(&mut self) {
        let Some((_, eventloop)) = self.conn.as_mut() else {
            return std::future::pending().await;
        };
        // Keep-alive pings; a broken connection is dropped and the next
        // alert opens a new one.
        loop {
            if let Err(e) = eventloop.poll().await {
                tracing::debug!(error = %e, "alert output's MQTT connection closed");
                self.conn = None;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_template_fills_names_and_defuses_wildcards() {
        let m: AlertMessage = serde_json::from_value(serde_json::json!({
            "asset": "pump+1", "model": "pump", "alarm": "stale", "state": "raised",
            "time": "", "time_ns": 0, "episode_start": "", "episode_start_ns": 0,
            "duration_s": 0.0, "active": [], "decided_ns": 0
        }))
        .unwrap();
        assert_eq!(
            topic_for("plant/{model}/{asset}/{alarm}", &m),
            "plant/pump/pump_1/stale"
        );
    }
}
