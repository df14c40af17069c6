//! README, "Retrain on your data", end to end against a real InfluxDB
//! 1.6.7 and a real broker: the daemon records normal operation
//! (`[record]`, `api = "v1"`), `anomalyd-train --influx-url` trains from
//! that measurement, the same frames exported as CSV train a second model
//! with the same options and seed, both models score alike, and the
//! daemon takes the InfluxDB-trained one in on SIGHUP.

use std::path::Path;
use std::time::{Duration, Instant};

use anomalyd::core::contract::ModelMetadata;
use anomalyd::core::synth::generate;

use crate::util::*;

const DB: &str = "anomalyd";
const MEASUREMENT: &str = "anomalyd_frames";
const ASSET: &str = "pump-001";
/// The model options both trainings share: small, so each trains in
/// about a second, with the seed fixed.
const OPTIONS: &str = "--name pump --model-version 2 --seed 7 --window 16 --filters 8,4 --kernel 5 --epochs 4 --batch-size 16";

/// The recorded frames of `ASSET` as InfluxQL returns them (fields in name
/// order, time in ns), written as a CSV log: `timestamp` then one column
/// per channel.
fn export_csv(influx: &Influxd, path: &Path) -> usize {
    let doc = influx.query(
        Some(DB),
        &format!("SELECT * FROM {MEASUREMENT} WHERE asset = '{ASSET}' GROUP BY *"),
    );
    let series = &doc["results"][0]["series"];
    assert_eq!(series.as_array().map(Vec::len), Some(1), "{doc}");
    let columns: Vec<&str> = series[0]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(columns[0], "time");
    let mut csv = format!("timestamp,{}\n", columns[1..].join(","));
    let rows = series[0]["values"].as_array().unwrap();
    for row in rows {
        let cells: Vec<String> = row
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().map(|x| x.to_string()).unwrap_or_default())
            .collect();
        csv.push_str(&format!("{}\n", cells.join(",")));
    }
    std::fs::write(path, csv).unwrap();
    rows.len()
}

fn metadata(path: &Path) -> ModelMetadata {
    anomalyd::model::read_metadata(path).expect("the trainer wrote a model file")
}

