//! Alert outputs end to end: MQTT and webhook, through an endpoint
//! outage, a `kill -9` and an alert-broker outage; `check-config`; the
//! delivery latency.

use std::time::Duration;

use anomalyd::core::synth::{FaultKind, SyntheticLog, generate};

use super::{ALERT_TOPIC, alarms_of, bearing_fault};
use crate::util::*;

#[test]
fn an_anomaly_alert_reaches_mqtt_and_a_webhook_that_was_down() {
    let broker = Mosquitto::start();
    let vm = VictoriaMetrics::start();
    let metrics_port = free_port();
    let hook_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let hook_url = format!("http://127.0.0.1:{hook_port}/alerts");
    let cfg = DaemonConfig::new(broker.port(), &vm.url(), metrics_port)
        .quality_alarms(0, 0)
        .mqtt_alert_output("hmi")
        .webhook_output("oncall", &hook_url, Some(&token))
        .to_toml();
    let sub = MqttSubscriber::connect(broker.port(), "anomalyd/alerts/#");
    let mut daemon = Daemon::start(&cfg, metrics_port, &[]);
    daemon.wait_note("READY=1", Duration::from_secs(60));

    let faulty = bearing_fault(600);
    publish_frames(broker.port(), "pump-001", &faulty);
    let msgs = sub.wait_for(2, Duration::from_secs(60));
    assert_eq!(
        alarms_of(&msgs),
        [
            ("anomaly".into(), "raised".into(), None),
            ("anomaly".into(), "cleared".into(), None)
        ]
    );
    let r = msgs[0].json();
    assert_eq!(r["asset"], "pump-001");
    assert_eq!(r["model"], "pump");
    assert!(
        r["score"].as_f64().unwrap() > r["threshold"].as_f64().unwrap(),
        "{r}"
    );
    assert!(r["probability"].as_f64().is_some(), "{r}");
    assert!(!r["top_channels"].as_array().unwrap().is_empty(), "{r}");
    assert_eq!(r["active"], serde_json::json!(["anomaly"]));
    let c = msgs[1].json();
    assert_eq!(c["episode_start_ns"], r["episode_start_ns"]);
    assert!(c["duration_s"].as_f64().unwrap() > 0.0);
    let fault_start_ns = START_NS + 300 * 1_000_000_000;
    assert!(r["time_ns"].as_i64().unwrap() >= fault_start_ns);

    // The endpoint was down: the daemon kept trying.
    wait_until(Duration::from_secs(30), "failed webhook attempts", || {
        daemon
            .metric("anomalyd_alert_output_failures_total{output=\"oncall\"}")
            .is_some_and(|v| v >= 1.0)
    });
    let hook = WebhookServer::start(hook_port);
    let got = hook.wait_for("both alerts", Duration::from_secs(30), |r| r.len() >= 2);
    assert_eq!(got.len(), 2, "each alert once");
    for (req, mqtt) in got.iter().zip(&msgs) {
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/alerts");
        assert_eq!(req.header("authorization"), Some("Bearer s3cret"));
        assert_eq!(req.header("content-type"), Some("application/json"));
        assert_eq!(req.json(), mqtt.json(), "the same message on both outputs");
    }
    wait_until(Duration::from_secs(10), "delivered counters", || {
        daemon.metric("anomalyd_alert_output_delivered_total{output=\"oncall\"}") == Some(2.0)
            && daemon.metric("anomalyd_alert_output_delivered_total{output=\"hmi\"}") == Some(2.0)
    });
    assert_eq!(
        daemon.metric("anomalyd_alert_output_pending{output=\"oncall\"}"),
        Some(0.0)
    );
}

#[test]
fn an_alert_raised_before_a_kill_9_is_delivered_after_the_restart() {
    let broker = Mosquitto::start();
    let vm = VictoriaMetrics::start();
    let metrics_port = free_port();
    let hook_port = free_port();
    let state = tempfile::tempdir().unwrap();
    let cfg = DaemonConfig::new(broker.port(), &vm.url(), metrics_port)
        .quality_alarms(0, 0)
        .webhook_output("oncall", &format!("http://127.0.0.1:{hook_port}/"), None)
        .state_dir(state.path())
        .to_toml();
    let mut daemon = Daemon::start(&cfg, metrics_port, &[]);
    daemon.wait_note("READY=1", Duration::from_secs(60));
    let faulty = bearing_fault(380);
    publish_frames(broker.port(), "pump-001", &faulty);
    wait_until(Duration::from_secs(60), "a raised alert waiting", || {
        daemon.metric("anomalyd_alert_output_pending{output=\"oncall\"}") >= Some(1.0)
    });
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();

    let hook = WebhookServer::start(hook_port);
    let mut again = Daemon::start(&cfg, metrics_port, &[]);
    again.wait_note("READY=1", Duration::from_secs(60));
    let got = hook.wait_for("the raised alert", Duration::from_secs(30), |r| {
        r.iter().any(|q| q.json()["state"] == "raised")
    });
    let raised: Vec<_> = got
        .iter()
        .filter(|q| q.json()["state"] == "raised")
        .collect();
    let start = raised[0].json()["episode_start_ns"].clone();
    assert!(
        raised.iter().all(|q| q.json()["episode_start_ns"] == start),
        "one episode"
    );
    assert_eq!(raised[0].json()["asset"], "pump-001");
}

