//! Fault injection with real processes: the database goes away mid-stream,
//! the daemon is killed with `kill -9` while the database is down. Every
//! expected score point must be in the database afterwards, none twice.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anomalyd::core::synth::generate;

use crate::util::*;

fn spool_config(
    mqtt_port: u16,
    vm_url: &str,
    metrics_port: u16,
    spool: &std::path::Path,
) -> String {
    DaemonConfig::new(mqtt_port, vm_url, metrics_port)
        .spool(spool, 64)
        .to_toml()
}

/// Asserts the asset's score series holds exactly the expected timestamps,
/// each once.
fn assert_exactly(vm: &VictoriaMetrics, asset: &str, rows: usize) {
    let expected = windows_for(rows);
    let series = vm.wait_for_points(
        &format!("anomaly_score_score{{asset=\"{asset}\"}}"),
        expected,
        Duration::from_secs(90),
    );
    let pts = series[0].points();
    let unique: HashSet<i64> = pts.iter().map(|p| p.0).collect();
    assert_eq!(pts.len(), expected, "points (duplicates or losses)");
    assert_eq!(unique.len(), expected, "distinct timestamps");
    let first = START_NS / 1_000_000 + (WINDOW as i64 - 1) * 1000;
    for k in 0..expected as i64 {
        assert!(
            unique.contains(&(first + k * 1000)),
            "missing window ending at row {}",
            k + WINDOW as i64 - 1
        );
    }
}

/// The database is down for a while in the middle of a stream: batches go
/// to the spool and drain when it is back.
#[test]
fn database_outage_loses_nothing() {
    let broker = Mosquitto::start();
    let mut vm = VictoriaMetrics::start();
    let metrics_port = free_port();
    let spool = tempfile::tempdir().unwrap();
    let cfg = spool_config(broker.port(), &vm.url(), metrics_port, spool.path());
    let mut daemon = Daemon::start(&cfg, metrics_port, &[]);
    daemon.wait_note("READY=1", Duration::from_secs(60));

    let rows = 900;
    let log = generate(rows, 21, START_NS, 1_000_000_000, None);
    publish_frames(broker.port(), "pump-o", &log.slice(0..300));
    wait_until(Duration::from_secs(60), "first part written", || {
        daemon
            .metric("anomalyd_points_written_total")
            .unwrap_or(0.0)
            >= windows_for(300) as f64
            || {
                if daemon.metric("anomalyd_write_errors_total").unwrap_or(0.0) > 0.0 {
                    panic!("{}", daemon.log())
                }
                false
            }
    });
    vm.wait_for_points(
        "anomaly_score_score{asset=\"pump-o\"}",
        windows_for(300),
        Duration::from_secs(60),
    );

    vm.stop();
    let down = Instant::now();
    publish_frames(broker.port(), "pump-o", &log.slice(300..600));
    wait_until(Duration::from_secs(30), "batches spooled", || {
        daemon.metric("anomalyd_spool_points").unwrap_or(0.0) >= 300.0
    });
    let spooled = daemon.metric("anomalyd_spool_points").unwrap_or(0.0);
    // Keep it down for the length the operators care about (30 s).
    std::thread::sleep(Duration::from_secs(30).saturating_sub(down.elapsed()));
    publish_frames(broker.port(), "pump-o", &log.slice(600..rows));
    vm.start_again();
    let t0 = Instant::now();
    wait_until(Duration::from_secs(60), "spool drained", || {
        daemon.metric("anomalyd_spool_points") == Some(0.0)
    });
    let drain_s = t0.elapsed().as_secs_f64();
    assert_exactly(&vm, "pump-o", rows);
    eprintln!(
        "outage: {} readings published, {} windows scored, {} points written; {spooled} points spooled, drained in {drain_s:.1} s",
        rows * 8,
        daemon
            .metric("anomalyd_windows_scored_total")
            .unwrap_or(0.0),
        daemon
            .metric("anomalyd_points_written_total")
            .unwrap_or(0.0),
    );
    assert_eq!(daemon.metric("anomalyd_points_dropped_total"), Some(0.0));
    assert!(daemon.terminate(Duration::from_secs(20)).success());
}

/// `kill -9` with the database down: what was spooled survives, and after
/// a restart (database back) everything arrives.
#[test]
fn kill_9_with_database_down_loses_nothing_spooled() {
    let broker = Mosquitto::start();
    let mut vm = VictoriaMetrics::start();
    let metrics_port = free_port();
    let spool = tempfile::tempdir().unwrap();
    let cfg = spool_config(broker.port(), &vm.url(), metrics_port, spool.path());
    let mut daemon = Daemon::start(&cfg, metrics_port, &[]);
    daemon.wait_note("READY=1", Duration::from_secs(60));
    vm.stop();
    let rows = 400;
    let log = generate(rows, 22, START_NS, 1_000_000_000, None);
    publish_frames(broker.port(), "pump-k", &log);
    let expected = windows_for(rows) as f64;
    wait_until(Duration::from_secs(30), "all windows spooled", || {
        daemon.metric("anomalyd_spool_points").unwrap_or(0.0) >= expected
    });
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    let segments = std::fs::read_dir(spool.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "seg")
        })
        .count();
    assert!(segments > 0, "spool must hold segments after kill -9");

    vm.start_again();
    let mut again = Daemon::start(&cfg, metrics_port, &[]);
    again.wait_note("READY=1", Duration::from_secs(60));
    assert!(again.log().contains("spool opened"), "{}", again.log());
    wait_until(
        Duration::from_secs(60),
        "spool drained after restart",
        || again.metric("anomalyd_spool_points") == Some(0.0),
    );
    assert_exactly(&vm, "pump-k", rows);
    assert!(again.terminate(Duration::from_secs(20)).success());
}

