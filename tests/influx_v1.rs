//! The v1 write API against a real InfluxDB 1.6.7 (`influxd`): scores and
//! alerts read back with InfluxQL exactly once by timestamp, and every way
//! the database refuses writes loses nothing: an outage, a wrong password
//! (fixed by SIGHUP), a missing database, a point whose field type
//! conflicts (dead-lettered alone), a body over the server's limit (split).
//! `[record]` writes the aligned frames back as training data.

use std::collections::HashSet;
use std::time::Duration;

use anomalyd::core::synth::{FaultKind, SyntheticLog, generate};

use crate::util::*;

const DB: &str = "anomalyd";

/// A broker and the daemon writing to `influx` through v1, with a state
/// directory (spool, dead-letter file); `tweak` adjusts the config.
struct Run {
    broker: Mosquitto,
    daemon: Daemon,
    metrics_port: u16,
    state: tempfile::TempDir,
}

impl Run {
    fn start(
        influx: &Influxd,
        tweak: impl FnOnce(DaemonConfig, &std::path::Path) -> DaemonConfig,
    ) -> Run {
        let broker = Mosquitto::start();
        let metrics_port = free_port();
        let state = tempfile::tempdir().unwrap();
        let cfg = DaemonConfig::new(broker.port(), &influx.url(), metrics_port)
            .influx_v1(DB)
            .state_dir(state.path());
        let cfg = tweak(cfg, state.path()).to_toml();
        let mut daemon = Daemon::start(&cfg, metrics_port, &[]);
        daemon.wait_note("READY=1", Duration::from_secs(60));
        Run {
            broker,
            daemon,
            metrics_port,
            state,
        }
    }

    fn publish(&self, asset: &str, log: &SyntheticLog) {
        publish_frames(self.broker.port(), asset, log);
    }

    fn readyz(&self) -> (u16, String) {
        let r = http_get(&format!("http://127.0.0.1:{}/readyz", self.metrics_port)).unwrap();
        (r.status, r.body)
    }

    /// Nothing dropped, the sink healthy, and a clean exit.
    fn finish(mut self) {
        assert_eq!(
            self.daemon.metric("anomalyd_points_dropped_total"),
            Some(0.0)
        );
        assert_eq!(self.daemon.metric("anomalyd_sink_refusing"), Some(0.0));
        assert!(self.daemon.terminate(Duration::from_secs(20)).success());
    }
}

/// The pump with a bearing fault in rows 300..420 (one alert raised and cleared).
fn faulty_pump(rows: usize) -> SyntheticLog {
    generate(
        rows,
        11,
        START_NS,
        1_000_000_000,
        Some((FaultKind::Bearing, 300..420)),
    )
}

/// Asserts `asset`'s scores hold exactly the windows of `rows` frames,
/// each timestamp once.
fn assert_scores_exactly(influx: &Influxd, asset: &str, rows: usize) {
    let expected = windows_for(rows);
    let q = format!("SELECT score FROM anomaly_score WHERE asset = '{asset}'");
    let got = influx.wait_for_rows(DB, &q, expected, Duration::from_secs(90));
    let ts: HashSet<i64> = got.iter().map(|r| r.0).collect();
    assert_eq!(got.len(), expected, "rows");
    assert_eq!(ts.len(), expected, "distinct timestamps");
    let first = START_NS + (WINDOW as i64 - 1) * 1_000_000_000;
    for k in 0..expected as i64 {
        assert!(
            ts.contains(&(first + k * 1_000_000_000)),
            "missing the window ending at row {}",
            k + WINDOW as i64 - 1
        );
    }
}

#[test]
fn influxd_harness_creates_writes_and_reads_back() {
    let influx = Influxd::start(DB);
    let (status, body) = influx.write_lines(DB, "m,a=x f=1.5 1000\nm,a=x f=2.5 2000\n");
    assert_eq!(status, 204, "{body}");
    let rows = influx.select(DB, "SELECT f FROM m");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].0, 2000);
    assert_eq!(rows[1].1[0].as_f64(), Some(2.5));
    // What the sink's refusals are made of, answered by the real server.
    let (status, _) = influx.write_lines("nope", "m f=1 1\n");
    assert_eq!(status, 404);
    let (status, body) = influx.write_lines(DB, "m,a=x f=\"text\" 3000\n");
    assert_eq!(status, 400, "{body}");
}

