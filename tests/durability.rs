//! Nothing lost, the hard cases (docs/durability.md), with real mosquitto,
//! VictoriaMetrics and `anomalyd run`: a poison message among normal
//! traffic, a state directory that fills up mid-stream followed by
//! `kill -9`, and a crash loop that must not multiply points in a store
//! that keeps duplicates.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anomalyd::core::synth::generate;

use crate::util::*;

/// Distinct score timestamps of `asset` and the number of points in all
/// (duplicates included), once at least `expected` distinct ones are in.
fn scores(vm: &VictoriaMetrics, asset: &str, expected: usize) -> (HashSet<i64>, usize) {
    let selector = format!("anomaly_score_score{{asset=\"{asset}\"}}");
    let mut last = (HashSet::new(), 0);
    wait_until(
        Duration::from_secs(90),
        "every window in the database",
        || {
            let pts: Vec<(i64, f64)> = vm
                .export(&selector)
                .iter()
                .flat_map(|s| s.points())
                .collect();
            last = (pts.iter().map(|p| p.0).collect(), pts.len());
            last.0.len() >= expected
        },
    );
    last
}

/// Asserts every window of `rows` on-grid rows is in the database.
fn assert_every_window(unique: &HashSet<i64>, rows: usize) {
    let first = START_NS / 1_000_000 + (WINDOW as i64 - 1) * 1000;
    let missing: Vec<i64> = (0..windows_for(rows) as i64)
        .filter(|k| !unique.contains(&(first + k * 1000)))
        .collect();
    assert!(
        missing.is_empty(),
        "{} windows missing: {missing:?}",
        missing.len()
    );
}

/// The readings-dropped counter for one reason.
fn dropped(daemon: &Daemon, reason: &str) -> f64 {
    daemon
        .metric(&format!(
            "anomalyd_readings_dropped_total{{reason=\"{reason}\"}}"
        ))
        .unwrap_or(0.0)
}

fn readyz(daemon: &Daemon) -> (u16, String) {
    http_get(&format!("http://127.0.0.1:{}/readyz", daemon.metrics_port))
        .map(|r| (r.status, r.body))
        .unwrap_or((0, String::new()))
}

/// One 1 MiB message among normal traffic: dropped on purpose and
/// acknowledged, counted, dead-lettered, logged once with its size; every
/// other reading is scored; no reconnect storm; and after a restart the
/// broker has nothing left to redeliver, so the daemon is ready at once.
#[test]
fn poison_message_is_dropped_on_purpose_not_redelivered_forever() {
    let stack = Stack::start();
    let (broker, vm, metrics_port, state) =
        (&stack.broker, &stack.vm, stack.metrics_port, &stack.state);
    let cfg = stack.config().to_toml();
    let mut daemon = Daemon::start(&cfg, metrics_port, &[]);
    daemon.wait_note("READY=1", Duration::from_secs(60));

    let rows = 300;
    let log = generate(rows, 41, START_NS, 1_000_000_000, None);
    let topic = "sensors/pump-p".to_string();
    let mut msgs = frame_messages("pump-p", &log);
    let poison = vec![b'7'; 1 << 20];
    msgs.insert(150, (topic.clone(), poison));
    mqtt_publish_many(broker.port(), &msgs, 1);

    let (unique, total) = scores(vm, "pump-p", windows_for(rows));
    assert_every_window(&unique, rows);
    assert_eq!(total, windows_for(rows), "points written once each");
    wait_until(
        Duration::from_secs(30),
        "every message acknowledged",
        || daemon.metric("anomalyd_mqtt_acks_total") == Some((rows + 1) as f64),
    );
    assert_eq!(dropped(&daemon, "oversize"), 1.0);
    assert_eq!(daemon.metric("anomalyd_dead_letters_total"), Some(1.0));
    assert_eq!(daemon.metric("anomalyd_mqtt_connects_total"), Some(1.0));
    assert_eq!(daemon.metric("anomalyd_mqtt_disconnects_total"), Some(0.0));
    let logged = daemon.log();
    assert_eq!(
        logged.matches("more than mqtt.max_packet_size").count(),
        1,
        "{logged}"
    );
    assert!(logged.contains("has 1048576 bytes"), "{logged}");
    let mut kept = Vec::new();
    anomalyd::state::Journal::replay_segment(&state.path().join("dead-letters.log"), |r| {
        kept.push((r.topic.to_string(), r.payload.len()));
    })
    .unwrap();
    assert_eq!(kept, vec![(topic, 1 << 20)]);
    wait_until(Duration::from_secs(10), "/readyz ready", || {
        readyz(&daemon).0 == 200
    });
    assert!(daemon.terminate(Duration::from_secs(20)).success());

    // The broker acknowledged the poison message: a restart gets nothing
    // of it again and is ready.
    let mut again = Daemon::start(&cfg, metrics_port, &[]);
    again.wait_note("READY=1", Duration::from_secs(60));
    wait_until(
        Duration::from_secs(10),
        "/readyz ready after restart",
        || readyz(&again).0 == 200,
    );
    assert_eq!(dropped(&again, "oversize"), 0.0);
    assert_eq!(again.metric("anomalyd_mqtt_disconnects_total"), Some(0.0));
    eprintln!(
        "poison message: {} readings and one 1 MiB message published; {} windows in the database ({} expected); reconnects 0; oversize 1, dead-lettered 1",
        rows * 8,
        unique.len(),
        windows_for(rows)
    );
    assert!(again.terminate(Duration::from_secs(20)).success());
}