/// An alert raised before a restart is not raised again after it; it
/// clears once the fault is over.
#[test]
fn open_alert_survives_a_restart() {
    let broker = Mosquitto::start();
    let vm = VictoriaMetrics::start();
    let metrics_port = free_port();
    let state = tempfile::tempdir().unwrap();
    let cfg = DaemonConfig::new(broker.port(), &vm.url(), metrics_port)
        .state_dir(state.path())
        .to_toml();
    let rows = 700;
    let log = generate(
        rows,
        11,
        START_NS,
        1_000_000_000,
        Some((anomalyd::core::synth::FaultKind::Bearing, 300..450)),
    );
    let mut daemon = Daemon::start(&cfg, metrics_port, &[]);
    daemon.wait_note("READY=1", Duration::from_secs(60));
    // Up to the middle of the fault: the alert is raised.
    publish_frames(broker.port(), "pump-s", &log.slice(0..420));
    vm.wait_for_points(
        "anomaly_alert_score{asset=\"pump-s\",state=\"raised\"}",
        1,
        Duration::from_secs(60),
    );
    assert!(daemon.terminate(Duration::from_secs(20)).success());
    let saved = std::fs::read_to_string(state.path().join("alerts.json")).unwrap();
    assert!(saved.contains("pump-s"), "{saved}");

    let mut again = Daemon::start(&cfg, metrics_port, &[]);
    again.wait_note("READY=1", Duration::from_secs(60));
    assert!(
        again.log().contains("restoring open alerts"),
        "{}",
        again.log()
    );
    publish_frames(broker.port(), "pump-s", &log.slice(420..rows));
    vm.wait_for_points(
        "anomaly_alert_score{asset=\"pump-s\",state=\"cleared\"}",
        1,
        Duration::from_secs(60),
    );
    let raised = vm.export("anomaly_alert_score{asset=\"pump-s\",state=\"raised\"}");
    assert_eq!(
        point_count(&raised),
        1,
        "raised exactly once across the restart"
    );
    assert_eq!(again.metric("anomalyd_alerts_raised_total"), Some(0.0));
    assert!(again.terminate(Duration::from_secs(20)).success());
    assert!(
        !std::fs::read_to_string(state.path().join("alerts.json"))
            .unwrap()
            .contains("pump-s")
    );
}

