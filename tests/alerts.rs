//! Alarms reach the plant, through the binary with real mosquitto,
//! VictoriaMetrics and an HTTP server in the test: a silent asset raises
//! and clears `stale` (with its last window closed by the clock) in
//! InfluxDB, on the MQTT alert topic, retained for a late subscriber, and
//! on the status page; a silent channel is named; an anomaly alert reaches
//! an MQTT subscriber and a webhook that was down when it was raised; an
//! alert raised before a `kill -9` is delivered after the restart.

use std::time::Duration;

use anomalyd::core::synth::{FaultKind, PUMP_CHANNELS, SyntheticLog, generate};

use crate::util::*;

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

#[test]
fn a_silent_asset_raises_stale_with_its_last_window_closed_and_clears_when_data_returns() {
    let broker = Mosquitto::start();
    let vm = VictoriaMetrics::start();
    let metrics_port = free_port();
    let cfg = DaemonConfig::new(broker.port(), &vm.url(), metrics_port)
        .quality_alarms(3, 0)
        .mqtt_alert_output("hmi")
        .to_toml();
    let sub = MqttSubscriber::connect(broker.port(), "anomalyd/alerts/#");
    let mut daemon = Daemon::start(&cfg, metrics_port, &[]);
    daemon.wait_note("READY=1", Duration::from_secs(60));

    // 60 rows; the last one lacks a channel, so its frame waits for it:
    // only the clock can close it.
    let log = generate(200, 5, START_NS, 1_000_000_000, None);
    let last = PUMP_CHANNELS[PUMP_CHANNELS.len() - 1];
    let mut first = frames(&log, 0, None);
    first.truncate(59);
    first.extend(frames(&log, 59, Some(last)).into_iter().take(1));
    mqtt_publish_many(broker.port(), &first, 1);

    let scores = vm.wait_for_points(
        "anomaly_score_score{asset=\"pump-001\"}",
        windows_for(60),
        Duration::from_secs(60),
    );
    assert_eq!(
        point_count(&scores),
        windows_for(60),
        "the last window is scored"
    );
    let raised = sub.wait_for(1, Duration::from_secs(30));
    assert_eq!(raised[0].topic, ALERT_TOPIC);
    let j = raised[0].json();
    assert_eq!(
        alarms_of(&raised)[0],
        ("stale".into(), "raised".into(), None)
    );
    assert_eq!(j["model"], "pump");
    assert_eq!(j["active"], serde_json::json!(["stale"]));
    assert!(j["duration_s"].as_f64().unwrap() >= 3.0, "{j}");
    let in_db = vm.wait_for_points(
        "anomaly_alert_duration_s{asset=\"pump-001\",alarm=\"stale\",state=\"raised\"}",
        1,
        Duration::from_secs(30),
    );
    assert_eq!(point_count(&in_db), 1);
    let status = http_get(&format!("http://127.0.0.1:{metrics_port}/api/status")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&status.body).unwrap();
    assert!(
        doc["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["alarm"] == "stale" && a["asset"] == "pump-001"),
        "{}",
        status.body
    );

    // Data returns: the alarm clears.
    mqtt_publish_many(broker.port(), &frames(&log, 60, None)[..10], 1);
    let msgs = sub.wait_for(2, Duration::from_secs(30));
    assert_eq!(
        alarms_of(&msgs)[1],
        ("stale".into(), "cleared".into(), None)
    );
    assert_eq!(msgs[1].json()["active"], serde_json::json!([]));
    vm.wait_for_points(
        "anomaly_alert_duration_s{asset=\"pump-001\",alarm=\"stale\",state=\"cleared\"}",
        1,
        Duration::from_secs(30),
    );

    // An HMI that connects now sees the asset's current state.
    let late = MqttSubscriber::connect(broker.port(), "anomalyd/alerts/#");
    let retained = late.wait_for(1, Duration::from_secs(10));
    assert!(retained[0].retain);
    assert_eq!(retained[0].topic, ALERT_TOPIC);
    assert_eq!(retained[0].json()["state"], "cleared");

    // One channel goes silent while the others keep coming, at 10 rows/s
    // (a sensor's pace, not a wait): the alarm names that channel.
    let mut row = 70;
    while !alarms_of(&sub.messages()).contains(&(
        "stale".into(),
        "raised".into(),
        Some(last.to_string()),
    )) {
        assert!(
            row < 200,
            "no stale alarm for {last}: {:?}",
            alarms_of(&sub.messages())
        );
        mqtt_publish_many(broker.port(), &frames(&log, row, Some(last))[..1], 1);
        row += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !alarms_of(&sub.messages())[2..].contains(&("stale".into(), "raised".into(), None)),
        "the asset itself kept talking"
    );
}

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

/// Latency from the raising (or clearing) window's last reading leaving
/// the publisher to the alert arriving at an MQTT subscriber and at a
/// webhook. A measurement, not a check:
/// `cargo test -p anomalyd --test integration alerts::alert_delivery_latency -- --ignored --nocapture`
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

/// A channel named differently from the model's: the daemon logs the name,
/// the status page lists it, and `tap` says what the model misses.
#[test]
fn a_channel_name_mismatch_shows_in_the_log_the_status_page_and_tap() {
    let broker = Mosquitto::start();
    let vm = VictoriaMetrics::start();
    let metrics_port = free_port();
    let cfg = DaemonConfig::new(broker.port(), &vm.url(), metrics_port)
        .quality_alarms(0, 0)
        .to_toml();
    let mut daemon = Daemon::start(&cfg, metrics_port, &[]);
    daemon.wait_note("READY=1", Duration::from_secs(60));
    let good = PUMP_CHANNELS[0];
    let renamed = good.to_uppercase();
    let log = generate(20, 3, START_NS, 1_000_000_000, None);
    let msgs: Vec<(String, Vec<u8>)> = frame_payloads(&log)
        .into_iter()
        .map(|p| {
            (
                "sensors/pump-009".to_string(),
                p.replace(&format!("\"{good}\""), &format!("\"{renamed}\""))
                    .into_bytes(),
            )
        })
        .collect();
    mqtt_publish_many(broker.port(), &msgs, 1);

    wait_until(Duration::from_secs(30), "the drop in /api/status", || {
        let Ok(r) = http_get(&format!("http://127.0.0.1:{metrics_port}/api/status")) else {
            return false;
        };
        let doc: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        doc["drops"].as_array().unwrap().iter().any(|d| {
            d["asset"] == "pump-009"
                && d["reason"] == "unknown_channel"
                && d["names"] == serde_json::json!([renamed])
        })
    });
    let text = daemon.log();
    assert!(
        text.lines()
            .any(|l| l.contains("give no score") && l.contains(&renamed) && l.contains("pump-009")),
        "{text}"
    );

    // tap, listening while the frames come in again.
    let config = daemon.dir.path().join("anomalyd.toml");
    let out = daemon.dir.path().join("tap.out");
    let err = daemon.dir.path().join("tap.err");
    let mut tap = std::process::Command::new(anomalyd_bin())
        .args(["tap", "--seconds", "3", "--config"])
        .arg(&config)
        .env("ORT_DYLIB_PATH", ort_dylib())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(30), "tap listening", || {
        std::fs::read_to_string(&err)
            .unwrap_or_default()
            .contains("listening")
    });
    mqtt_publish_many(broker.port(), &msgs[..5], 1);
    let status = tap.wait().unwrap();
    let report = std::fs::read_to_string(&out).unwrap();
    assert!(
        status.success(),
        "{report}\n{}",
        std::fs::read_to_string(&err).unwrap()
    );
    assert!(report.contains("asset pump-009"), "{report}");
    assert!(report.contains("model pump"), "{report}");
    assert!(
        report.contains(&format!("MISSING: the model needs [\"{good}\"]")),
        "{report}"
    );
    assert!(
        report.contains(&format!("UNKNOWN: [\"{renamed}\"]")),
        "{report}"
    );
}

