//! The product path end to end, through the binary with real mosquitto
//! and VictoriaMetrics: frames and per-channel topics in, scores and alerts
//! in the database equal to what `replay` computes, assets bound to models,
//! and `replay --influx` backfilling the records a live run writes.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anomalyd::core::synth::{FaultKind, PUMP_CHANNELS, SyntheticLog, generate};

use crate::util::*;

const ROWS: usize = 600;

fn replay_scores_of(dir: &Path, log: &SyntheticLog) -> Vec<ReplayRow> {
    let input = dir.join("input.csv");
    std::fs::write(&input, log.to_csv()).unwrap();
    replay_scores(
        &shipped_model(),
        &input,
        "pump-001",
        &dir.join("scores.csv"),
    )
}

/// The whole product path: MQTT in, scores and alerts in the database,
/// equal to what `replay` computes from the same rows.
#[test]
fn scores_and_alerts_reach_the_database_and_match_replay() {
    let broker = Mosquitto::start();
    let vm = VictoriaMetrics::start();
    let metrics_port = free_port();
    let cfg = DaemonConfig::new(broker.port(), &vm.url(), metrics_port).to_toml();
    let mut daemon = Daemon::start(&cfg, metrics_port, &[]);
    daemon.wait_note("READY=1", Duration::from_secs(60));

    let faulty = generate(
        ROWS,
        11,
        START_NS,
        1_000_000_000,
        Some((FaultKind::Bearing, 300..420)),
    );
    let healthy = generate(ROWS, 12, START_NS, 1_000_000_000, None);
    publish_frames(broker.port(), "pump-001", &faulty);
    publish_frames(broker.port(), "pump-002", &healthy);

    // Every row is a whole frame on its tick and closes at once: a window
    // ends at every row from the window length on.
    let expected = windows_for(ROWS);
    let live = vm.wait_for_points(
        "anomaly_score_score{asset=\"pump-001\"}",
        expected,
        Duration::from_secs(60),
    );
    assert_eq!(point_count(&live), expected, "{:?}", live);
    let thr = vm.wait_for_points(
        "anomaly_score_threshold{asset=\"pump-002\"}",
        expected,
        Duration::from_secs(30),
    );
    assert_eq!(point_count(&thr), expected);
    for ch in PUMP_CHANNELS {
        let s = vm.export(&format!("anomaly_score_err_{ch}{{asset=\"pump-001\"}}"));
        assert_eq!(point_count(&s), expected, "err_{ch}");
    }
    assert_eq!(live[0].label("model"), Some("pump"));

    // The live scores equal replay's for the same rows and timestamps.
    let replayed = replay_scores_of(daemon.dir.path(), &faulty);
    assert_eq!(replayed.len(), ROWS);
    assert!(
        replayed[..WINDOW - 1]
            .iter()
            .all(|r| r.1.is_none() && r.2 == 0)
    );
    let by_ts: std::collections::HashMap<i64, f64> = replayed
        .iter()
        .filter_map(|(ts, s, _)| s.map(|s| (ts / 1_000_000, s)))
        .collect();
    let mut compared = 0;
    for (ts_ms, v) in live[0].points() {
        let r = by_ts
            .get(&ts_ms)
            .unwrap_or_else(|| panic!("replay has no score at {ts_ms}"));
        assert!(
            (r - v).abs() <= 1e-4 * r.abs().max(1e-3),
            "live {v} vs replay {r} at {ts_ms}"
        );
        compared += 1;
    }
    assert_eq!(compared, expected);

    // An alert was raised inside the fault and cleared after it; the
    // healthy pump raised none.
    let raised = vm.wait_for_points(
        "anomaly_alert_score{asset=\"pump-001\",state=\"raised\"}",
        1,
        Duration::from_secs(30),
    );
    let t_raise = raised[0].points()[0].0;
    let fault_start_ms = START_NS / 1_000_000 + 300_000;
    let fault_end_ms = START_NS / 1_000_000 + 420_000;
    assert!(
        (fault_start_ms..fault_end_ms).contains(&t_raise),
        "raised at {t_raise}, fault {fault_start_ms}..{fault_end_ms}"
    );
    let cleared = vm.wait_for_points(
        "anomaly_alert_score{asset=\"pump-001\",state=\"cleared\"}",
        1,
        Duration::from_secs(30),
    );
    assert!(cleared[0].points()[0].0 > fault_end_ms);
    assert!(raised[0].label("top_channel").is_some());
    assert!(
        vm.export("anomaly_alert_score{asset=\"pump-002\"}")
            .is_empty()
    );
    // The stored anomalous flag agrees with replay's per-row decision.
    let flags = vm.export("anomaly_score_anomalous{asset=\"pump-001\"}");
    let live_anomalous = flags[0].points().iter().filter(|p| p.1 > 0.5).count();
    let replay_anomalous = replayed[..ROWS - 1].iter().filter(|r| r.2 == 1).count();
    assert_eq!(live_anomalous, replay_anomalous);

    let m = daemon.metrics();
    assert!(
        m.contains(&format!("anomalyd_windows_scored_total {}", 2 * expected)),
        "{m}"
    );
    assert!(m.contains("anomalyd_alerts_raised_total 1"), "{m}");
    assert!(m.contains("provider=\"cpu\""), "{m}");

    let status = daemon.terminate(Duration::from_secs(20));
    assert!(status.success(), "exit {status}; log:\n{}", daemon.log());
    daemon.wait_note("STOPPING=1", Duration::from_secs(1));
}

