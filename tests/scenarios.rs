//! Fault scenarios that print figures instead of asserting them: windows
//! lost and reconnects for a poison message, a full state directory with
//! `kill -9`, a crash loop under a steady stream, and records skipped
//! after a journal record torn in the middle. They use only what
//! every release exports (`/metrics` counters present since the journal,
//! the database's own count), so `ANOMALYD_BIN=<older build>` measures an
//! older daemon with the same scenario. Ignored by default: run with
//! `cargo test -p anomalyd --test integration scenarios:: -- --ignored
//! --nocapture`. The asserted versions are in `durability.rs`.

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use anomalyd::core::synth::generate;

use crate::util::*;

/// Distinct score timestamps and all points of `asset`, once `expected`
/// distinct ones are in or `deadline` has passed.
fn count(vm: &VictoriaMetrics, asset: &str, expected: usize, deadline: Duration) -> (usize, usize) {
    let selector = format!("anomaly_score_score{{asset=\"{asset}\"}}");
    let start = Instant::now();
    loop {
        let pts: Vec<(i64, f64)> = vm
            .export(&selector)
            .iter()
            .flat_map(|s| s.points())
            .collect();
        let unique: HashSet<i64> = pts.iter().map(|p| p.0).collect();
        if unique.len() >= expected || start.elapsed() >= deadline {
            return (unique.len(), pts.len());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The windows of `asset` missing from the database, as ranges of the
/// rows they end at.
fn missing_rows(vm: &VictoriaMetrics, asset: &str, rows: usize) -> Vec<(i64, i64)> {
    let selector = format!("anomaly_score_score{{asset=\"{asset}\"}}");
    let have: HashSet<i64> = vm
        .export(&selector)
        .iter()
        .flat_map(|s| s.points())
        .map(|p| p.0)
        .collect();
    let first = START_NS / 1_000_000 + (WINDOW as i64 - 1) * 1000;
    let mut ranges: Vec<(i64, i64)> = Vec::new();
    for k in 0..windows_for(rows) as i64 {
        if have.contains(&(first + k * 1000)) {
            continue;
        }
        let row = k + WINDOW as i64 - 1;
        match ranges.last_mut() {
            Some(r) if r.1 + 1 == row => r.1 = row,
            _ => ranges.push((row, row)),
        }
    }
    ranges
}

/// Whether READY=1 arrives within `deadline`.
fn ready_within(daemon: &mut Daemon, deadline: Duration) -> bool {
    let start = Instant::now();
    let mut buf = [0u8; 512];
    while start.elapsed() < deadline {
        if let Ok(n) = daemon.notify.recv(&mut buf)
            && String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "READY=1")
        {
            return true;
        }
    }
    false
}

fn connects(daemon: &Daemon) -> f64 {
    daemon.metric("anomalyd_mqtt_connects_total").unwrap_or(0.0)
}

#[test]
#[ignore = "prints figures; run with --ignored"]
fn scenario_poison_message() {
    let stack = Stack::start();
    let (broker, vm, metrics_port) = (&stack.broker, &stack.vm, stack.metrics_port);
    let cfg = stack.config().to_toml();
    let mut daemon = Daemon::start(&cfg, metrics_port, &[]);
    assert!(ready_within(&mut daemon, Duration::from_secs(60)));
    let rows = 300;
    let log = generate(rows, 51, START_NS, 1_000_000_000, None);
    let topic = "sensors/pump-p".to_string();
    let mut msgs = frame_messages("pump-p", &log);
    msgs.insert(150, (topic, vec![b'7'; 1 << 20]));
    let t0 = Instant::now();
    mqtt_publish_many(broker.port(), &msgs, 1);
    let (unique, _) = count(vm, "pump-p", windows_for(rows), Duration::from_secs(30));
    let secs = t0.elapsed().as_secs_f64();
    let storm = connects(&daemon) - 1.0;
    assert!(daemon.terminate(Duration::from_secs(20)).success());
    let mut again = Daemon::start(&cfg, metrics_port, &[]);
    let ready = ready_within(&mut again, Duration::from_secs(20));
    eprintln!(
        "FIGURES poison: {} of {} windows lost; {storm} reconnects in {secs:.0} s; ready after restart: {ready}",
        windows_for(rows) - unique,
        windows_for(rows)
    );
}

#[test]
#[ignore = "prints figures; run with --ignored"]
fn scenario_full_disk_then_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(dir.path())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED: cannot mount a tmpfs");
        return;
    }
    let stack = Stack::start();
    let (broker, vm, metrics_port) = (&stack.broker, &stack.vm, stack.metrics_port);
    // Scores wait in the writer's batch, as on a busy gateway.
    let cfg = stack
        .config_with_state(dir.path())
        .flush_interval_ms(5000)
        .batch_size(5000)
        .to_toml();
    let mut daemon = Daemon::start(&cfg, metrics_port, &[]);
    assert!(ready_within(&mut daemon, Duration::from_secs(60)));
    let rows = 400;
    let log = generate(rows, 52, START_NS, 1_000_000_000, None);
    publish_frames(broker.port(), "pump-d", &log.slice(0..200));
    wait_until(Duration::from_secs(30), "first part acknowledged", || {
        daemon.metric("anomalyd_mqtt_acks_total").unwrap_or(0.0) >= 200.0
    });
    let filler = dir.path().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        while f.write_all(&[0u8; 4096]).is_ok() {}
    }
    publish_frames(broker.port(), "pump-d", &log.slice(200..rows));
    // Until the daemon has taken the rest, or stopped taking it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline
        && daemon
            .metric("anomalyd_messages_received_total")
            .unwrap_or(0.0)
            < rows as f64
        && daemon.metric("anomalyd_journal_stalled") != Some(1.0)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let errors = daemon.log().lines().filter(|l| l.contains("ERROR")).count();
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    std::fs::remove_file(&filler).unwrap();
    let mut again = Daemon::start(&cfg, metrics_port, &[]);
    assert!(ready_within(&mut again, Duration::from_secs(60)));
    let (unique, total) = count(vm, "pump-d", windows_for(rows), Duration::from_secs(30));
    eprintln!(
        "FIGURES full disk + kill -9: {} of {} windows lost ({total} points); {errors} ERROR lines before the kill; {} reconnects after the restart",
        windows_for(rows) - unique,
        windows_for(rows),
        connects(&again) - 1.0
    );
    drop(again);
    let _ = Command::new("umount").arg(dir.path()).status();
}

