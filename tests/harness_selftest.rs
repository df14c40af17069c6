//! Tests of the harness itself (`util.rs`) and of `anomalyd simulate`
//! against real mosquitto and VictoriaMetrics processes: if these fail, the
//! end-to-end tests' failures say nothing about the daemon.

use std::time::{Duration, Instant};

use crate::util::{
    self, MqttSubscriber, Mosquitto, VictoriaMetrics, free_port, http_get, mqtt_publish,
    mqtt_publish_many, point_count, wait_until,
};

const DEADLINE: Duration = Duration::from_secs(20);

#[test]
fn free_port_can_be_bound() {
    let port = free_port();
    assert_ne!(port, 0);
    std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
}

#[test]
#[should_panic(expected = "timed out after")]
fn wait_until_panics_with_what() {
    wait_until(Duration::from_millis(50), "something that never happens", || {
        false
    });
}

#[test]
fn wait_until_returns_as_soon_as_true() {
    let start = Instant::now();
    let mut calls = 0;
    wait_until(DEADLINE, "third call", || {
        calls += 1;
        calls == 3
    });
    assert_eq!(calls, 3);
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[test]
fn url_encode_escapes_selectors() {
    assert_eq!(
        util::url_encode(r#"{__name__=~"a_.*",asset="p-1"}"#),
        "%7B__name__%3D~%22a_.%2A%22%2Casset%3D%22p-1%22%7D"
    );
}

#[test]
fn paths_point_into_the_workspace() {
    let root = util::workspace_root();
    assert!(root.join("Cargo.toml").is_file());
    if std::env::var_os("ORT_DYLIB_PATH").is_none() {
        assert_eq!(
            util::ort_dylib(),
            root.join(".ort/libonnxruntime.so.1.31.1")
        );
    }
    assert!(util::anomalyd_bin().is_file());
    if let Some(dir) = util::skab_dir() {
        assert!(dir.is_dir());
    }
}

#[test]
fn mosquitto_delivers_and_survives_restart() {
    let mut broker = Mosquitto::start();
    let sub = MqttSubscriber::connect(broker.port(), "t/#");
    mqtt_publish(broker.port(), "t/a", "1.5", 1);
    let got = sub.wait_for(1, DEADLINE);
    assert_eq!(got[0].topic, "t/a");
    assert_eq!(got[0].payload_str(), "1.5");
    drop(sub);

    let pid = broker.pid().unwrap();
    broker.restart();
    assert_ne!(broker.pid().unwrap(), pid, "restart must start a new process");
    let sub = MqttSubscriber::connect(broker.port(), "t/#");
    mqtt_publish(broker.port(), "t/b", "2", 0);
    assert_eq!(sub.wait_for(1, DEADLINE)[0].topic, "t/b");
    drop(sub);

    broker.stop();
    assert!(!util::port_open(broker.port()));
    broker.start_again();
    assert!(util::port_open(broker.port()));
    broker.kill();
    assert!(!broker.is_running());
}

#[test]
fn mosquitto_persists_queued_messages_for_a_persistent_session() {
    let mut broker = Mosquitto::start();
    // A persistent session subscribes, then goes away.
    let mut opts = broker.mqtt_options("persistent-sub");
    opts.set_clean_session(false);
    drop(MqttSubscriber::connect_with(opts.clone(), "q/#", 1));
    let messages = (0..50).map(|i| (format!("q/{i}"), i.to_string().into_bytes()));
    assert_eq!(mqtt_publish_many(broker.mqtt_options("pub"), messages, 1), 50);
    // Stopped with SIGTERM, mosquitto writes its persistence file.
    broker.restart();
    let sub = MqttSubscriber::connect_with(opts, "q/#", 1);
    let got = sub.wait_for(50, DEADLINE);
    assert_eq!(got.len(), 50);
    assert_eq!(got[49].payload_str(), "49");
}

#[test]
fn mosquitto_password_refuses_anonymous_and_wrong_password() {
    let broker = Mosquitto::builder()
        .password("gateway", "s3cret")
        .password("other", "pw")
        .start();
    let sub = MqttSubscriber::connect_with(broker.mqtt_options("with-pw"), "p/#", 1);
    mqtt_publish_many(
        broker.mqtt_options("pub-pw"),
        [("p/x".to_string(), b"7".to_vec())],
        1,
    );
    assert_eq!(sub.wait_for(1, DEADLINE)[0].payload_str(), "7");

    let anonymous = std::panic::catch_unwind(|| {
        mqtt_publish(broker.port(), "p/y", "8", 1);
    });
    assert!(anonymous.is_err(), "anonymous client was accepted");
    let mut wrong = broker.mqtt_options("wrong-pw");
    wrong.set_credentials("gateway", "nope");
    let wrong = std::panic::catch_unwind(|| {
        MqttSubscriber::connect_with(wrong, "p/#", 1);
    });
    assert!(wrong.is_err(), "wrong password was accepted");
}

#[test]
fn mosquitto_mutual_tls_with_generated_certificates() {
    let broker = Mosquitto::builder().tls(true).require_client_cert(true).start();
    for path in [broker.ca_file(), broker.client_cert(), broker.client_key()] {
        assert!(path.is_file(), "{} missing", path.display());
    }
    let sub = MqttSubscriber::connect_with(broker.mqtt_options("tls-sub"), "s/#", 1);
    mqtt_publish_many(
        broker.mqtt_options("tls-pub"),
        [("s/1".to_string(), b"{\"v\":1}".to_vec())],
        1,
    );
    assert_eq!(sub.wait_for(1, DEADLINE)[0].json()["v"], 1);

    // Plain TCP is refused on the TLS port.
    let plain = std::panic::catch_unwind(|| mqtt_publish(broker.port(), "s/2", "x", 1));
    assert!(plain.is_err(), "plain MQTT accepted on the TLS listener");
    // TLS without a client certificate is refused when it is required.
    let mut no_cert = broker.mqtt_options("tls-no-cert");
    no_cert.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Simple {
            ca: std::fs::read(broker.ca_file()).unwrap(),
            alpn: None,
            client_auth: None,
        },
    ));
    let refused = std::panic::catch_unwind(|| MqttSubscriber::connect_with(no_cert, "s/#", 1));
    assert!(refused.is_err(), "client without certificate was accepted");
}

