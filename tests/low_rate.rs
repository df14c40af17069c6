//! Low rates with the intake journal on (docs/low-rate.md §1): messages
//! spread evenly over time, as devices on their own clocks send them, must
//! not cost one disk sync each. Disk syncs stay within what
//! `journal.sync_interval_ms` and `journal.sync_max_pending` allow, every
//! message is still acknowledged and every window scored.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::*;

const ASSETS: usize = 20;
const ROWS: usize = 60;
/// Rows per second per asset: 200 messages per second in all.
const RATE: f64 = 10.0;

/// Publishes ROWS frames per asset at RATE, each asset at its own phase.
fn publish_spread(port: u16, prefix: &str) -> Duration {
    let started = Instant::now();
    let out = run_output(Command::new(anomalyd_bin()).args([
        "simulate",
        "--broker",
        &format!("127.0.0.1:{port}"),
        "--synthetic",
        "pump",
        "--assets",
        &ASSETS.to_string(),
        "--rows",
        &ROWS.to_string(),
        "--rate",
        &RATE.to_string(),
        "--spread",
        "--qos",
        "1",
        "--start-ts",
        "2026-01-01T00:00:00Z",
        "--asset-prefix",
        prefix,
    ]));
    assert!(out.status.success(), "{}", output_text(&out));
    started.elapsed()
}

/// Runs the workload (assets named `prefix`001...) against a daemon with
/// `env` on top of its config and returns (journal syncs, seconds the
/// publisher took).
fn syncs_for(
    broker: &Mosquitto,
    vm: &VictoriaMetrics,
    prefix: &str,
    env: &[(&str, &str)],
) -> (f64, f64) {
    let metrics_port = free_port();
    let state = tempfile::tempdir().unwrap();
    let config = DaemonConfig::new(broker.port(), &vm.url(), metrics_port);
    let mut daemon = Daemon::start(&config.state_dir(state.path()).to_toml(), metrics_port, env);
    daemon.wait_note("READY=1", Duration::from_secs(60));
    let took = publish_spread(broker.port(), prefix);
    let messages = (ASSETS * ROWS) as f64;
    wait_until(
        Duration::from_secs(30),
        "every message acknowledged",
        || daemon.metric("anomalyd_mqtt_acks_total").unwrap_or(0.0) >= messages,
    );
    let expected = ASSETS * windows_for(ROWS);
    wait_until(Duration::from_secs(30), "every window scored", || {
        daemon
            .metric("anomalyd_windows_scored_total")
            .unwrap_or(0.0)
            >= expected as f64
    });
    vm.wait_for_points(
        &format!("anomaly_score_score{{asset=\"{prefix}001\"}}"),
        windows_for(ROWS),
        Duration::from_secs(30),
    );
    let syncs = daemon.metric("anomalyd_journal_syncs_total").unwrap_or(0.0);
    assert!(daemon.terminate(Duration::from_secs(20)).success());
    (syncs, took.as_secs_f64())
}

#[test]
fn journal_syncs_are_bounded_by_the_sync_settings() {
    let messages = (ASSETS * ROWS) as f64;
    // The broker's default in-flight window (20): a commit once 16 wait.
    let vm = VictoriaMetrics::start();
    let broker = Mosquitto::start();
    let (syncs, secs) = syncs_for(&broker, &vm, "default-", &[]);
    eprintln!("{messages} messages over {secs:.1} s, defaults: {syncs} journal syncs");
    assert!(syncs >= 1.0, "nothing was synced");
    // 1 per second plus 1 per 16 messages, one per segment rotation (every
    // 5 s) and one at shutdown.
    let bound = secs.ceil() + (messages / 16.0).ceil() + (secs / 5.0).ceil() + 2.0;
    assert!(syncs <= bound, "{syncs} syncs, more than {bound}");

    // A broker with a larger window and sync_max_pending raised with it:
    // about one sync per interval.
    let broker = Mosquitto::builder()
        .config_line("max_inflight_messages 1000")
        .start();
    let (syncs, secs) = syncs_for(
        &broker,
        &vm,
        "raised-",
        &[
            ("ANOMALYD__JOURNAL__SYNC_MAX_PENDING", "500"),
            ("ANOMALYD__JOURNAL__SYNC_INTERVAL_MS", "500"),
        ],
    );
    eprintln!("{messages} messages over {secs:.1} s, 500 ms / 500 pending: {syncs} journal syncs");
    let bound = (secs / 0.5).ceil() + (secs / 5.0).ceil() + 2.0;
    assert!(syncs <= bound, "{syncs} syncs, more than {bound}");
}
