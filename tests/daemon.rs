//! End-to-end tests of `anomalyd run` with real mosquitto and
//! VictoriaMetrics processes, plus `replay` and `check-config` through the
//! binary.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anomalyd::core::synth::{FaultKind, PUMP_CHANNELS, SyntheticLog, generate};
use tempfile::TempDir;

use crate::util::*;

const ROWS: usize = 600;
/// Event times of the generated data: a fixed day, 1 s apart.
const START_NS: i64 = 1_767_225_600_000_000_000; // 2026-01-01T00:00:00Z

pub fn shipped_model() -> PathBuf {
    workspace_root().join("models/pump.onnx")
}

/// A running `anomalyd run` with a config written for the given services.
pub struct Daemon {
    pub child: Child,
    pub dir: TempDir,
    pub metrics_port: u16,
    notify: UnixDatagram,
    pub notes: Vec<String>,
}

pub fn base_config(mqtt_port: u16, influx_url: &str, metrics_port: u16, model: &Path) -> String {
    format!(
        r#"
default_model = "pump"
[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
client_id = "{client}"
clean_session = false
qos = 1
reconnect_min_ms = 50
reconnect_max_ms = 500

[[topics]]
filter = "sensors/{{asset}}"
payload = "json_object"
timestamp_field = "ts"

[[topics]]
filter = "plant/{{asset}}/{{channel}}"
payload = "number"

[[topics]]
filter = "site/{{asset}}/{{channel}}"
payload = "json"
value_field = "v"
timestamp_field = "time"

[[models]]
name = "pump"
path = "{model}"

[influx]
url = "{influx_url}"
org = "test"
bucket = "anomalyd"
batch_size = 200
flush_interval_ms = 100
retry_min_ms = 50
retry_max_ms = 500

[metrics]
listen = "127.0.0.1:{metrics_port}"

[log]
level = "info"

[shutdown]
timeout_s = 10
"#,
        model = model.display(),
        // Unique per config: a daemon of another test that outlived its
        // broker must never share a session with this one.
        client = client_id("anomalyd-test"),
    )
}

impl Daemon {
    pub fn start(config_text: &str, metrics_port: u16, env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("anomalyd.toml");
        std::fs::write(&config, config_text).unwrap();
        let sock_path = dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&sock_path).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
        let mut cmd = Command::new(anomalyd_bin());
        cmd.arg("run")
            .arg("--config")
            .arg(&config)
            .env("ORT_DYLIB_PATH", ort_dylib())
            .env("NOTIFY_SOCKET", &sock_path)
            .env_remove("WATCHDOG_USEC")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn anomalyd");
        Daemon {
            child,
            dir,
            metrics_port,
            notify,
            notes: Vec::new(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Collects sd_notify datagrams until one equals `what` (or contains it).
    pub fn wait_note(&mut self, what: &str, deadline: Duration) {
        let start = Instant::now();
        let mut buf = [0u8; 512];
        loop {
            if self.notes.iter().any(|n| n.lines().any(|l| l == what)) {
                return;
            }
            if let Ok(n) = self.notify.recv(&mut buf) {
                self.notes
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                continue;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "anomalyd exited ({status}) before {what}; log:\n{}",
                    self.log()
                );
            }
            assert!(
                start.elapsed() < deadline,
                "no {what} within {deadline:?}; got {:?}; log:\n{}",
                self.notes,
                self.log()
            );
        }
    }

    pub fn metrics(&self) -> String {
        http_get(&format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .map(|r| r.body)
            .unwrap_or_default()
    }

    /// Value of a metric line (exact name with labels).
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics().lines().find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    /// SIGTERM and wait for the exit.
    pub fn terminate(&mut self, deadline: Duration) -> ExitStatus {
        self.signal("TERM");
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                start.elapsed() < deadline,
                "anomalyd did not stop within {deadline:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let m = self.metrics();
            let interesting: Vec<&str> = m
                .lines()
                .filter(|l| !l.starts_with('#') && !l.ends_with(" 0") && !l.contains("_bucket"))
                .collect();
            eprintln!(
                "--- anomalyd log ---\n{}\n--- metrics ---\n{}",
                self.log(),
                interesting.join("\n")
            );
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// JSON frame payloads (`ts` in ms, one field per channel) for one asset.
pub fn frame_payloads(log: &SyntheticLog) -> Vec<String> {
    log.timestamps
        .iter()
        .zip(&log.values)
        .map(|(ts, v)| {
            let mut obj = serde_json::Map::new();
            obj.insert("ts".into(), (ts / 1_000_000).into());
            for (name, x) in PUMP_CHANNELS.iter().zip(v) {
                obj.insert((*name).into(), (*x).into());
            }
            serde_json::Value::Object(obj).to_string()
        })
        .collect()
}

pub fn publish_frames(port: u16, asset: &str, log: &SyntheticLog) {
    let topic = format!("sensors/{asset}");
    let msgs: Vec<(String, Vec<u8>)> = frame_payloads(log)
        .into_iter()
        .map(|p| (topic.clone(), p.into_bytes()))
        .collect();
    mqtt_publish_many(port, &msgs, 1);
}

fn replay_scores(dir: &Path, log: &SyntheticLog) -> Vec<(i64, Option<f64>, u8)> {
    let input = dir.join("input.csv");
    std::fs::write(&input, log.to_csv()).unwrap();
    let out = dir.join("scores.csv");
    let st = Command::new(anomalyd_bin())
        .args(["replay", "--model"])
        .arg(shipped_model())
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&out)
        .args(["--asset", "pump-001"])
        .env("ORT_DYLIB_PATH", ort_dylib())
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "replay: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("timestamp,asset,score,threshold,probability,anomaly")
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 6, "{l}");
            let ts = anomalyd::core::timestamp::parse_timestamp(f[0]).unwrap();
            (ts, f[2].parse().ok(), f[5].parse().unwrap())
        })
        .collect()
}

/// The whole product path: MQTT in, scores and alerts in the database,
/// equal to what `replay` computes from the same rows.
#[test]
fn scores_and_alerts_reach_the_database_and_match_replay() {
    let broker = Mosquitto::start();
    let vm = VictoriaMetrics::start();
    let metrics_port = free_port();
    let cfg = base_config(broker.port(), &vm.url(), metrics_port, &shipped_model());
    let mut daemon = Daemon::start(&cfg, metrics_port, &[]);
    daemon.wait_note("READY=1", Duration::from_secs(60));

    let faulty = generate(
        ROWS,
        11,
        START_NS,
        1_000_000_000,
        Some((FaultKind::Bearing, 300..420)),
    );
    let healthy = generate(ROWS, 12, START_NS, 1_000_000_000, None);
    publish_frames(broker.port(), "pump-001", &faulty);
    publish_frames(broker.port(), "pump-002", &healthy);

    // Every row is a whole frame on its tick and closes at once: a window
    // ends at every row from the window length on.
    let expected = windows_for(ROWS);
    let live = vm.wait_for_points(
        "anomaly_score_score{asset=\"pump-001\"}",
        expected,
        Duration::from_secs(60),
    );
    assert_eq!(point_count(&live), expected, "{:?}", live);
    let thr = vm.wait_for_points(
        "anomaly_score_threshold{asset=\"pump-002\"}",
        expected,
        Duration::from_secs(30),
    );
    assert_eq!(point_count(&thr), expected);
    for ch in PUMP_CHANNELS {
        let s = vm.export(&format!("anomaly_score_err_{ch}{{asset=\"pump-001\"}}"));
        assert_eq!(point_count(&s), expected, "err_{ch}");
    }
    assert_eq!(live[0].label("model"), Some("pump"));

    // The live scores equal replay's for the same rows and timestamps.
    let replayed = replay_scores(daemon.dir.path(), &faulty);
    assert_eq!(replayed.len(), ROWS);
    assert!(
        replayed[..WINDOW - 1]
            .iter()
            .all(|r| r.1.is_none() && r.2 == 0)
    );
    let by_ts: std::collections::HashMap<i64, f64> = replayed
        .iter()
        .filter_map(|(ts, s, _)| s.map(|s| (ts / 1_000_000, s)))
        .collect();
    let mut compared = 0;
    for (ts_ms, v) in live[0].points() {
        let r = by_ts
            .get(&ts_ms)
            .unwrap_or_else(|| panic!("replay has no score at {ts_ms}"));
        assert!(
            (r - v).abs() <= 1e-4 * r.abs().max(1e-3),
            "live {v} vs replay {r} at {ts_ms}"
        );
        compared += 1;
    }
    assert_eq!(compared, expected);

    // An alert was raised inside the fault and cleared after it; the
    // healthy pump raised none.
    let raised = vm.wait_for_points(
        "anomaly_alert_score{asset=\"pump-001\",state=\"raised\"}",
        1,
        Duration::from_secs(30),
    );
    let t_raise = raised[0].points()[0].0;
    let fault_start_ms = START_NS / 1_000_000 + 300_000;
    let fault_end_ms = START_NS / 1_000_000 + 420_000;
    assert!(
        (fault_start_ms..fault_end_ms).contains(&t_raise),
        "raised at {t_raise}, fault {fault_start_ms}..{fault_end_ms}"
    );
    let cleared = vm.wait_for_points(
        "anomaly_alert_score{asset=\"pump-001\",state=\"cleared\"}",
        1,
        Duration::from_secs(30),
    );
    assert!(cleared[0].points()[0].0 > fault_end_ms);
    assert!(raised[0].label("top_channel").is_some());
    assert!(
        vm.export("anomaly_alert_score{asset=\"pump-002\"}")
            .is_empty()
    );
    // The stored anomalous flag agrees with replay's per-row decision.
    let flags = vm.export("anomaly_score_anomalous{asset=\"pump-001\"}");
    let live_anomalous = flags[0].points().iter().filter(|p| p.1 > 0.5).count();
    let replay_anomalous = replayed[..ROWS - 1].iter().filter(|r| r.2 == 1).count();
    assert_eq!(live_anomalous, replay_anomalous);

    let m = daemon.metrics();
    assert!(
        m.contains(&format!("anomalyd_windows_scored_total {}", 2 * expected)),
        "{m}"
    );
    assert!(m.contains("anomalyd_alerts_raised_total 1"), "{m}");
    assert!(m.contains("provider=\"cpu\""), "{m}");

    let status = daemon.terminate(Duration::from_secs(20));
    assert!(status.success(), "exit {status}; log:\n{}", daemon.log());
    daemon.wait_note("STOPPING=1", Duration::from_secs(1));
}

/// Per-channel topics: bare numbers (receive time) and JSON values with
/// their own timestamps; bad payloads and unknown topics are counted.
#[test]
fn per_channel_topics_and_bad_input_are_counted() {
    let broker = Mosquitto::start();
    let vm = VictoriaMetrics::start();
    let metrics_port = free_port();
    let cfg = base_config(broker.port(), &vm.url(), metrics_port, &shipped_model());
    let mut daemon = Daemon::start(&cfg, metrics_port, &[]);
    daemon.wait_note("READY=1", Duration::from_secs(60));

    // JSON values with event time: 80 rows x 8 channels on site/{asset}/{channel}.
    let log = generate(80, 5, START_NS, 1_000_000_000, None);
    let mut msgs = Vec::new();
    for (ts, v) in log.timestamps.iter().zip(&log.values) {
        for (ch, x) in PUMP_CHANNELS.iter().zip(v) {
            let payload = serde_json::json!({"v": x, "time": ts / 1_000_000}).to_string();
            msgs.push((format!("site/pump-json/{ch}"), payload.into_bytes()));
        }
    }
    // Bare numbers (receive time).
    for ch in PUMP_CHANNELS {
        msgs.push((format!("plant/pump-num/{ch}"), b"1.25".to_vec()));
    }
    // Garbage of every kind.
    msgs.push(("plant/pump-num/current".into(), b"not a number".to_vec()));
    msgs.push(("plant/pump-num/current".into(), b"NaN".to_vec()));
    msgs.push(("sensors/pump-x".into(), b"{\"ts\": 1, ".to_vec()));
    // Matches the subscription plant/+/+ but not the mapping (empty asset).
    msgs.push(("plant//current".into(), b"1".to_vec()));
    msgs.push(("plant/pump-num/no_such_channel".into(), b"1".to_vec()));
    mqtt_publish_many(broker.port(), &msgs, 1);

    let expected = windows_for(80);
    let s = vm.wait_for_points(
        "anomaly_score_score{asset=\"pump-json\"}",
        expected,
        Duration::from_secs(60),
    );
    assert_eq!(point_count(&s), expected);
    wait_until(Duration::from_secs(20), "drop counters", || {
        daemon.metric("anomalyd_readings_dropped_total{reason=\"unknown_topic\"}") == Some(1.0)
    });
    let get = |r: &str| {
        daemon
            .metric(&format!(
                "anomalyd_readings_dropped_total{{reason=\"{r}\"}}"
            ))
            .unwrap_or(-1.0)
    };
    assert_eq!(get("bad_payload"), 2.0, "{}", daemon.metrics());
    assert_eq!(get("non_finite"), 1.0);
    assert_eq!(get("unknown_channel"), 1.0);
    // 80*8 JSON values + 8 numbers used.
    assert_eq!(
        daemon.metric("anomalyd_readings_used_total"),
        Some((80 * 8 + 8) as f64)
    );
    let status = daemon.terminate(Duration::from_secs(20));
    assert!(status.success());
}

/// A config problem exits 78 and names the key; nothing is connected.
#[test]
fn bad_config_exits_78_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let text = base_config(1, "http://127.0.0.1:1", 0, &shipped_model())
        .replace("qos = 1", "qos = 7")
        .replace("batch_size = 200", "batch_size = 0");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).unwrap();
    for sub in ["run", "check-config"] {
        let out = Command::new(anomalyd_bin())
            .args([sub, "--config"])
            .arg(&path)
            .env("ORT_DYLIB_PATH", ort_dylib())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{sub}: {err}");
        assert!(
            err.contains("mqtt.qos") && err.contains("influx.batch_size"),
            "{err}"
        );
    }
    // An environment override with a wrong type names the key too.
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        base_config(1, "http://127.0.0.1:1", 0, &shipped_model()),
    )
    .unwrap();
    let out = Command::new(anomalyd_bin())
        .args(["check-config", "--config"])
        .arg(&good)
        .env("ORT_DYLIB_PATH", ort_dylib())
        .env("ANOMALYD__MQTT__PORT", "many")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mqtt.port"));
    // A good config passes check-config and names its model.
    let out = Command::new(anomalyd_bin())
        .args(["check-config", "--config"])
        .arg(&good)
        .env("ORT_DYLIB_PATH", ort_dylib())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("model \"pump\""));
    // A model that is not an ONNX file is refused with its path.
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"not a model").unwrap();
    let text = base_config(1, "http://127.0.0.1:1", 0, &junk);
    std::fs::write(&good, text).unwrap();
    let out = Command::new(anomalyd_bin())
        .args(["check-config", "--config"])
        .arg(&good)
        .env("ORT_DYLIB_PATH", ort_dylib())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("junk.onnx"));
    // A truncated model file, a pinned hash that does not match, and a
    // channel the model lacks: each refused, naming the problem.
    let truncated = dir.path().join("truncated.onnx");
    let bytes = std::fs::read(shipped_model()).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let base = base_config(1, "http://127.0.0.1:1", 0, &truncated);
    let cases = [
        (base.clone(), "truncated.onnx"),
        (
            base_config(1, "http://127.0.0.1:1", 0, &shipped_model()).replace(
                "[influx]",
                &format!("sha256 = \"{}\"\n\n[influx]", "ab".repeat(32)),
            ),
            "SHA-256",
        ),
        (
            base_config(1, "http://127.0.0.1:1", 0, &shipped_model())
                .replace("[influx]", "channels = [\"current\", \"rpm\"]\n\n[influx]"),
            "\"rpm\"",
        ),
    ];
    for (text, needle) in cases {
        std::fs::write(&good, text).unwrap();
        let out = Command::new(anomalyd_bin())
            .args(["check-config", "--config"])
            .arg(&good)
            .env("ORT_DYLIB_PATH", ort_dylib())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{err}");
        assert!(err.contains(needle), "{needle} not in {err}");
    }
}

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
    let cfg = base_config(broker.port(), &vm.url(), metrics_port, &shipped_model()).replace(
        "reconnect_max_ms = 500",
        &format!(
            "reconnect_max_ms = 500\nusername = \"anomalyd\"\npassword_file = \"{}\"\n[mqtt.tls]\nenabled = true\nca_file = \"{}\"",
            pw.display(),
            broker.ca_file().display()
        ),
    );
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
    let cfg = base_config(broker.port(), &vm.url(), metrics_port, &shipped_model());
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
    let cfg = base_config(broker.port(), &vm.url(), metrics_port, &model);
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