#[test]
#[ignore = "prints figures; run with --ignored"]
fn scenario_crash_loop() {
    let stack = Stack::start();
    let (broker, vm, metrics_port) = (&stack.broker, &stack.vm, stack.metrics_port);
    let cfg = stack.config().to_toml();
    // 4 assets, 20 rows a second each for 30 s, killed every 6 s.
    let (assets, rows, per_s) = (4usize, 600usize, 20usize);
    let logs: Vec<_> = (0..assets)
        .map(|a| generate(rows, 60 + a as u64, START_NS, 1_000_000_000, None))
        .collect();
    // The broker keeps messages for the daemon's session once it has
    // subscribed: the stream starts after the first start.
    let mut daemon = Daemon::start(&cfg, metrics_port, &[]);
    assert!(ready_within(&mut daemon, Duration::from_secs(60)));
    let port = broker.port();
    let publisher = std::thread::spawn(move || {
        let start = Instant::now();
        for s in 0..rows / per_s {
            for (a, log) in logs.iter().enumerate() {
                publish_frames(
                    port,
                    &format!("pump-l{a}"),
                    &log.slice(s * per_s..(s + 1) * per_s),
                );
            }
            let next = Duration::from_secs(s as u64 + 1);
            std::thread::sleep(next.saturating_sub(start.elapsed()));
        }
    });
    for round in 0..5 {
        if round > 0 {
            daemon = Daemon::start(&cfg, metrics_port, &[]);
            assert!(ready_within(&mut daemon, Duration::from_secs(60)));
        }
        std::thread::sleep(Duration::from_secs(6));
        daemon.child.kill().unwrap();
        daemon.child.wait().unwrap();
    }
    let mut last = Daemon::start(&cfg, metrics_port, &[]);
    assert!(ready_within(&mut last, Duration::from_secs(60)));
    publisher.join().unwrap();
    let (mut unique, mut total) = (0, 0);
    for a in 0..assets {
        let (u, t) = count(
            vm,
            &format!("pump-l{a}"),
            windows_for(rows),
            Duration::from_secs(60),
        );
        unique += u;
        total += t;
        if u < windows_for(rows) {
            eprintln!(
                "pump-l{a}: windows missing, by last row: {:?}",
                missing_rows(vm, &format!("pump-l{a}"), rows)
            );
        }
    }
    let expected = assets * windows_for(rows);
    eprintln!(
        "FIGURES crash loop (5 x kill -9 in 30 s): {} of {expected} windows lost; {total} points in VictoriaMetrics ({:.1} % over)",
        expected - unique,
        (total as f64 / expected as f64 - 1.0) * 100.0
    );
}

#[test]
#[ignore = "prints figures; run with --ignored"]
fn scenario_torn_journal_record() {
    // 600 records; record 300 torn (its first half, then the rest of the
    // segment), as a write cut short by a full disk leaves it once space
    // returns and later records land behind it.
    let dir = tempfile::tempdir().unwrap();
    let settings = anomalyd::state::JournalSettings {
        dir: dir.path().to_path_buf(),
        max_bytes: 1 << 30,
        segment_bytes: 1 << 30,
        segment_age: Duration::from_secs(3600),
        retention_ns: 0,
        fsync: false,
    };
    let (mut j, _) = anomalyd::state::Journal::open(settings.clone()).unwrap();
    let path = dir.path().join("journal-0000000000000000.log");
    let mut ends = Vec::new();
    for i in 0..600i64 {
        let payload = format!("{{\"ts\": {i}, \"flow\": 1.5}}");
        j.append(i, "sensors/pump-1", payload.as_bytes()).unwrap();
        j.commit().unwrap();
        ends.push(std::fs::metadata(&path).unwrap().len() as usize);
    }
    drop(j);
    let bytes = std::fs::read(&path).unwrap();
    let mut torn = bytes[..ends[299] + (ends[300] - ends[299]) / 2].to_vec();
    torn.extend_from_slice(&bytes[ends[300]..]);
    std::fs::write(&path, &torn).unwrap();
    let mut seen = 0;
    let report = anomalyd::state::Journal::replay_segment(&path, |_| seen += 1).unwrap();
    eprintln!(
        "FIGURES torn journal: {} of 599 intact records after the tear skipped; {} damaged counted",
        599 - seen,
        report.damaged
    );
}