/// A channel that freezes raises `stuck` naming it, in InfluxDB and on the
/// alert topic; it clears when the value moves again.
#[test]
fn a_frozen_channel_raises_stuck() {
    let broker = Mosquitto::start();
    let vm = VictoriaMetrics::start();
    let metrics_port = free_port();
    let cfg = DaemonConfig::new(broker.port(), &vm.url(), metrics_port)
        .quality_alarms(0, 10)
        .mqtt_alert_output("hmi")
        .to_toml();
    let sub = MqttSubscriber::connect(broker.port(), "anomalyd/alerts/#");
    let mut daemon = Daemon::start(&cfg, metrics_port, &[]);
    daemon.wait_note("READY=1", Duration::from_secs(60));
    let frozen = PUMP_CHANNELS[2];
    let log = generate(60, 8, START_NS, 1_000_000_000, None);
    // From row 20 to 49 the channel repeats row 20's value.
    let held = log.values[20][2];
    let msgs: Vec<(String, Vec<u8>)> = frame_payloads(&log)
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let mut v: serde_json::Value = serde_json::from_str(&p).unwrap();
            if (20..50).contains(&i) {
                v[frozen] = held.into();
            }
            ("sensors/pump-001".to_string(), v.to_string().into_bytes())
        })
        .collect();
    mqtt_publish_many(broker.port(), &msgs, 1);
    let stuck = |m: &[Received]| alarms_of(m).iter().filter(|a| a.0 == "stuck").count();
    wait_until(Duration::from_secs(60), "stuck raised and cleared", || {
        stuck(&sub.messages()) >= 2
    });
    let got = sub.messages();
    let alarms: Vec<_> = alarms_of(&got)
        .into_iter()
        .filter(|a| a.0 == "stuck")
        .collect();
    assert_eq!(
        alarms,
        [
            ("stuck".into(), "raised".into(), Some(frozen.to_string())),
            ("stuck".into(), "cleared".into(), Some(frozen.to_string()))
        ]
    );
    let raised = got
        .iter()
        .map(Received::json)
        .find(|j| j["alarm"] == "stuck" && j["state"] == "raised")
        .unwrap();
    assert_eq!(raised["value"].as_f64(), Some(held));
    assert_eq!(raised["duration_s"].as_f64(), Some(10.0));
    assert_eq!(
        raised["episode_start_ns"].as_i64(),
        Some(START_NS + 20 * 1_000_000_000)
    );
    vm.wait_for_points(
        &format!("anomaly_alert_value{{asset=\"pump-001\",alarm=\"stuck\",channel=\"{frozen}\"}}"),
        2,
        Duration::from_secs(30),
    );
}

