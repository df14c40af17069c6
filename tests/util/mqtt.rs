//! Publishing to MQTT: unique client ids, QoS levels, one message or many
//! over one connection (each client on a thread of its own, so the helpers
//! work inside a tokio runtime too), and synthetic pump rows as the JSON
//! frames the daemon's `sensors/{asset}` topic takes.

use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use anomalyd::core::synth::{PUMP_CHANNELS, SyntheticLog};
use rumqttc::{Client, Event, MqttOptions, Outgoing, Packet, QoS};

/// A unique client id (MQTT brokers disconnect the older of two equal ids).
pub fn client_id(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        _ => panic!("invalid MQTT QoS {level}"),
    }
}

/// Publishes one message to an anonymous broker on `127.0.0.1:port` and
/// returns once it was written (QoS 0) or acknowledged (QoS 1/2).
pub fn mqtt_publish(port: u16, topic: &str, payload: impl Into<Vec<u8>>, qos: u8) {
    mqtt_publish_many(port, &[(topic.to_string(), payload.into())], qos);
}

/// Publishes `messages` in order over one connection to an anonymous broker
/// on `127.0.0.1:port`; returns once all were written (QoS 0) or
/// acknowledged (QoS 1/2).
pub fn mqtt_publish_many(port: u16, messages: &[(String, Vec<u8>)], qos: u8) -> usize {
    let opts = MqttOptions::new(client_id("test-pub"), "127.0.0.1", port);
    mqtt_publish_with(opts, messages, qos)
}

/// [`mqtt_publish_many`] with any options (credentials, TLS: see
/// [`Mosquitto::mqtt_options`]); panics on a connection error.
pub fn mqtt_publish_with(opts: MqttOptions, messages: &[(String, Vec<u8>)], qos: u8) -> usize {
    try_mqtt_publish_with(opts, messages, qos)
        .unwrap_or_else(|e| panic!("MQTT publish failed: {e}"))
}

/// [`mqtt_publish_with`] that returns connection errors (refused
/// credentials, TLS failures) instead of panicking; gives up after 60 s.
pub fn try_mqtt_publish_with(
    mut opts: MqttOptions,
    messages: &[(String, Vec<u8>)],
    qos_level: u8,
) -> Result<usize, String> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let level = qos(qos_level);
    opts.set_inflight(1000);
    opts.set_max_packet_size(16 << 20, 16 << 20);
    let (client, mut connection) = Client::new(opts, 1000);
    let acked = AtomicUsize::new(0);
    let failed = Mutex::new(None::<String>);
    thread::scope(|s| {
        // The connection runs a runtime of its own: keep it off any caller's
        // runtime (and off the thread that queues the publishes).
        let events = s.spawn(|| {
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::PubAck(_) | Packet::PubComp(_))) => {
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    // Requests are handled in order, so every publish queued
                    // before the disconnect has been written by now.
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    Err(e) => {
                        *failed.lock().unwrap() = Some(e.to_string());
                        return;
                    }
                }
            }
        });
        let mut count = 0;
        for (topic, payload) in messages {
            if client
                .publish(topic.clone(), level, false, payload.clone())
                .is_err()
            {
                break; // the connection ended; its error is reported below
            }
            count += 1;
        }
        if level != QoS::AtMostOnce {
            let start = Instant::now();
            while acked.load(Ordering::SeqCst) < count && failed.lock().unwrap().is_none() {
                if start.elapsed() > Duration::from_secs(60) {
                    *failed.lock().unwrap() = Some(format!(
                        "only {} of {count} messages acknowledged after 60 s",
                        acked.load(Ordering::SeqCst)
                    ));
                    break;
                }
                thread::sleep(Duration::from_millis(2));
            }
        }
        let _ = client.disconnect();
        events.join().expect("MQTT event thread panicked");
        match failed.lock().unwrap().take() {
            Some(e) => Err(format!("after {count} messages: {e}")),
            None => Ok(count),
        }
    })
}

/// JSON frame payloads (`ts` in ms, one field per channel) for one asset.
pub fn frame_payloads(log: &SyntheticLog) -> Vec<String> {
    log.timestamps
        .iter()
        .zip(&log.values)
        .map(|(ts, v)| {
            let mut obj = serde_json::Map::new();
            obj.insert("ts".into(), (ts / 1_000_000).into());
            for (name, x) in PUMP_CHANNELS.iter().zip(v) {
                obj.insert((*name).into(), (*x).into());
            }
            serde_json::Value::Object(obj).to_string()
        })
        .collect()
}

/// Every row of `log` as a message on `sensors/{asset}`.
pub fn frame_messages(asset: &str, log: &SyntheticLog) -> Vec<(String, Vec<u8>)> {
    let topic = format!("sensors/{asset}");
    frame_payloads(log)
        .into_iter()
        .map(|p| (topic.clone(), p.into_bytes()))
        .collect()
}

/// Publishes every row of `log` as a frame on `sensors/{asset}` at QoS 1.
pub fn publish_frames(port: u16, asset: &str, log: &SyntheticLog) {
    mqtt_publish_many(port, &frame_messages(asset, log), 1);
}
