//! Alarms reach the plant, through the binary with real mosquitto,
//! VictoriaMetrics and an HTTP server in the test.
//!
//! - `quality.rs`: a silent asset raises and clears `stale` (its last
//!   window closed by the clock) in InfluxDB, on the MQTT alert topic
//!   (retained for a late subscriber) and on the status page; a silent
//!   channel is named; an alarm open before a restart clears afterwards; a
//!   frozen channel raises `stuck`; a channel-name mismatch shows in the
//!   log, the status page and `tap`.
//! - `outputs.rs`: an anomaly alert reaches an MQTT subscriber and a
//!   webhook that was down; alerts raised before a `kill -9` or while the
//!   alert broker is down arrive afterwards; an HTTPS webhook is verified
//!   against its `ca_file` while MQTT runs over TLS; `check-config` builds
//!   the outputs; the delivery latency, measured.

use anomalyd::core::synth::{FaultKind, SyntheticLog, generate};

use crate::util::*;

mod outputs;
mod quality;

const ALERT_TOPIC: &str = "anomalyd/alerts/pump-001";

/// Frame payloads of rows `from..` of `log`, leaving out `drop_channel`.
fn frames(log: &SyntheticLog, from: usize, drop_channel: Option<&str>) -> Vec<(String, Vec<u8>)> {
    frame_payloads(log)
        .into_iter()
        .skip(from)
        .map(|p| {
            let mut v: serde_json::Value = serde_json::from_str(&p).unwrap();
            if let Some(c) = drop_channel {
                v.as_object_mut().unwrap().remove(c);
            }
            ("sensors/pump-001".to_string(), v.to_string().into_bytes())
        })
        .collect()
}

/// `rows` rows of a pump with a bearing fault from row 300 to 420.
fn bearing_fault(rows: usize) -> SyntheticLog {
    let fault = Some((FaultKind::Bearing, 300..420));
    generate(rows, 11, START_NS, 1_000_000_000, fault)
}

fn alarms_of(msgs: &[Received]) -> Vec<(String, String, Option<String>)> {
    msgs.iter()
        .map(|m| {
            let j = m.json();
            (
                j["alarm"].as_str().unwrap().to_string(),
                j["state"].as_str().unwrap().to_string(),
                j["channel"].as_str().map(str::to_string),
            )
        })
        .collect()
}