/// `check-config` builds the alert outputs without connecting: a bad
/// output key or a missing token file is refused with exit code 78, named;
/// a good one is listed.
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

/// A `stale` alarm raised before a restart is cleared by the data that
/// comes after it, so the retained state an HMI sees does not stay stale.
#[test]
fn a_stale_alarm_from_before_a_restart_clears_when_data_returns() {
    let broker = Mosquitto::start();
    let vm = VictoriaMetrics::start();
    let metrics_port = free_port();
    let state = tempfile::tempdir().unwrap();
    let cfg = DaemonConfig::new(broker.port(), &vm.url(), metrics_port)
        .quality_alarms(3, 0)
        .mqtt_alert_output("hmi")
        .state_dir(state.path())
        .to_toml();
    let sub = MqttSubscriber::connect(broker.port(), "anomalyd/alerts/#");
    let mut daemon = Daemon::start(&cfg, metrics_port, &[]);
    daemon.wait_note("READY=1", Duration::from_secs(60));
    let log = generate(80, 5, START_NS, 1_000_000_000, None);
    mqtt_publish_many(broker.port(), &frames(&log, 0, None)[..50], 1);
    let raised = sub.wait_for(1, Duration::from_secs(30));
    assert_eq!(
        alarms_of(&raised)[0],
        ("stale".into(), "raised".into(), None)
    );
    assert!(daemon.terminate(Duration::from_secs(20)).success());

    let mut again = Daemon::start(&cfg, metrics_port, &[]);
    again.wait_note("READY=1", Duration::from_secs(60));
    mqtt_publish_many(broker.port(), &frames(&log, 50, None), 1);
    let msgs = sub.wait_for(2, Duration::from_secs(30));
    assert_eq!(
        alarms_of(&msgs)[1],
        ("stale".into(), "cleared".into(), None)
    );
    let c = msgs[1].json();
    assert_eq!(c["episode_start_ns"], raised[0].json()["episode_start_ns"]);
    assert_eq!(c["active"], serde_json::json!([]));
}