/// Scores and alerts through `/write` (gzipped), read back with InfluxQL.
#[test]
fn scores_and_alerts_reach_influxdb_1x_exactly_once() {
    let influx = Influxd::start(DB);
    let run = Run::start(&influx, |c, _| c.influx_gzip(true));
    let rows = 600;
    run.publish("pump-001", &faulty_pump(rows));
    assert_scores_exactly(&influx, "pump-001", rows);
    let tagged = influx.select(
        DB,
        "SELECT score, threshold, anomalous FROM anomaly_score WHERE asset = 'pump-001' AND model = 'pump' LIMIT 1",
    );
    assert_eq!(tagged.len(), 1);
    assert!(
        tagged[0].1[0].as_f64().is_some_and(|s| s > 0.0),
        "{tagged:?}"
    );
    assert!(tagged[0].1[2].is_boolean(), "{tagged:?}");
    // Every point names the gateway that wrote it: this machine.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let tagged = influx.select(
        DB,
        &format!(
            "SELECT count(score) FROM anomaly_score WHERE host = '{}'",
            host.trim()
        ),
    );
    assert_eq!(
        tagged[0].1[0].as_u64(),
        Some(windows_for(rows) as u64),
        "{tagged:?}"
    );

    let alerts = influx.wait_for_rows(
        DB,
        "SELECT score, state FROM anomaly_alert WHERE asset = 'pump-001'",
        2,
        Duration::from_secs(30),
    );
    let states: Vec<&str> = alerts.iter().map(|r| r.1[1].as_str().unwrap()).collect();
    assert_eq!(states, ["raised", "cleared"], "{alerts:?}");
    let fault = START_NS + 300 * 1_000_000_000..START_NS + 420 * 1_000_000_000;
    assert!(fault.contains(&alerts[0].0), "raised at {}", alerts[0].0);
    run.finish();
}

/// influxd stops in the middle of a stream: batches are spooled and
/// drained when it is back, each point exactly once.
#[test]
fn influxd_outage_loses_nothing() {
    let mut influx = Influxd::start(DB);
    let run = Run::start(&influx, |c, _| c);
    let rows = 600;
    let log = generate(rows, 21, START_NS, 1_000_000_000, None);
    run.publish("pump-o", &log.slice(0..200));
    influx.wait_for_rows(
        DB,
        "SELECT score FROM anomaly_score",
        windows_for(200),
        Duration::from_secs(60),
    );
    influx.stop();
    run.publish("pump-o", &log.slice(200..400));
    wait_until(Duration::from_secs(30), "batches spooled", || {
        run.daemon.metric("anomalyd_spool_points").unwrap_or(0.0) >= 200.0
    });
    influx.start_again();
    run.publish("pump-o", &log.slice(400..rows));
    wait_until(Duration::from_secs(60), "spool drained", || {
        run.daemon.metric("anomalyd_spool_points") == Some(0.0)
    });
    assert_scores_exactly(&influx, "pump-o", rows);
    run.finish();
}

/// A wrong password (401): every batch is kept (spooled), the sink says
/// it is unhealthy once, and after the password file is fixed and SIGHUP
/// reloads it, everything arrives.
#[test]
fn a_wrong_password_fixed_by_sighup_loses_nothing() {
    let influx = Influxd::start_with(InfluxdOptions {
        auth: true,
        ..InfluxdOptions::default()
    });
    influx.create_database(DB);
    influx.create_user(DB, "gateway", "right");
    let run = Run::start(&influx, |c, state| {
        let password = state.join("influx-password");
        std::fs::write(&password, "wrong\n").unwrap();
        c.influx_credentials("gateway", &password)
    });
    let rows = 300;
    run.publish("pump-p", &generate(rows, 31, START_NS, 1_000_000_000, None));
    wait_until(Duration::from_secs(30), "the refusal is reported", || {
        run.daemon.metric("anomalyd_sink_refusing") == Some(1.0)
    });
    wait_until(Duration::from_secs(30), "every window kept", || {
        run.daemon.metric("anomalyd_spool_points").unwrap_or(0.0) >= windows_for(rows) as f64
    });
    let (status, body) = run.readyz();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("401"), "{body}");
    let page = http_get(&format!("http://127.0.0.1:{}/api/status", run.metrics_port)).unwrap();
    assert!(
        page.body.contains("\"sink_refusal\":\"HTTP 401"),
        "{}",
        page.body
    );
    assert_eq!(
        influx.select(DB, "SELECT score FROM anomaly_score").len(),
        0
    );

    std::fs::write(run.state.path().join("influx-password"), "right\n").unwrap();
    run.daemon.signal("HUP");
    assert_scores_exactly(&influx, "pump-p", rows);
    wait_until(Duration::from_secs(30), "ready again", || {
        run.daemon.metric("anomalyd_sink_refusing") == Some(0.0) && run.readyz().0 == 200
    });
    let log = run.daemon.log();
    assert_eq!(
        log.matches("the database refuses every write").count(),
        1,
        "logged once per state change:\n{log}"
    );
    assert!(log.contains("the database accepts writes again"), "{log}");
    run.finish();
}