/// A small tmpfs for the state directory, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// A 2 MiB tmpfs, or `None` (with the reason printed) where mounting is
    /// refused (not root, no CAP_SYS_ADMIN).
    fn mount() -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let out = run_output(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
                .arg(dir.path()),
        );
        if !out.status.success() {
            eprintln!(
                "SKIPPED: cannot mount a 2 MiB tmpfs for the state directory: {}",
                output_text(&out).trim()
            );
            return None;
        }
        Some(SmallDisk { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the disk with a file until a write fails; returns it.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// The state directory fills up mid-stream: the journal cannot write, so
/// nothing more is acknowledged and intake waits (degraded, visible on
/// `/readyz`); once space returns intake resumes by itself. The disk fills
/// again and the daemon is killed with `kill -9` while it waits: after the
/// disk is freed and the daemon restarted, every window is in the database
/// and the journal holds no torn record.
#[test]
fn full_disk_then_kill_9_loses_no_window() {
    let Some(disk) = SmallDisk::mount() else {
        return;
    };
    let stack = Stack::start();
    let (broker, vm, metrics_port) = (&stack.broker, &stack.vm, stack.metrics_port);
    // Scores wait in the writer's batch at the kill: they must come back
    // from the journal or the broker.
    let cfg = stack
        .config_with_state(disk.path())
        .flush_interval_ms(2000)
        .batch_size(5000)
        .to_toml();
    let mut daemon = Daemon::start(&cfg, metrics_port, &[]);
    daemon.wait_note("READY=1", Duration::from_secs(60));
    let rows = 600;
    let log = generate(rows, 42, START_NS, 1_000_000_000, None);
    publish_frames(broker.port(), "pump-d", &log.slice(0..200));
    wait_until(Duration::from_secs(30), "first part acknowledged", || {
        daemon.metric("anomalyd_mqtt_acks_total").unwrap_or(0.0) >= 200.0
    });

    // Full: nothing more is acknowledged, intake waits, /readyz says why.
    let filler = disk.fill();
    publish_frames(broker.port(), "pump-d", &log.slice(200..400));
    wait_until(Duration::from_secs(30), "journal stalled", || {
        daemon.metric("anomalyd_journal_stalled") == Some(1.0)
    });
    let (status, body) = readyz(&daemon);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("journal cannot write"), "{body}");
    daemon.wait_note(
        "STATUS=degraded: the intake journal cannot write: messages are not acknowledged and intake waits",
        Duration::from_secs(10),
    );
    assert_eq!(
        http_get(&format!("http://127.0.0.1:{metrics_port}/healthz"))
            .unwrap()
            .status,
        200,
        "liveness is not readiness"
    );
    let acked = daemon.metric("anomalyd_mqtt_acks_total").unwrap_or(0.0);
    assert!(acked < 400.0, "acknowledged {acked} with a full disk");
    // Space returns: intake resumes and the rest is scored without a restart.
    std::fs::remove_file(&filler).unwrap();
    wait_until(Duration::from_secs(30), "journal writes again", || {
        daemon.metric("anomalyd_journal_stalled") == Some(0.0)
    });
    let (unique, _) = scores(vm, "pump-d", windows_for(400));
    assert_every_window(&unique, 400);
    wait_until(Duration::from_secs(10), "/readyz ready again", || {
        readyz(&daemon).0 == 200
    });

    // Full again, then kill -9 while intake waits.
    let filler = disk.fill();
    publish_frames(broker.port(), "pump-d", &log.slice(400..rows));
    wait_until(Duration::from_secs(30), "journal stalled again", || {
        daemon.metric("anomalyd_journal_stalled") == Some(1.0)
    });
    let errors = daemon.log().lines().filter(|l| l.contains("ERROR")).count();
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    std::fs::remove_file(&filler).unwrap();

    let mut again = Daemon::start(&cfg, metrics_port, &[]);
    again.wait_note("READY=1", Duration::from_secs(60));
    let (unique, total) = scores(vm, "pump-d", windows_for(rows));
    assert_every_window(&unique, rows);
    assert_eq!(again.metric("anomalyd_journal_damaged_total"), Some(0.0));
    // Errors are logged once per stall, not once per message.
    assert_eq!(errors, 2, "error lines");
    eprintln!(
        "full disk + kill -9: {} windows expected, {} distinct in the database ({} points); {errors} journal error line(s) over two stalls",
        windows_for(rows),
        unique.len(),
        total
    );
    assert!(again.terminate(Duration::from_secs(20)).success());
}

/// Highest journal segment sequence on disk.
fn newest_segment(journal: &Path) -> u64 {
    std::fs::read_dir(journal)
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_prefix("journal-")?
                .strip_suffix(".log")?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0)
}