/// Per-channel topics: bare numbers (receive time) and JSON values with
/// their own timestamps; bad payloads and unknown topics are counted.
#[test]
fn per_channel_topics_and_bad_input_are_counted() {
    let broker = Mosquitto::start();
    let vm = VictoriaMetrics::start();
    let metrics_port = free_port();
    let cfg = DaemonConfig::new(broker.port(), &vm.url(), metrics_port).to_toml();
    let mut daemon = Daemon::start(&cfg, metrics_port, &[]);
    daemon.wait_note("READY=1", Duration::from_secs(60));

    // JSON values with event time: 80 rows x 8 channels on site/{asset}/{channel}.
    let log = generate(80, 5, START_NS, 1_000_000_000, None);
    let mut msgs = Vec::new();
    for (ts, v) in log.timestamps.iter().zip(&log.values) {
        for (ch, x) in PUMP_CHANNELS.iter().zip(v) {
            let payload = serde_json::json!({"v": x, "time": ts / 1_000_000}).to_string();
            msgs.push((format!("site/pump-json/{ch}"), payload.into_bytes()));
        }
    }
    // Bare numbers (receive time).
    for ch in PUMP_CHANNELS {
        msgs.push((format!("plant/pump-num/{ch}"), b"1.25".to_vec()));
    }
    // Garbage of every kind.
    msgs.push(("plant/pump-num/current".into(), b"not a number".to_vec()));
    msgs.push(("plant/pump-num/current".into(), b"NaN".to_vec()));
    msgs.push(("sensors/pump-x".into(), b"{\"ts\": 1, ".to_vec()));
    // Matches the subscription plant/+/+ but not the mapping (empty asset).
    msgs.push(("plant//current".into(), b"1".to_vec()));
    msgs.push(("plant/pump-num/no_such_channel".into(), b"1".to_vec()));
    mqtt_publish_many(broker.port(), &msgs, 1);

    let expected = windows_for(80);
    let s = vm.wait_for_points(
        "anomaly_score_score{asset=\"pump-json\"}",
        expected,
        Duration::from_secs(60),
    );
    assert_eq!(point_count(&s), expected);
    wait_until(Duration::from_secs(20), "drop counters", || {
        daemon.metric("anomalyd_readings_dropped_total{reason=\"unknown_topic\"}") == Some(1.0)
    });
    let get = |r: &str| {
        daemon
            .metric(&format!(
                "anomalyd_readings_dropped_total{{reason=\"{r}\"}}"
            ))
            .unwrap_or(-1.0)
    };
    assert_eq!(get("bad_payload"), 2.0, "{}", daemon.metrics());
    assert_eq!(get("non_finite"), 1.0);
    assert_eq!(get("unknown_channel"), 1.0);
    // 80*8 JSON values + 8 numbers used.
    assert_eq!(
        daemon.metric("anomalyd_readings_used_total"),
        Some((80 * 8 + 8) as f64)
    );
    let status = daemon.terminate(Duration::from_secs(20));
    assert!(status.success());
}

/// Two models at once: assets are bound by pattern, and the `model` tag
/// says which one scored them. `replay --influx` backfills the same
/// records a live run writes.
#[test]
fn assets_bind_to_models_and_replay_backfills() {
    let broker = Mosquitto::start();
    let vm = VictoriaMetrics::start();
    let metrics_port = free_port();
    let cfg = DaemonConfig::new(broker.port(), &vm.url(), metrics_port)
        .extra_model("pump-b", &shipped_model())
        .asset("line-b-*", "pump-b", 5.0)
        .to_toml();
    let mut daemon = Daemon::start(&cfg, metrics_port, &[]);
    daemon.wait_note("READY=1", Duration::from_secs(60));
    let log = generate(WINDOW + 20, 9, START_NS, 1_000_000_000, None);
    publish_frames(broker.port(), "line-a-1", &log);
    publish_frames(broker.port(), "line-b-1", &log);
    let a = vm.wait_for_points(
        "anomaly_score_threshold{asset=\"line-a-1\"}",
        20,
        Duration::from_secs(60),
    );
    let b = vm.wait_for_points(
        "anomaly_score_threshold{asset=\"line-b-1\"}",
        20,
        Duration::from_secs(60),
    );
    assert_eq!(a[0].label("model"), Some("pump"));
    assert_eq!(b[0].label("model"), Some("pump-b"));
    assert!(
        b[0].points().iter().all(|p| (p.1 - 5.0).abs() < 1e-6),
        "per-asset threshold override"
    );
    assert!(a[0].points().iter().all(|p| (p.1 - 5.0).abs() > 1e-3));
    assert!(daemon.terminate(Duration::from_secs(20)).success());

    // Backfill: replay the same rows into the database under another asset.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("log.csv");
    std::fs::write(&input, log.to_csv()).unwrap();
    let cfg_path = dir.path().join("anomalyd.toml");
    std::fs::write(&cfg_path, &cfg).unwrap();
    let out = Command::new(anomalyd_bin())
        .args(["replay", "--influx", "--asset", "backfill-1", "--model"])
        .arg(shipped_model())
        .arg("--input")
        .arg(&input)
        .arg("--config")
        .arg(&cfg_path)
        .env("ORT_DYLIB_PATH", ort_dylib())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Replay closes the last frame at end of input: one window more than live.
    let back = vm.wait_for_points(
        "anomaly_score_score{asset=\"backfill-1\"}",
        21,
        Duration::from_secs(60),
    );
    assert_eq!(point_count(&back), 21);
    let live = vm.export("anomaly_score_score{asset=\"line-a-1\"}");
    let live_pts = live[0].points();
    for (l, r) in live_pts.iter().zip(back[0].points()) {
        assert_eq!(l.0, r.0);
        assert!(
            (l.1 - r.1).abs() <= 1e-4 * l.1.abs().max(1e-3),
            "{l:?} vs {r:?}"
        );
    }
}