/// `inspect-model` prints the contract of the shipped model.
#[test]
fn inspect_model_prints_metadata_and_io() {
    let out = Command::new(anomalyd_bin())
        .arg("inspect-model")
        .arg(shipped_model())
        .env("ORT_DYLIB_PATH", ort_dylib())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "vibration_1",
        "flow_rate",
        "window",
        "reconstruction",
        "channel_error",
        "score",
        "threshold",
    ] {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }
}

/// Two models at once: assets are bound by pattern, and the `model` tag
/// says which one scored them. `replay --influx` backfills the same
/// records a live run writes.
#[test]
fn assets_bind_to_models_and_replay_backfills() {
    let broker = Mosquitto::start();
    let vm = VictoriaMetrics::start();
    let metrics_port = free_port();
    let cfg = base_config(broker.port(), &vm.url(), metrics_port, &shipped_model()).replace(
        "[influx]",
        &format!(
            "[[models]]\nname = \"pump-b\"\npath = \"{}\"\n\n[[assets]]\npattern = \"line-b-*\"\nmodel = \"pump-b\"\nthreshold = 5.0\n\n[influx]",
            shipped_model().display()
        ),
    );
    let mut daemon = Daemon::start(&cfg, metrics_port, &[]);
    daemon.wait_note("READY=1", Duration::from_secs(60));
    let log = generate(WINDOW + 20, 9, START_NS, 1_000_000_000, None);
    publish_frames(broker.port(), "line-a-1", &log);
    publish_frames(broker.port(), "line-b-1", &log);
    let a = vm.wait_for_points(
        "anomaly_score_threshold{asset=\"line-a-1\"}",
        20,
        Duration::from_secs(60),
    );
    let b = vm.wait_for_points(
        "anomaly_score_threshold{asset=\"line-b-1\"}",
        20,
        Duration::from_secs(60),
    );
    assert_eq!(a[0].label("model"), Some("pump"));
    assert_eq!(b[0].label("model"), Some("pump-b"));
    assert!(
        b[0].points().iter().all(|p| (p.1 - 5.0).abs() < 1e-6),
        "per-asset threshold override"
    );
    assert!(a[0].points().iter().all(|p| (p.1 - 5.0).abs() > 1e-3));
    assert!(daemon.terminate(Duration::from_secs(20)).success());

    // Backfill: replay the same rows into the database under another asset.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("log.csv");
    std::fs::write(&input, log.to_csv()).unwrap();
    let cfg_path = dir.path().join("anomalyd.toml");
    std::fs::write(&cfg_path, &cfg).unwrap();
    let out = Command::new(anomalyd_bin())
        .args(["replay", "--influx", "--asset", "backfill-1", "--model"])
        .arg(shipped_model())
        .arg("--input")
        .arg(&input)
        .arg("--config")
        .arg(&cfg_path)
        .env("ORT_DYLIB_PATH", ort_dylib())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Replay closes the last frame at end of input: one window more than live.
    let back = vm.wait_for_points(
        "anomaly_score_score{asset=\"backfill-1\"}",
        21,
        Duration::from_secs(60),
    );
    assert_eq!(point_count(&back), 21);
    let live = vm.export("anomaly_score_score{asset=\"line-a-1\"}");
    let live_pts = live[0].points();
    for (l, r) in live_pts.iter().zip(back[0].points()) {
        assert_eq!(l.0, r.0);
        assert!(
            (l.1 - r.1).abs() <= 1e-4 * l.1.abs().max(1e-3),
            "{l:?} vs {r:?}"
        );
    }
}
