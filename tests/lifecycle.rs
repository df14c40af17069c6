//! A running daemon through what networks and operators do to it: TLS
//! with password auth (and a wrong password retried with backoff), a broker
//! restart mid-stream, and SIGHUP reloads with the watchdog pinging.

use std::time::Duration;

use anomalyd::core::synth::generate;

use crate::util::*;

/// TLS with certificate verification and password auth against mosquitto.
#[test]
fn tls_and_password_auth() {
    let broker = Mosquitto::builder()
        .tls(true)
        .password("anomalyd", "s3cret-pass")
        .start();
    let vm = VictoriaMetrics::start();
    let metrics_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("mqtt-password");
    std::fs::write(&pw, "s3cret-pass\n").unwrap();
    let cfg = DaemonConfig::new(broker.port(), &vm.url(), metrics_port)
        .mqtt_credentials("anomalyd", &pw)
        .mqtt_tls(broker.ca_file())
        .to_toml();
    let mut daemon = Daemon::start(&cfg, metrics_port, &[]);
    daemon.wait_note("READY=1", Duration::from_secs(60));
    let log = generate(WINDOW + 5, 3, START_NS, 1_000_000_000, None);
    let msgs: Vec<(String, Vec<u8>)> = frame_payloads(&log)
        .into_iter()
        .map(|p| ("sensors/pump-tls".to_string(), p.into_bytes()))
        .collect();
    mqtt_publish_with(broker.mqtt_options(&client_id("pub")), &msgs, 1);
    vm.wait_for_points(
        "anomaly_score_score{asset=\"pump-tls\"}",
        5,
        Duration::from_secs(60),
    );
    assert!(!daemon.log().contains("s3cret-pass"));
    assert!(!daemon.metrics().contains("s3cret-pass"));
    assert!(daemon.terminate(Duration::from_secs(20)).success());

    // A wrong password never gets READY and is retried with backoff.
    std::fs::write(&pw, "wrong\n").unwrap();
    let mut bad = Daemon::start(&cfg, free_port(), &[]);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        bad.child.try_wait().unwrap().is_none(),
        "must keep retrying"
    );
    let mut buf = [0u8; 64];
    while let Ok(n) = bad.notify.recv(&mut buf) {
        bad.notes
            .push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(
        !bad.notes.iter().any(|n| n.contains("READY=1")),
        "{:?}",
        bad.notes
    );
    let attempts = bad.log().matches("MQTT connection lost").count();
    assert!(
        (2..40).contains(&attempts),
        "backoff: {attempts} attempts in 1.5 s"
    );
}

/// The broker restarts mid-stream; the daemon reconnects and every QoS 1
/// reading is scored.
#[test]
fn reconnects_after_broker_restart() {
    let mut broker = Mosquitto::start();
    let vm = VictoriaMetrics::start();
    let metrics_port = free_port();
    let cfg = DaemonConfig::new(broker.port(), &vm.url(), metrics_port).to_toml();
    let mut daemon = Daemon::start(&cfg, metrics_port, &[]);
    daemon.wait_note("READY=1", Duration::from_secs(60));
    let log = generate(200, 8, START_NS, 1_000_000_000, None);
    let first = log.slice(0..100);
    let second = log.slice(100..200);
    publish_frames(broker.port(), "pump-r", &first);
    vm.wait_for_points(
        "anomaly_score_score{asset=\"pump-r\"}",
        windows_for(100),
        Duration::from_secs(60),
    );
    broker.restart();
    publish_frames(broker.port(), "pump-r", &second);
    let s = vm.wait_for_points(
        "anomaly_score_score{asset=\"pump-r\"}",
        windows_for(200),
        Duration::from_secs(60),
    );
    assert_eq!(point_count(&s), windows_for(200));
    assert!(daemon.metric("anomalyd_mqtt_connects_total").unwrap_or(0.0) >= 2.0);
    assert!(daemon.terminate(Duration::from_secs(20)).success());
}

/// SIGHUP: a broken model is refused and the old one keeps serving; a good
/// one is swapped in; the watchdog is pinged while the pipeline runs.
#[test]
fn sighup_reload_and_watchdog() {
    let broker = Mosquitto::start();
    let vm = VictoriaMetrics::start();
    let metrics_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("pump.onnx");
    std::fs::copy(shipped_model(), &model).unwrap();
    let cfg = DaemonConfig::new(broker.port(), &vm.url(), metrics_port)
        .model_path(&model)
        .to_toml();
    let mut daemon = Daemon::start(&cfg, metrics_port, &[("WATCHDOG_USEC", "200000")]);
    daemon.wait_note("READY=1", Duration::from_secs(60));
    daemon.wait_note("WATCHDOG=1", Duration::from_secs(5));

    // Broken model: refused, the old one stays.
    std::fs::write(&model, b"\x08\x01garbage").unwrap();
    daemon.signal("HUP");
    wait_until(Duration::from_secs(20), "reload refused", || {
        daemon.metric("anomalyd_reload_failures_total") == Some(1.0)
    });
    let log = generate(WINDOW + 10, 4, START_NS, 1_000_000_000, None);
    publish_frames(broker.port(), "pump-h", &log);
    vm.wait_for_points(
        "anomaly_score_score{asset=\"pump-h\"}",
        10,
        Duration::from_secs(60),
    );

    // Good model again: swapped in.
    std::fs::copy(shipped_model(), &model).unwrap();
    daemon.signal("HUP");
    wait_until(Duration::from_secs(20), "reload done", || {
        daemon.metric("anomalyd_reloads_total") == Some(1.0)
    });
    assert!(
        daemon.log().contains("reloaded config and models"),
        "{}",
        daemon.log()
    );
    // Windows of the same channel layout are kept: 5 more rows give 5 more scores.
    let more = generate(
        5,
        4,
        START_NS + (WINDOW as i64 + 10) * 1_000_000_000,
        1_000_000_000,
        None,
    );
    publish_frames(broker.port(), "pump-h", &more);
    vm.wait_for_points(
        "anomaly_score_score{asset=\"pump-h\"}",
        15,
        Duration::from_secs(60),
    );
    assert!(daemon.terminate(Duration::from_secs(20)).success());
}
