//! Low rates with the intake journal on (docs/low-rate.md): messages
//! spread evenly over time, as devices on their own clocks send them, must
//! not cost one disk sync or one wake-up each. Disk syncs stay within what
//! `journal.sync_interval_ms` and `journal.sync_max_pending` allow, the
//! source's thread sleeps per pace tick rather than per message and writes
//! the acknowledgements of a commit together, every message is still
//! acknowledged and every window scored.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::*;

const ASSETS: usize = 20;
const ROWS: usize = 60;
/// Rows per second per asset: 200 messages per second in all.
const RATE: f64 = 10.0;

/// Publishes ROWS frames per asset at RATE and `qos`, each asset at its
/// own phase.
fn publish_spread(port: u16, prefix: &str, qos: u8) -> Duration {
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
        &qos.to_string(),
        "--start-ts",
        "2026-01-01T00:00:00Z",
        "--asset-prefix",
        prefix,
    ]));
    assert!(out.status.success(), "{}", output_text(&out));
    started.elapsed()
}

/// The daemon's threads: each one's /proc directory and name.
fn threads(pid: u32) -> Vec<(std::path::PathBuf, String)> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .map(|t| {
            let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            (t.path(), name.trim().to_string())
        })
        .collect()
}

/// Context switches and write-class system calls (`write`, `writev`:
/// `syscw` in its `io`) so far of the daemon's MQTT source thread
/// (`anomalyd-mqtt`): each voluntary switch is the thread going to sleep.
fn source_thread_counts(pid: u32) -> (u64, u64) {
    let mut total = None;
    for (task, name) in threads(pid) {
        if name != "anomalyd-mqtt" {
            continue;
        }
        let field = |file: &str, key: &str| -> u64 {
            std::fs::read_to_string(task.join(file))
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains(key))
                .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
                .sum()
        };
        let (switches, writes) = total.get_or_insert((0, 0));
        *switches += field("status", "ctxt_switches:");
        *writes += field("io", "syscw:");
    }
    total.expect("the daemon has an anomalyd-mqtt thread")
}

/// What one run measured.
struct Run {
    syncs: f64,
    /// Seconds the publisher took.
    secs: f64,
    /// Context switches of the MQTT source thread per message.
    switches_per_message: f64,
    /// Its write-class system calls per message.
    writes_per_message: f64,
    /// ONNX Runtime calls.
    calls: f64,
    /// Windows scored, and those that waited over 250 ms (the default
    /// `runtime.max_wait_ms`) from their cut to their call.
    windows: f64,
    late: f64,
    /// The most messages the broker had that the daemon had not yet read,
    /// in seconds of the publisher's rate.
    held_s: f64,
}