/// The MQTT output's broker (here one of its own) is down when the alert
/// is raised: the alert is published once it is back, retained, so an HMI
/// that connects then sees it.
#[test]
fn an_alert_waits_for_the_alert_broker_to_come_back() {
    let broker = Mosquitto::start();
    let mut hmi_broker = Mosquitto::start();
    let vm = VictoriaMetrics::start();
    let metrics_port = free_port();
    let cfg = DaemonConfig::new(broker.port(), &vm.url(), metrics_port)
        .quality_alarms(0, 0)
        .mqtt_alert_output_to("scada", hmi_broker.port())
        .to_toml();
    hmi_broker.stop();
    let mut daemon = Daemon::start(&cfg, metrics_port, &[]);
    daemon.wait_note("READY=1", Duration::from_secs(60));
    publish_frames(broker.port(), "pump-001", &bearing_fault(380));
    wait_until(
        Duration::from_secs(60),
        "failed publishes to the alert broker",
        || {
            daemon
                .metric("anomalyd_alert_output_failures_total{output=\"scada\"}")
                .is_some_and(|v| v >= 1.0)
                && daemon.metric("anomalyd_alert_output_pending{output=\"scada\"}") >= Some(1.0)
        },
    );
    hmi_broker.start_again();
    wait_until(Duration::from_secs(30), "the alert delivered", || {
        daemon.metric("anomalyd_alert_output_delivered_total{output=\"scada\"}") >= Some(1.0)
    });
    let late = MqttSubscriber::connect(hmi_broker.port(), "anomalyd/alerts/#");
    let got = late.wait_for(1, Duration::from_secs(10));
    assert!(got[0].retain);
    assert_eq!(got[0].topic, ALERT_TOPIC);
    assert_eq!(
        alarms_of(&got)[0],
        ("anomaly".into(), "raised".into(), None)
    );
}

/// `check-config` builds the alert outputs without connecting: a bad
/// output key or a missing token file is refused with exit code 78, named;
/// a good one is listed.
/// One TLS stack for everything: frames come in over MQTT with TLS and
/// alerts leave for an HTTPS webhook whose certificate is verified against
/// the output's own `ca_file`. A second output to the same server without
/// that CA refuses the certificate and never delivers.
#[test]
fn alerts_reach_an_https_webhook_verified_by_its_ca_file_with_mqtt_over_tls() {
    let broker = Mosquitto::builder().tls(true).start();
    let vm = VictoriaMetrics::start();
    let metrics_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::generate(&dir.path().join("webhook-tls"));
    let hook = WebhookServer::start_tls(0, &certs);
    let cfg = DaemonConfig::new(broker.port(), &vm.url(), metrics_port)
        .mqtt_tls(broker.ca_file())
        .quality_alarms(0, 0)
        .webhook_output("verified", &hook.url("/verified"), None)
        .alert_output_ca_file("verified", &certs.ca_cert)
        .webhook_output("unverified", &hook.url("/unverified"), None)
        .to_toml();
    let mut daemon = Daemon::start(&cfg, metrics_port, &[]);
    daemon.wait_note("READY=1", Duration::from_secs(60));

    let frames = frame_messages("pump-001", &bearing_fault(600));
    mqtt_publish_with(broker.mqtt_options(&client_id("pub")), &frames, 1);
    let got = hook.wait_for("both alerts", Duration::from_secs(60), |r| r.len() >= 2);
    let seen: Vec<(&str, String)> = got
        .iter()
        .map(|r| (r.path.as_str(), r.json()["state"].to_string()))
        .collect();
    assert_eq!(
        seen,
        [
            ("/verified", "\"raised\"".to_string()),
            ("/verified", "\"cleared\"".to_string())
        ]
    );
    wait_until(Duration::from_secs(30), "refused handshakes", || {
        daemon
            .metric("anomalyd_alert_output_failures_total{output=\"unverified\"}")
            .is_some_and(|v| v >= 1.0)
    });
    assert!(hook.requests().iter().all(|r| r.path == "/verified"));
    assert_eq!(
        daemon
            .metric("anomalyd_alert_output_delivered_total{output=\"unverified\"}")
            .unwrap_or(0.0),
        0.0
    );
    let log = daemon.log();
    assert!(log.contains("UnknownIssuer"), "{log}");
    assert!(daemon.terminate(Duration::from_secs(20)).success());
}

