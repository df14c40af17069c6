//! Data-quality alarms end to end: `stale` (asset and channel, across a
//! restart), `stuck`, and why an asset gets no scores.

use std::time::Duration;

use anomalyd::core::synth::{PUMP_CHANNELS, generate};

use super::{ALERT_TOPIC, alarms_of, frames};
use crate::util::*;

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