/// `[record]` → `anomalyd-train --influx-url` → same model as from CSV →
/// `install` + SIGHUP: the daemon scores with it.
#[test]
fn a_model_trained_from_recorded_frames_matches_its_csv_twin_and_reloads_by_sighup() {
    let Some(trainer) = trainer_bin() else {
        return;
    };
    let started = Instant::now();
    let influx = Influxd::start(DB);
    let broker = Mosquitto::start();
    let metrics_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("pump.onnx");
    std::fs::copy(shipped_model(), &model).unwrap();
    let cfg = DaemonConfig::new(broker.port(), &influx.url(), metrics_port)
        .influx_v1(DB)
        .state_dir(&dir.path().join("state"))
        .model_path(&model)
        .record(MEASUREMENT)
        .to_toml();
    let mut daemon = Daemon::start(&cfg, metrics_port, &[]);
    daemon.wait_note("READY=1", Duration::from_secs(60));

    // Normal operation, recorded by the daemon.
    let rows = 600;
    let log = generate(rows + 40, 31, START_NS, 1_000_000_000, None);
    publish_frames(broker.port(), ASSET, &log.slice(0..rows));
    influx.wait_for_rows(
        DB,
        &format!("SELECT current FROM {MEASUREMENT} WHERE asset = '{ASSET}'"),
        rows,
        Duration::from_secs(60),
    );

    // The README's command, against the recorded measurement.
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (from_db, from_csv, csv) = (path("pump-v2.onnx"), path("csv.onnx"), path("frames.csv"));
    let url = influx.url();
    let mut args = vec![
        "--influx-url",
        &url,
        "--database",
        DB,
        "--measurement",
        MEASUREMENT,
        "--tag",
        "asset=pump-001",
        "--range",
        "2026-01-01T00:00:00Z..2026-01-02T00:00:00Z",
    ];
    let (report_db, report_csv) = (path("report-v2"), path("report-csv"));
    args.extend(["--out", &from_db, "--report", &report_db]);
    args.extend(OPTIONS.split(' '));
    let trained = run_trainer(&trainer, &args);
    let said = String::from_utf8_lossy(&trained.stderr);
    assert!(said.contains(&format!("read {rows} rows of")), "{said}");

    // The same frames as CSV, the same options and seed.
    assert_eq!(export_csv(&influx, Path::new(&csv)), rows);
    let mut args = vec!["--input", &csv, "--out", &from_csv, "--report", &report_csv];
    args.extend(OPTIONS.split(' '));
    run_trainer(&trainer, &args);

    let (a, b) = (
        metadata(Path::new(&from_db)),
        metadata(Path::new(&from_csv)),
    );
    assert_eq!(a.version, "2");
    assert_eq!(a.channels, b.channels);
    assert_eq!(a.training.rows, rows);
    assert_eq!(a.training.rows, b.training.rows);
    assert_eq!(a.training.data_fingerprint, b.training.data_fingerprint);
    assert_eq!(a.normaliser, b.normaliser);
    assert_eq!(a.threshold.value, b.threshold.value);
    assert_eq!(a.training.validation_loss, b.training.validation_loss);
    // Both score the recorded frames alike, window by window.
    let scores_db = replay_scores(
        Path::new(&from_db),
        Path::new(&csv),
        ASSET,
        &dir.path().join("scores-db.csv"),
    );
    let scores_csv = replay_scores(
        Path::new(&from_csv),
        Path::new(&csv),
        ASSET,
        &dir.path().join("scores-csv.csv"),
    );
    assert_eq!(scores_db.len(), rows);
    let scored = scores_db.iter().filter(|r| r.1.is_some()).count();
    assert_eq!(scored, rows + 1 - 16, "one score per full window");
    for (x, y) in scores_db.iter().zip(&scores_csv) {
        assert_eq!(x.0, y.0);
        match (x.1, y.1) {
            (Some(p), Some(q)) => assert!(
                (p - q).abs() <= 1e-6 * p.abs().max(q.abs()).max(1e-6),
                "at {}: {p} and {q}",
                x.0
            ),
            (p, q) => assert_eq!(p.is_some(), q.is_some(), "at {}", x.0),
        }
    }

    // `install` the new model and `systemctl reload`.
    std::fs::copy(&from_db, &model).unwrap();
    daemon.signal("HUP");
    wait_until(Duration::from_secs(20), "reload done", || {
        daemon.metric("anomalyd_reloads_total") == Some(1.0)
    });
    assert_eq!(
        daemon.metric("anomalyd_model_info{model=\"pump\",version=\"2\",provider=\"cpu\"}"),
        Some(1.0),
        "{}",
        daemon.metrics()
    );
    assert_eq!(daemon.metric("anomalyd_reload_failures_total"), Some(0.0));
    // New frames are scored by it: their points carry its threshold.
    publish_frames(broker.port(), ASSET, &log.slice(rows..rows + 40));
    let after = influx.wait_for_rows(
        DB,
        &format!(
            "SELECT score, threshold FROM anomaly_score WHERE asset = '{ASSET}' AND time >= {}",
            START_NS + rows as i64 * 1_000_000_000
        ),
        // A window of 16 fills again at the latest with the 16th new frame.
        40 + 1 - 16,
        Duration::from_secs(30),
    );
    for (ts, v) in &after {
        let threshold = v[1].as_f64().map(|t| t as f32);
        assert_eq!(threshold, Some(a.threshold.value), "score at {ts}");
    }
    assert_eq!(daemon.metric("anomalyd_points_dropped_total"), Some(0.0));
    assert!(daemon.terminate(Duration::from_secs(20)).success());
    eprintln!(
        "retrain round trip: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