fn confirmed(journal: &Path) -> Option<u64> {
    std::fs::read_to_string(journal.join("confirmed"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A crash loop: `kill -9` and restart five times while the stream goes
/// on. Each restart replays the journal, but windows the database
/// confirmed before the crash are not written again, so VictoriaMetrics
/// (which keeps duplicates) holds every window and few extra points.
#[test]
fn crash_loop_does_not_multiply_points() {
    let stack = Stack::start();
    let (broker, vm, metrics_port, state) =
        (&stack.broker, &stack.vm, stack.metrics_port, &stack.state);
    let cfg = stack.config().to_toml();
    let journal = state.path().join("journal");
    let (rows, rounds) = (600, 5);
    let log = generate(rows, 43, START_NS, 1_000_000_000, None);
    for k in 0..rounds {
        let mut daemon = Daemon::start(&cfg, metrics_port, &[]);
        daemon.wait_note("READY=1", Duration::from_secs(60));
        let upto = rows * (k + 1) / rounds;
        publish_frames(broker.port(), "pump-c", &log.slice(rows * k / rounds..upto));
        scores(vm, "pump-c", windows_for(upto));
        // The sink confirms the segment that holds this part once it is
        // closed (every second); then the crash.
        let segment = newest_segment(&journal);
        wait_until(Duration::from_secs(30), "segment confirmed", || {
            confirmed(&journal).is_some_and(|c| c >= segment)
        });
        daemon.child.kill().unwrap();
        daemon.child.wait().unwrap();
    }
    let mut last = Daemon::start(&cfg, metrics_port, &[]);
    last.wait_note("READY=1", Duration::from_secs(60));
    let (unique, total) = scores(vm, "pump-c", windows_for(rows));
    // The last start replays the whole retained journal, all confirmed.
    let rebuilt = last.metric("anomalyd_windows_rebuilt_total").unwrap_or(0.0);
    assert_every_window(&unique, rows);
    let expected = windows_for(rows);
    eprintln!(
        "crash loop ({rounds} x kill -9): {expected} windows expected, {} distinct, {total} points in VictoriaMetrics; {rebuilt} windows replayed for history only",
        unique.len()
    );
    assert!(rebuilt > 0.0, "replays rebuilt history");
    assert!(
        total as f64 <= expected as f64 * 1.05,
        "{total} points for {expected} windows"
    );
    assert!(last.terminate(Duration::from_secs(20)).success());
}

/// A connection the broker drops right after accepting it (here: a second
/// daemon with the same client id, which takes the session over each time
/// it connects) is retried ever more slowly, not at the minimum backoff
/// after every CONNACK; the flapping is counted and `/readyz` says so.
#[test]
fn flapping_connection_backs_off_and_is_reported() {
    let stack = Stack::start();
    let (broker, port_a, port_b) = (&stack.broker, stack.metrics_port, free_port());
    let cfg_a = DaemonConfig::new(broker.port(), &stack.vm.url(), port_a).to_toml();
    let cfg_b = cfg_a.replace(
        &format!("127.0.0.1:{port_a}"),
        &format!("127.0.0.1:{port_b}"),
    );
    let mut a = Daemon::start(&cfg_a, port_a, &[]);
    a.wait_note("READY=1", Duration::from_secs(60));
    let _b = Daemon::start(&cfg_b, port_b, &[]);
    wait_until(Duration::from_secs(30), "the connection flaps", || {
        a.metric("anomalyd_mqtt_flapping") == Some(1.0)
    });
    wait_until(Duration::from_secs(10), "/readyz reports it", || {
        readyz(&a)
            .1
            .contains("the broker keeps dropping the connection")
    });
    // Backoff from 50 ms, doubling to 500 ms, and not reset by a CONNACK
    // followed by a drop: once at the cap, five more drops take at least
    // two seconds (they took a quarter of one when each CONNACK reset it).
    wait_until(Duration::from_secs(30), "backoff at its cap", || {
        a.metric("anomalyd_mqtt_disconnects_total").unwrap_or(0.0) >= 6.0
    });
    let before = a.metric("anomalyd_mqtt_disconnects_total").unwrap_or(0.0);
    let t0 = std::time::Instant::now();
    wait_until(Duration::from_secs(30), "five more drops", || {
        a.metric("anomalyd_mqtt_disconnects_total").unwrap_or(0.0) >= before + 5.0
    });
    let took = t0.elapsed();
    eprintln!("flapping: 5 drops took {took:?} with a 500 ms backoff cap");
    assert!(took >= Duration::from_millis(1500), "5 drops in {took:?}");
    assert_eq!(a.metric("anomalyd_mqtt_reconnect_backoff_ms"), Some(500.0));
    assert_eq!(readyz(&a).0, 503);
}
