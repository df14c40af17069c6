//! Tests of the harness itself (`util/`) and of `anomalyd simulate`
//! against real mosquitto and VictoriaMetrics processes: if these fail, the
//! end-to-end tests' failures say nothing about the daemon.

use std::time::{Duration, Instant};

use crate::util::{
    self, Mosquitto, MqttSubscriber, VictoriaMetrics, free_port, http_get, mqtt_publish,
    mqtt_publish_with, point_count, try_mqtt_publish_with, wait_until,
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
    wait_until(
        Duration::from_millis(50),
        "something that never happens",
        || false,
    );
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
    assert_ne!(
        broker.pid().unwrap(),
        pid,
        "restart must start a new process"
    );
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
#[should_panic(expected = "mosquitto exited at start")]
fn mosquitto_config_error_fails_loudly_with_its_log() {
    Mosquitto::builder().config_line("no_such_option 1").start();
}

#[test]
fn mosquitto_persists_queued_messages_for_a_persistent_session() {
    let mut broker = Mosquitto::start();
    // A persistent session subscribes, then goes away.
    let mut opts = broker.mqtt_options("persistent-sub");
    opts.set_clean_session(false);
    drop(MqttSubscriber::connect_with(opts.clone(), "q/#", 1));
    let messages: Vec<_> = (0..50)
        .map(|i| (format!("q/{i}"), i.to_string().into_bytes()))
        .collect();
    assert_eq!(
        mqtt_publish_with(broker.mqtt_options("pub"), &messages, 1),
        50
    );
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
    let msg = [("p/x".to_string(), b"7".to_vec())];
    mqtt_publish_with(broker.mqtt_options("pub-pw"), &msg, 1);
    assert_eq!(sub.wait_for(1, DEADLINE)[0].payload_str(), "7");

    let anonymous = rumqttc::MqttOptions::new("anon", "127.0.0.1", broker.port());
    let err = try_mqtt_publish_with(anonymous, &msg, 1).unwrap_err();
    assert!(err.contains("NotAuthorized"), "{err}");
    let mut wrong = broker.mqtt_options("wrong-pw");
    wrong.set_credentials("gateway", "nope");
    let err = MqttSubscriber::try_connect_with(wrong, "p/#", 1)
        .err()
        .unwrap();
    assert!(
        err.contains("BadUserNamePassword") || err.contains("NotAuthorized"),
        "{err}"
    );
    assert_eq!(sub.count(), 1, "refused clients published nothing");
}

#[test]
fn mosquitto_mutual_tls_with_generated_certificates() {
    let broker = Mosquitto::builder()
        .tls(true)
        .require_client_cert(true)
        .start();
    for path in [broker.ca_file(), broker.client_cert(), broker.client_key()] {
        assert!(path.is_file(), "{} missing", path.display());
    }
    let sub = MqttSubscriber::connect_with(broker.mqtt_options("tls-sub"), "s/#", 1);
    let msg = [("s/1".to_string(), b"{\"v\":1}".to_vec())];
    mqtt_publish_with(broker.mqtt_options("tls-pub"), &msg, 1);
    assert_eq!(sub.wait_for(1, DEADLINE)[0].json()["v"], 1);

    // Plain TCP is refused on the TLS port.
    let plain = rumqttc::MqttOptions::new("plain", "127.0.0.1", broker.port());
    assert!(
        try_mqtt_publish_with(plain, &msg, 1).is_err(),
        "plain MQTT accepted on TLS"
    );
    // TLS without a client certificate is refused when it is required.
    let mut no_cert = broker.mqtt_options("tls-no-cert");
    no_cert.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Simple {
            ca: std::fs::read(broker.ca_file()).unwrap(),
            alpn: None,
            client_auth: None,
        },
    ));
    let refused = MqttSubscriber::try_connect_with(no_cert, "s/#", 1);
    assert!(refused.is_err(), "client without certificate was accepted");
    assert_eq!(sub.count(), 1);
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

// ---------------------------------------------------------------------------
// `anomalyd simulate` against a real broker
// ---------------------------------------------------------------------------

mod simulate {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use anomalyd::cmd::simulate::{
        ChannelPayload, Layout, Pace, SimTls, SimulateError, SimulateOptions, simulate,
    };
    use anomalyd::core::synth::{FaultKind, PUMP_CHANNELS};

    use super::DEADLINE;
    use crate::util::{Mosquitto, MqttSubscriber, free_port};

    const T0: i64 = 1_700_000_000_000;