#[test]
fn victoria_metrics_reads_back_what_was_written_across_restart() {
    let mut vm = VictoriaMetrics::start();
    let health = http_get(&format!("{}/health", vm.url())).unwrap();
    assert_eq!((health.status, health.body.trim()), (200, "OK"));

    let t0 = 1_700_000_000_000i64; // ms
    let lines: String = (0..10)
        .map(|i| {
            format!(
                "anomaly_score,asset=pump-001,model=m1 score={},anomalous=false {}\n",
                0.5 + i as f64,
                (t0 + i * 1000) * 1_000_000
            )
        })
        .collect();
    vm.write_lines(&lines);
    let series = vm.wait_for_points(r#"anomaly_score_score{asset="pump-001"}"#, 10, DEADLINE);
    assert_eq!(series.len(), 1);
    assert_eq!(series[0].name(), "anomaly_score_score");
    assert_eq!(series[0].label("model"), Some("m1"));
    let points = series[0].points();
    assert_eq!(points[0], (t0, 0.5));
    assert_eq!(points[9], (t0 + 9000, 9.5));

    // Garbage is answered with 204 too; only reading back tells.
    vm.write_lines("this is not line protocol\n");

    vm.stop();
    assert!(http_get(&format!("{}/health", vm.url())).is_err());
    vm.start_again();
    let all = vm.export(r#"{__name__=~"anomaly_score_.*"}"#);
    let names: Vec<&str> = all.iter().map(|s| s.name()).collect();
    assert_eq!(names, ["anomaly_score_anomalous", "anomaly_score_score"]);
    assert_eq!(point_count(&all), 20);
    assert!(vm.export("no_such_metric").is_empty());
}