#[test]
fn check_config_refuses_a_bad_alert_output_and_lists_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    let run = |cfg: &DaemonConfig| {
        let path = dir.path().join("anomalyd.toml");
        std::fs::write(&path, cfg.to_toml()).unwrap();
        std::process::Command::new(anomalyd_bin())
            .args(["check-config", "--config"])
            .arg(&path)
            .env("ORT_DYLIB_PATH", ort_dylib())
            .output()
            .unwrap()
    };
    let base = DaemonConfig::new(free_port(), "http://127.0.0.1:9", free_port());
    let missing = dir.path().join("no-such-token");
    let out = run(&base
        .clone()
        .webhook_output("oncall", "http://127.0.0.1:9/", Some(&missing)));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("oncall") && err.contains("no-such-token"),
        "{err}"
    );
    let out = run(&base.clone().webhook_output("oncall", "ftp://x/", None));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("alerts.outputs[0].url"), "{err}");
    let out = run(&base.mqtt_alert_output("hmi"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("alert output \"hmi\" (Mqtt) -> anomalyd/alerts/{asset}"),
        "{text}"
    );
}

/// Latency from the raising (or clearing) window's last reading leaving
/// the publisher to the alert arriving at an MQTT subscriber and at a
/// webhook. A measurement, not a check:
/// `cargo test -p anomalyd --test integration alerts::outputs::alert_delivery_latency -- --ignored --nocapture`
#[test]
#[ignore]
fn alert_delivery_latency() {
    let broker = Mosquitto::start();
    let vm = VictoriaMetrics::start();
    let metrics_port = free_port();
    let hook = WebhookServer::start(0);
    let cfg = DaemonConfig::new(broker.port(), &vm.url(), metrics_port)
        .quality_alarms(0, 0)
        .mqtt_alert_output("hmi")
        .webhook_output("oncall", &hook.url("/"), None)
        .to_toml();
    let sub = MqttSubscriber::connect(broker.port(), "anomalyd/alerts/#");
    let mut daemon = Daemon::start(&cfg, metrics_port, &[]);
    daemon.wait_note("READY=1", Duration::from_secs(60));
    const ASSETS: usize = 5;
    let logs: Vec<SyntheticLog> = (0..ASSETS)
        .map(|a| {
            let at = 250 + 40 * a;
            let fault = Some((FaultKind::Bearing, at..at + 120));
            generate(600, 20 + a as u64, START_NS, 1_000_000_000, fault)
        })
        .collect();
    let payloads: Vec<Vec<String>> = logs.iter().map(frame_payloads).collect();
    // One connection, rows paced 20 ms apart; the instant each row left.
    let opts = rumqttc::MqttOptions::new(client_id("lat-pub"), "127.0.0.1", broker.port());
    let (client, mut conn) = rumqttc::Client::new(opts, 100);
    let events = std::thread::spawn(move || for _ in conn.iter().take_while(Result::is_ok) {});
    let mut sent_at = Vec::new();
    for row in 0..600 {
        for (a, p) in payloads.iter().enumerate() {
            let topic = format!("sensors/lat-{a}");
            client
                .publish(topic, rumqttc::QoS::AtLeastOnce, false, p[row].clone())
                .unwrap();
        }
        sent_at.push(std::time::Instant::now());
        std::thread::sleep(Duration::from_millis(20));
    }
    let msgs = sub.wait_for(2 * ASSETS, Duration::from_secs(60));
    let hooks = hook.wait_for("every alert", Duration::from_secs(60), |r| {
        r.len() >= 2 * ASSETS
    });
    let _ = client.disconnect();
    let _ = events.join();
    let row_of = |j: &serde_json::Value| {
        ((j["time_ns"].as_i64().unwrap() - START_NS) / 1_000_000_000) as usize
    };
    let mut mqtt_ms: Vec<f64> = msgs
        .iter()
        .map(|m| (m.at - sent_at[row_of(&m.json())]).as_secs_f64() * 1e3)
        .collect();
    let mut hook_ms: Vec<f64> = hooks
        .iter()
        .map(|r| (r.at - sent_at[row_of(&r.json())]).as_secs_f64() * 1e3)
        .collect();
    for v in [&mut mqtt_ms, &mut hook_ms] {
        v.sort_by(f64::total_cmp);
    }
    let summary = |v: &[f64]| {
        format!(
            "n={} min={:.1} median={:.1} max={:.1} ms",
            v.len(),
            v[0],
            v[v.len() / 2],
            v[v.len() - 1]
        )
    };
    eprintln!("raising window -> MQTT subscriber: {}", summary(&mqtt_ms));
    eprintln!("raising window -> webhook receiver: {}", summary(&hook_ms));
}