    fn opts(port: u16) -> SimulateOptions {
        SimulateOptions {
            broker_port: port,
            pace: Pace::AsFastAsPossible,
            start_ts_ms: Some(T0),
            ..SimulateOptions::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_assets_fifty_rows_qos1_all_arrive() {
        let broker = Mosquitto::start();
        let sub = MqttSubscriber::connect(broker.port(), "sensors/#");
        let report = simulate(
            SimulateOptions {
                assets: 2,
                rows: Some(50),
                qos: 1,
                seed: 3,
                ..opts(broker.port())
            },
            std::future::pending(),
        )
        .await
        .unwrap();
        assert_eq!(report.rows, 50);
        assert_eq!(report.messages, 100);
        assert_eq!(report.readings, 800);
        assert_eq!(report.acknowledged, 100);
        assert_eq!(report.reconnects, 0);
        assert!(!report.interrupted);
        assert!(report.to_string().contains("100 messages"), "{report}");

        let got = sub.wait_for(100, DEADLINE);
        assert_eq!(got.len(), 100);
        let expected = crate::util::synth_rows(50, 3);
        for asset in ["pump-001", "pump-002"] {
            let topic = format!("sensors/{asset}");
            let frames: Vec<_> = got.iter().filter(|m| m.topic == topic).collect();
            assert_eq!(frames.len(), 50, "{topic}");
            for (i, m) in frames.iter().enumerate() {
                let json = m.json();
                let obj = json.as_object().unwrap();
                assert_eq!(obj.len(), 9, "ts + 8 channels: {json}");
                assert_eq!(json["ts"], T0 + i as i64 * 1000, "{topic} row {i}");
                for ch in PUMP_CHANNELS {
                    assert!(json[ch].as_f64().unwrap().is_finite(), "{topic} {ch}");
                }
                if asset == "pump-001" {
                    for (c, ch) in PUMP_CHANNELS.iter().enumerate() {
                        assert_eq!(json[*ch].as_f64().unwrap(), expected[i][c], "row {i} {ch}");
                    }
                }
            }
        }
        // Different seeds per asset: the two pumps are not copies.
        assert_ne!(got[0].json()["current"], got[1].json()["current"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn per_channel_layout_and_qos0() {
        let broker = Mosquitto::start();
        let sub = MqttSubscriber::connect(broker.port(), "plant/#");
        let report = simulate(
            SimulateOptions {
                rows: Some(3),
                qos: 0,
                topic_template: "plant/{asset}/{channel}".into(),
                layout: Layout::PerChannel(ChannelPayload::Json),
                asset_prefix: "m".into(),
                ..opts(broker.port())
            },
            std::future::pending(),
        )
        .await
        .unwrap();
        assert_eq!((report.messages, report.acknowledged), (24, 0));
        let got = sub.wait_for(24, DEADLINE);
        let topics: BTreeSet<&str> = got.iter().map(|m| m.topic.as_str()).collect();
        let want: BTreeSet<String> = PUMP_CHANNELS
            .iter()
            .map(|c| format!("plant/m001/{c}"))
            .collect();
        assert_eq!(topics, want.iter().map(String::as_str).collect());
        let last = got
            .iter()
            .rfind(|m| m.topic == "plant/m001/flow_rate")
            .unwrap()
            .json();
        assert_eq!(last["ts"], T0 + 2000);
        assert!(last["value"].as_f64().unwrap() > 0.0, "{last}");

        // Bare numbers.
        let report = simulate(
            SimulateOptions {
                rows: Some(1),
                topic_template: "plant/{asset}/{channel}".into(),
                layout: Layout::PerChannel(ChannelPayload::Bare),
                asset_prefix: "b".into(),
                ..opts(broker.port())
            },
            std::future::pending(),
        )
        .await
        .unwrap();
        assert_eq!(report.acknowledged, 8);
        let got = sub.wait_for(32, DEADLINE);
        let bare = got
            .iter()
            .find(|m| m.topic == "plant/b001/voltage")
            .unwrap();
        assert!(
            bare.payload_str().parse::<f64>().unwrap() > 100.0,
            "{bare:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fault_changes_only_the_faulty_rows_of_asset_zero() {
        let broker = Mosquitto::start();
        let sub = MqttSubscriber::connect(broker.port(), "sensors/#");
        let fault = (FaultKind::Blockage, 100..200);
        simulate(
            SimulateOptions {
                assets: 2,
                rows: Some(200),
                fault: Some(fault.clone()),
                ..opts(broker.port())
            },
            std::future::pending(),
        )
        .await
        .unwrap();
        let got = sub.wait_for(400, DEADLINE);
        let faulty = anomalyd::core::synth::generate(200, 0, 0, 1_000_000_000, Some(fault));
        let healthy = crate::util::synth_rows(200, 0);
        let pump1: Vec<_> = got
            .iter()
            .filter(|m| m.topic == "sensors/pump-001")
            .collect();
        for i in [0, 99, 150, 199] {
            let flow = pump1[i].json()["flow_rate"].as_f64().unwrap();
            assert_eq!(flow, faulty.values[i][7], "row {i}");
        }
        // By the end of the ramp a blockage has cut the flow.
        assert!(faulty.values[199][7] < healthy[199][7]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rate_paces_rows_and_shutdown_stops_early() {
        let broker = Mosquitto::start();
        let report = simulate(
            SimulateOptions {
                assets: 2,
                rows: Some(25),
                pace: Pace::Rate(50.0),
                ..opts(broker.port())
            },
            std::future::pending(),
        )
        .await
        .unwrap();
        // Row 24 is due 0.48 s after row 0.
        assert!(report.elapsed >= Duration::from_millis(470), "{report}");
        assert!(report.elapsed < Duration::from_secs(5), "{report}");

        let report = simulate(
            SimulateOptions {
                rows: None,
                pace: Pace::Rate(20.0),
                ..opts(broker.port())
            },
            tokio::time::sleep(Duration::from_millis(500)),
        )
        .await
        .unwrap();
        assert!(report.interrupted, "{report}");
        assert!((2..=15).contains(&report.rows), "{report}");
        assert_eq!(report.acknowledged, report.messages, "{report}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connection_errors_are_reported() {
        let err = simulate(opts(free_port()), std::future::pending())
            .await
            .unwrap_err();
        assert!(matches!(err, SimulateError::Connect { .. }), "{err}");
        assert!(err.to_string().contains("127.0.0.1:"), "{err}");

        let broker = Mosquitto::builder().password("gw", "right").start();
        let wrong = SimulateOptions {
            rows: Some(1),
            username: Some("gw".into()),
            password: Some("wrong".into()),
            ..opts(broker.port())
        };
        let err = simulate(wrong.clone(), std::future::pending())
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("NotAuthorized")
                || err.to_string().contains("BadUserNamePassword"),
            "{err}"
        );
        let right = SimulateOptions {
            password: Some("right".into()),
            ..wrong
        };
        let report = simulate(right, std::future::pending()).await.unwrap();
        assert_eq!(report.acknowledged, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mutual_tls() {
        let broker = Mosquitto::builder().require_client_cert(true).start();
        let sub = MqttSubscriber::connect_with(broker.mqtt_options("tls-sim-sub"), "sensors/#", 1);
        let tls = SimTls {
            ca_file: broker.ca_file().to_path_buf(),
            client_cert: Some((broker.client_cert().into(), broker.client_key().into())),
        };
        let report = simulate(
            SimulateOptions {
                rows: Some(5),
                tls: Some(tls),
                ..opts(broker.port())
            },
            std::future::pending(),
        )
        .await
        .unwrap();
        assert_eq!(report.acknowledged, 5);
        assert_eq!(sub.wait_for(5, DEADLINE).len(), 5);
    }

    /// A broker restart mid-run loses nothing: simulate reconnects and
    /// re-sends what was not acknowledged; a persistent subscriber gets
    /// every row (at least once).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn survives_broker_restart_at_least_once() {
        let mut broker = Mosquitto::start();
        let mut sub_opts = broker.mqtt_options("restart-sub");
        sub_opts.set_clean_session(false);
        let sub = MqttSubscriber::connect_with(sub_opts.clone(), "sensors/#", 1);
        let rows = 400;
        let run = tokio::spawn(simulate(
            SimulateOptions {
                rows: Some(rows),
                pace: Pace::Rate(200.0),
                ..opts(broker.port())
            },
            std::future::pending(),
        ));
        sub.wait_for(100, DEADLINE);
        broker.restart();
        let before = sub.messages();
        drop(sub);
        let sub = MqttSubscriber::connect_with(sub_opts, "sensors/#", 1);
        let report = run.await.unwrap().unwrap();
        assert_eq!(report.messages, rows as u64);
        assert!(report.acknowledged >= report.messages, "{report}");
        assert!(
            report.reconnects >= 1,
            "the restart was not noticed: {report}"
        );
        let mut seen = BTreeSet::new();
        crate::util::wait_until(DEADLINE, "every row after the restart", || {
            for m in before.iter().chain(sub.messages().iter()) {
                seen.insert(m.json()["ts"].as_i64().unwrap());
            }
            seen.len() == rows
        });
        assert_eq!(seen.first(), Some(&T0));
        assert_eq!(seen.last(), Some(&(T0 + (rows as i64 - 1) * 1000)));
    }

    #[test]
    fn command_line_publishes() {
        let broker = Mosquitto::start();
        let sub = MqttSubscriber::connect(broker.port(), "cli/#");
        let out = std::process::Command::new(crate::util::anomalyd_bin())
            .args([
                "simulate",
                "--broker",
                &format!("127.0.0.1:{}", broker.port()),
            ])
            .args([
                "--fast",
                "--rows",
                "10",
                "--assets",
                "3",
                "--topic-template",
                "cli/{asset}",
            ])
            .args(["--start-ts", "2024-01-01T00:00:00Z"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains("30 messages"), "{stderr}");
        let got = sub.wait_for(30, DEADLINE);
        assert_eq!(got[0].json()["ts"], 1_704_067_200_000i64);
        assert!(got.iter().any(|m| m.topic == "cli/pump-003"));
    }
}