/// Runs the workload (assets named `prefix`001...) against a daemon with
/// `env` on top of its config; QoS 2 when `env` sets it.
fn syncs_for(broker: &Mosquitto, vm: &VictoriaMetrics, prefix: &str, env: &[(&str, &str)]) -> Run {
    let qos = if env.contains(&("ANOMALYD__MQTT__QOS", "2")) {
        2
    } else {
        1
    };
    let metrics_port = free_port();
    let state = tempfile::tempdir().unwrap();
    let config = DaemonConfig::new(broker.port(), &vm.url(), metrics_port);
    let mut daemon = Daemon::start(&config.state_dir(state.path()).to_toml(), metrics_port, env);
    daemon.wait_note("READY=1", Duration::from_secs(60));
    let (switches, writes) = source_thread_counts(daemon.child.id());
    // A QoS 0 subscriber gets each message as it reaches the broker; what
    // it has minus what the daemon has is what waits for the daemon, at
    // the broker or in its socket.
    let arrivals = MqttSubscriber::connect_with(
        rumqttc::MqttOptions::new(client_id("arrivals"), "127.0.0.1", broker.port()),
        "sensors/#",
        0,
    );
    let port = broker.port();
    let owned = prefix.to_string();
    let publisher = std::thread::spawn(move || publish_spread(port, &owned, qos));
    let mut held = 0.0_f64;
    while !publisher.is_finished() {
        let got = daemon
            .metric("anomalyd_messages_received_total")
            .unwrap_or(0.0);
        held = held.max(arrivals.count() as f64 - got);
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = publisher.join().unwrap();
    let messages = (ASSETS * ROWS) as f64;
    wait_until(
        Duration::from_secs(30),
        "every message acknowledged",
        || daemon.metric("anomalyd_mqtt_acks_total").unwrap_or(0.0) >= messages,
    );
    let (switches_now, writes_now) = source_thread_counts(daemon.child.id());
    let (switches, writes) = (switches_now - switches, writes_now - writes);
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
    let calls = daemon
        .metric("anomalyd_inference_batches_total")
        .unwrap_or(0.0);
    let windows = daemon
        .metric("anomalyd_window_wait_seconds_count")
        .unwrap_or(0.0);
    let on_time = daemon
        .metric("anomalyd_window_wait_seconds_bucket{le=\"0.25\"}")
        .unwrap_or(0.0);
    // Every thread carries the daemon's names, so that `top -H` and the
    // load bench tell the journal's syncs from the sink and HTTP side.
    let names: Vec<String> = threads(daemon.child.id())
        .into_iter()
        .map(|(_, name)| name)
        .collect();
    assert!(
        syncs == 0.0 || names.iter().any(|n| n == "anomalyd-sync"),
        "journal syncs ran, but no anomalyd-sync thread: {names:?}"
    );
    assert!(
        names.iter().any(|n| n == "anomalyd-async")
            && !names.iter().any(|n| n.starts_with("tokio-")),
        "threads: {names:?}"
    );
    assert!(daemon.terminate(Duration::from_secs(20)).success());
    Run {
        syncs,
        secs: took.as_secs_f64(),
        switches_per_message: switches as f64 / messages,
        writes_per_message: writes as f64 / messages,
        calls,
        windows,
        late: windows - on_time,
        held_s: held / (ASSETS as f64 * RATE),
    }
}

#[test]
fn journal_syncs_are_bounded_by_the_sync_settings() {
    let messages = (ASSETS * ROWS) as f64;
    // The broker's default in-flight window (20): a commit once 16 wait.
    let vm = VictoriaMetrics::start();
    let broker = Mosquitto::start();
    let Run {
        syncs,
        secs,
        switches_per_message,
        writes_per_message,
        held_s,
        ..
    } = syncs_for(&broker, &vm, "default-", &[]);
    eprintln!(
        "{messages} messages over {secs:.1} s, defaults: {syncs} journal syncs, {switches_per_message:.2} context switches and {writes_per_message:.2} writes of the source thread per message, at most {held_s:.2} s of messages waiting for the daemon"
    );
    // Acknowledgements held for a commit must not hold messages back at
    // the broker for long: mosquitto stops short of what it let wait
    // before, and a commit only at the interval's end (1 s) kept messages
    // there for up to a second (docs/low-rate.md §8).
    assert!(
        held_s < 0.5,
        "{held_s:.2} s of messages waited for the daemon at once"
    );
    // The PUBACKs of one commit go out in one write with the journal's
    // (docs/low-rate.md §4), not one write each.
    assert!(
        writes_per_message < 0.5,
        "{writes_per_message:.2} writes of the source thread per message: acknowledgements are written one by one"
    );
    // Paced reads (docs/low-rate.md §4): the source thread sleeps about
    // once per 240 ms tick and once per commit, not once per message.
    assert!(
        switches_per_message < 0.6,
        "{switches_per_message:.2} context switches of the source thread per message: it wakes per message"
    );
    assert!(syncs >= 1.0, "nothing was synced");
    // 1 per second plus 1 per 16 messages, one per segment rotation (every
    // 5 s) and one at shutdown.
    let bound = secs.ceil() + (messages / 16.0).ceil() + (secs / 5.0).ceil() + 2.0;
    assert!(syncs <= bound, "{syncs} syncs, more than {bound}");

    // QoS 2: the PUBRECs of a commit go out together the same way, and
    // the broker's PUBRELs are answered (every message counted once).
    let qos2 = syncs_for(&broker, &vm, "qos2-", &[("ANOMALYD__MQTT__QOS", "2")]);
    eprintln!(
        "QoS 2: {} journal syncs, {:.2} writes of the source thread per message",
        qos2.syncs, qos2.writes_per_message
    );
    assert!(qos2.syncs >= 1.0, "nothing was synced at QoS 2");
    assert!(
        qos2.writes_per_message < 0.5,
        "{:.2} writes of the source thread per message at QoS 2",
        qos2.writes_per_message
    );

    // A broker with a larger window and sync_max_pending raised with it:
    // about one sync per interval.
    let broker = Mosquitto::builder()
        .config_line("max_inflight_messages 1000")
        .start();
    // Pacing off (a max_wait_ms under 8 ms): the thread wakes per message,
    // the same workload otherwise.
    let unpaced = syncs_for(
        &broker,
        &vm,
        "unpaced-",
        &[("ANOMALYD__RUNTIME__MAX_WAIT_MS", "5")],
    );
    eprintln!(
        "pacing off: {:.2} context switches of the source thread per message",
        unpaced.switches_per_message
    );
    assert!(
        unpaced.switches_per_message > 2.0 * switches_per_message,
        "pacing saves no wake-ups: {:.2} per message without it, {switches_per_message:.2} with it",
        unpaced.switches_per_message
    );

    // The same broker with the shipped settings: the pacer learns that the
    // broker lets more than sync_max_pending wait (docs/low-rate.md §8).
    let learned = syncs_for(&broker, &vm, "learned-", &[]);
    eprintln!(
        "{messages} messages over {:.1} s, a broker window of 1,000, defaults: {} journal syncs",
        learned.secs, learned.syncs
    );
    // One per 16 messages in the first second (the source sleeps only once
    // it knows the rate, and only a sleep shows what the broker lets
    // wait), then about one per interval; each segment rotation and the
    // shutdown add one. Committing at every 16 made 38 here.
    let bound = (200.0 / 16.0_f64).ceil() + learned.secs.ceil() + (learned.secs / 5.0).ceil() + 4.0;
    assert!(
        learned.syncs <= bound,
        "{} syncs with a broker window of 1,000, more than {bound}: the window was not learned",
        learned.syncs
    );
    let Run {
        syncs,
        secs,
        calls,
        windows,
        late,
        ..
    } = syncs_for(
        &broker,
        &vm,
        "raised-",
        &[
            ("ANOMALYD__JOURNAL__SYNC_MAX_PENDING", "500"),
            ("ANOMALYD__JOURNAL__SYNC_INTERVAL_MS", "500"),
        ],
    );
    eprintln!(
        "{messages} messages over {secs:.1} s, 500 ms / 500 pending: {syncs} journal syncs, {windows} windows in {calls} ONNX Runtime calls, {late} waited over 250 ms"
    );
    let bound = (secs / 0.5).ceil() + (secs / 5.0).ceil() + 2.0;
    assert!(syncs <= bound, "{syncs} syncs, more than {bound}");
    // Nothing in the broker's way, messages come as they are published:
    // windows are handed to scoring within max_wait of their message
    // reaching the socket (docs/low-rate.md §3), and one call scores what
    // one pace tick (240 ms) brought, 48 windows at 200 per second and the
    // default 250 ms (fewer when a segment rotates). Due a tick after
    // their read, with a tick of half max_wait, a call scored about 25.
    assert!(windows > 0.0, "no window was scored");
    assert!(
        late <= windows / 100.0,
        "{late} of {windows} windows waited over 250 ms for scoring"
    );
    let per_call = windows / calls.max(1.0);
    assert!(
        per_call > 35.0,
        "{per_call:.1} windows per ONNX Runtime call at 200 windows per second"
    );
}