/// At-least-once from the broker: `kill -9` mid-stream, while messages
/// sit in frames, windows and the writer's batch; more arrive while the
/// daemon is away. After the restart the journal rebuilds what was
/// acknowledged, the broker redelivers the rest, and every window is in
/// the database exactly once.
#[test]
fn kill_9_mid_stream_loses_no_reading() {
    let broker = Mosquitto::start();
    let vm = VictoriaMetrics::start();
    let metrics_port = free_port();
    let state = tempfile::tempdir().unwrap();
    let cfg = DaemonConfig::new(broker.port(), &vm.url(), metrics_port)
        .state_dir(state.path())
        // A long flush interval: at the kill, scores wait in the batch.
        .flush_interval_ms(5000)
        .batch_size(5000)
        .to_toml();
    let mut daemon = Daemon::start(&cfg, metrics_port, &[]);
    daemon.wait_note("READY=1", Duration::from_secs(60));
    assert!(
        daemon.log().contains("intake journal opened"),
        "{}",
        daemon.log()
    );
    let rows = 600;
    let log = generate(rows, 23, START_NS, 1_000_000_000, None);
    publish_frames(broker.port(), "pump-j", &log.slice(0..300));
    wait_until(Duration::from_secs(30), "first part acknowledged", || {
        daemon.metric("anomalyd_mqtt_acks_total").unwrap_or(0.0) >= 300.0
    });
    let written_before = daemon.metric("anomalyd_points_written_total");
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    // Nothing was written yet: every score of the first part would be
    // lost with acknowledge-on-receipt.
    assert_eq!(written_before, Some(0.0));
    assert!(
        vm.export("anomaly_score_score{asset=\"pump-j\"}")
            .is_empty()
    );

    // The rest arrives while the daemon is away (the broker keeps it for
    // the persistent session).
    publish_frames(broker.port(), "pump-j", &log.slice(300..rows));
    let mut again = Daemon::start(&cfg, metrics_port, &[]);
    again.wait_note("READY=1", Duration::from_secs(60));
    assert_exactly(&vm, "pump-j", rows);
    let replayed = again
        .metric("anomalyd_journal_replayed_total")
        .unwrap_or(0.0);
    assert!(replayed >= 300.0, "replayed {replayed}");
    eprintln!(
        "kill -9 mid-stream: {} readings published ({} while the daemon was down), {} windows expected and in the database; {replayed} journaled messages replayed, {} redelivered by the broker",
        rows * 8,
        (rows - 300) * 8,
        windows_for(rows),
        again
            .metric("anomalyd_messages_received_total")
            .unwrap_or(0.0)
    );
    assert_eq!(again.metric("anomalyd_journal_damaged_total"), Some(0.0));
    assert!(again.terminate(Duration::from_secs(20)).success());
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Overload: the database stops answering while 60 assets stream as fast
/// as the broker delivers. Writing, scoring and intake wait in turn
/// (backpressure) instead of buffering, so memory stays bounded while the
/// broker holds the backlog; assets beyond `pipeline.max_assets` are
/// dropped by policy and counted message by message; once the database is
/// back, every window of the served assets arrives.
#[test]
fn overload_keeps_memory_bounded_and_counts_what_it_drops() {
    let broker = Mosquitto::start();
    let mut vm = VictoriaMetrics::start();
    let metrics_port = free_port();
    let (assets, served, rows) = (60usize, 50usize, 400usize);
    let cfg = DaemonConfig::new(broker.port(), &vm.url(), metrics_port)
        .pipeline(served, 256)
        .influx_queue_capacity(2000)
        .to_toml();
    let mut daemon = Daemon::start(&cfg, metrics_port, &[]);
    daemon.wait_note("READY=1", Duration::from_secs(60));
    let pid = daemon.child.id();

    // Warm up every served asset (models, aligners, windows, batches at
    // full size) with the database up, then measure from there.
    let log = generate(rows, 31, START_NS, 1_000_000_000, None);
    let payloads = frame_payloads(&log);
    let topic = |a: usize| format!("sensors/pump-{a:03}");
    let warm = 60;
    let mut msgs = Vec::new();
    for p in &payloads[..warm] {
        for a in 0..assets {
            msgs.push((topic(a), p.clone().into_bytes()));
        }
    }
    mqtt_publish_many(broker.port(), &msgs, 1);
    wait_until(Duration::from_secs(60), "warm-up written", || {
        daemon
            .metric("anomalyd_points_written_total")
            .unwrap_or(0.0)
            >= (served * windows_for(warm)) as f64
    });
    let warm_rss = status_kib(pid, "VmRSS:");

    vm.stop();
    let mut msgs = Vec::new();
    for p in &payloads[warm..] {
        for a in 0..assets {
            msgs.push((topic(a), p.clone().into_bytes()));
        }
    }
    let backlog_bytes: usize = msgs.iter().map(|m| m.1.len()).sum();
    mqtt_publish_many(broker.port(), &msgs, 1);
    // The broker has taken everything; the daemon is stuck on the database.
    std::thread::sleep(Duration::from_secs(3));
    let stuck_hwm = status_kib(pid, "VmHWM:");
    vm.start_again();
    let expected = served * windows_for(rows);
    wait_until(
        Duration::from_secs(120),
        "every served window written",
        || {
            daemon
                .metric("anomalyd_points_written_total")
                .unwrap_or(0.0)
                >= expected as f64
        },
    );
    let hwm = status_kib(pid, "VmHWM:");
    eprintln!(
        "overload: {} messages ({} KiB of payload) while the database was down; RSS after warm-up {warm_rss} KiB, peak while stuck {stuck_hwm} KiB, peak overall {hwm} KiB",
        msgs.len(),
        backlog_bytes / 1024
    );
    // Buffering the backlog's windows (340 x 50 x 8 x 40 floats) would take
    // 20 MiB on top; the queues hold a few hundred windows and points.
    assert!(
        hwm.saturating_sub(warm_rss) < 12 * 1024,
        "peak RSS grew by {} KiB",
        hwm.saturating_sub(warm_rss)
    );
    // Policy drops are counted exactly: every message of the 10 assets
    // beyond max_assets, nothing else.
    let too_many = daemon
        .metrics()
        .lines()
        .find_map(|l| {
            l.strip_prefix("anomalyd_readings_dropped_total{reason=\"too_many_assets\"} ")
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    assert_eq!(too_many, ((assets - served) * rows) as f64);
    assert_eq!(daemon.metric("anomalyd_points_dropped_total"), Some(0.0));
    for a in [0, served / 2, served - 1] {
        assert_exactly(&vm, &format!("pump-{a:03}"), rows);
    }
    assert!(
        vm.export("anomaly_score_score{asset=\"pump-055\"}")
            .is_empty()
    );
    assert!(daemon.terminate(Duration::from_secs(20)).success());
}