/// The database does not exist yet (404): batches are kept until it does.
#[test]
fn a_missing_database_keeps_every_batch_until_it_exists() {
    let influx = Influxd::start_with(InfluxdOptions::default());
    let run = Run::start(&influx, |c, _| c);
    let rows = 200;
    run.publish("pump-m", &generate(rows, 41, START_NS, 1_000_000_000, None));
    wait_until(Duration::from_secs(30), "the refusal is reported", || {
        run.daemon.metric("anomalyd_sink_refusing") == Some(1.0)
    });
    assert!(
        run.daemon.log().contains("database not found"),
        "{}",
        run.daemon.log()
    );
    influx.create_database(DB);
    assert_scores_exactly(&influx, "pump-m", rows);
    wait_until(Duration::from_secs(30), "ready again", || {
        run.daemon.metric("anomalyd_sink_refusing") == Some(0.0)
    });
    run.finish();
}

/// Points whose field type conflicts with what the database holds (400)
/// are bisected out and kept in the dead-letter file, alone; bodies over
/// the server's `max-body-size` (413) are split. Everything else arrives.
#[test]
fn conflicting_points_are_dead_lettered_and_large_bodies_split() {
    let influx = Influxd::start_with(InfluxdOptions {
        max_body_size: Some(16_000),
        ..InfluxdOptions::default()
    });
    influx.create_database(DB);
    // `duration_s` is a number in the daemon's alerts: a string here makes
    // the database refuse exactly the alert points.
    let (status, body) = influx.write_lines(
        DB,
        &format!("anomaly_alert,asset=seed duration_s=\"n/a\" {START_NS}\n"),
    );
    assert_eq!(status, 204, "{body}");
    // Batches of 200 score lines (~250 bytes each) are far over 16 kB.
    let run = Run::start(&influx, |c, _| c);
    let rows = 600;
    run.publish("pump-c", &faulty_pump(rows));
    assert_scores_exactly(&influx, "pump-c", rows);
    wait_until(Duration::from_secs(30), "both alerts dead-lettered", || {
        run.daemon.metric("anomalyd_points_dead_lettered_total") == Some(2.0)
    });
    let dead = std::fs::read_to_string(run.state.path().join("dead-letter.lp")).unwrap();
    let points: Vec<&str> = dead.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(points.len(), 2, "{dead}");
    assert!(
        points
            .iter()
            .all(|p| p.starts_with("anomaly_alert,asset=pump-c")),
        "{dead}"
    );
    assert!(dead.contains("HTTP 400"), "{dead}");
    assert!(
        influx
            .select(DB, "SELECT * FROM anomaly_alert WHERE asset = 'pump-c'")
            .is_empty()
    );
    // The split and the bisection were answered by the server: 413s for
    // every full batch, 400s on the way down to each alert.
    let errors = run
        .daemon
        .metric("anomalyd_write_errors_total")
        .unwrap_or(0.0);
    assert!(errors >= 2.0 * 8.0, "{errors} write errors");
    run.finish();
}

/// `[record]`: every aligned frame is written as one point of its
/// measured channels, the values the pump published (as f32, the frame's
/// type), next to the scores.
#[test]
fn record_writes_the_aligned_frames_as_training_data() {
    let influx = Influxd::start(DB);
    let run = Run::start(&influx, |c, _| c.record("anomalyd_frames"));
    let rows = 120;
    let log = generate(rows, 51, START_NS, 1_000_000_000, None);
    run.publish("pump-r", &log);
    let q = format!(
        "SELECT {} FROM anomalyd_frames WHERE asset = 'pump-r'",
        anomalyd::core::synth::PUMP_CHANNELS.join(", ")
    );
    let got = influx.wait_for_rows(DB, &q, rows, Duration::from_secs(60));
    assert_eq!(got.len(), rows);
    for (k, (ts, values)) in got.iter().enumerate() {
        assert_eq!(*ts, log.timestamps[k]);
        let stored: Vec<f32> = values.iter().map(|v| v.as_f64().unwrap() as f32).collect();
        let published: Vec<f32> = log.values[k].iter().map(|v| *v as f32).collect();
        assert_eq!(stored, published, "row {k}");
    }
    assert_scores_exactly(&influx, "pump-r", rows);
    assert_eq!(
        run.daemon.metric("anomalyd_frames_not_recorded_total"),
        Some(0.0)
    );
    run.finish();
}
