//! `anomalyd-train --influx-url` against a real InfluxDB 1.6.7 (`influxd`,
//! Debian package `influxdb`) on a free loopback port: a pump's history
//! written as one measurement is read back through InfluxQL, and the model
//! trained from it equals the one trained from the same rows as CSV.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anomalyd::core::contract::ModelMetadata;
use anomalyd::core::synth::{self, PUMP_CHANNELS};
use anomalyd::model::{LoadedModel, RuntimeOptions};

const BIN: &str = env!("CARGO_BIN_EXE_anomalyd-train");
const INFLUXD: &str = "/usr/bin/influxd";
/// Small settings that train in well under a second (as in `cli.rs`).
const FAST: &str = "--window 16 --filters 8,4 --kernel 5 --epochs 4 --batch-size 16";

/// `influxd` in `dir` on a free port; killed when dropped.
struct Influxd {
    child: Child,
    url: String,
}

impl Drop for Influxd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

fn start_influxd(dir: &Path) -> Option<Influxd> {
    if !Path::new(INFLUXD).exists() {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "{INFLUXD} missing (Debian package influxdb; scripts/setup.sh)"
        );
        eprintln!("skipping: {INFLUXD} not found (Debian package influxdb)");
        return None;
    }
    let port = free_port();
    let conf = dir.join("influxdb.conf");
    std::fs::write(
        &conf,
        format!(
            "reporting-disabled = true\nbind-address = \"127.0.0.1:{}\"\n[meta]\n  dir = \"{d}/meta\"\n[data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n[http]\n  bind-address = \"127.0.0.1:{port}\"\n  log-enabled = false\n[monitor]\n  store-enabled = false\n",
            free_port(),
            d = dir.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("influxd.log")).unwrap();
    let child = Command::new(INFLUXD)
        .arg("-config")
        .arg(&conf)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("start influxd");
    let mut s = Influxd {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let start = Instant::now();
    while ureq::get(&format!("{}/ping", s.url)).call().is_err() {
        // Ours, not another test's server that took the port meanwhile.
        if let Ok(Some(status)) = s.child.try_wait() {
            let log = std::fs::read_to_string(dir.join("influxd.log")).unwrap_or_default();
            panic!("influxd exited ({status}):\n{log}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "influxd did not answer /ping"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        matches!(s.child.try_wait(), Ok(None)),
        "influxd exited after /ping answered: another server holds the port"
    );
    Some(s)
}

/// Creates `name` and waits until the server lists it.
fn create_database(url: &str, name: &str) {
    let q = |q: &str| {
        ureq::post(&format!("{url}/query"))
            .send_form(&[("q", q)])
            .expect("query")
            .into_string()
            .expect("query answer")
    };
    let answer = q(&format!("CREATE DATABASE {name}"));
    assert!(!answer.contains("\"error\""), "CREATE DATABASE: {answer}");
    let start = Instant::now();
    while !q("SHOW DATABASES").contains(&format!("[\"{name}\"]")) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "database {name} not listed after CREATE DATABASE"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn metadata(path: &Path) -> ModelMetadata {
    LoadedModel::load(path, &RuntimeOptions::cpu())
        .expect("model loads through ONNX Runtime")
        .metadata
}

fn train(args: &[&str]) -> String {
    let o = Command::new(BIN)
        .args(args)
        .args(FAST.split(' '))
        .env_remove("INFLUX_TOKEN")
        .env_remove("INFLUX_USERNAME")
        .output()
        .expect("run anomalyd-train");
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    err.into_owned()
}

#[test]
fn a_model_trained_from_influxdb_equals_one_trained_from_the_same_csv() {
    let dir = tempfile::tempdir().unwrap();
    let Some(db) = start_influxd(dir.path()) else {
        return;
    };
    create_database(&db.url, "plant");
    let rows = 400;
    let log = synth::generate(rows, 3, 1_767_225_600_000_000_000, 1_000_000_000, None);
    // Two pumps in one measurement, as the daemon's [record] writes them;
    // the trainer reads one of them by its tag.
    let mut lines = String::new();
    for (asset, values) in [
        ("pump-7", &log.values),
        ("pump-8", &log.values[..50].to_vec()),
    ] {
        for (ts, row) in log.timestamps.iter().zip(values.iter()) {
            let fields: Vec<String> = PUMP_CHANNELS
                .iter()
                .zip(row)
                .map(|(c, v)| format!("{c}={v}"))
                .collect();
            lines.push_str(&format!(
                "frames,asset={asset},host=gw1 {} {ts}\n",
                fields.join(",")
            ));
        }
    }
    let r = ureq::post(&format!("{}/write?db=plant&precision=n", db.url))
        .send_string(&lines)
        .expect("write");
    assert_eq!(r.status(), 204);

    let csv = dir.path().join("pump.csv");
    std::fs::write(&csv, log.to_csv()).unwrap();
    let from_csv = dir.path().join("csv.onnx");
    train(&[
        "--input",
        csv.to_str().unwrap(),
        "--out",
        from_csv.to_str().unwrap(),
    ]);
    let from_db = dir.path().join("db.onnx");
    let err = train(&[
        "--influx-url",
        &db.url,
        "--database",
        "plant",
        "--measurement",
        "frames",
        "--tag",
        "asset=pump-7",
        "--range",
        "2026-01-01T00:00:00Z..2026-01-02T00:00:00Z",
        // InfluxQL lists fields by name: the model's order is given.
        "--channels",
        &PUMP_CHANNELS.join(","),
        "--out",
        from_db.to_str().unwrap(),
    ]);
    assert!(err.contains(&format!("read {rows} rows of")), "{err}");

    let (a, b) = (metadata(&from_csv), metadata(&from_db));
    assert_eq!(a.channels, b.channels);
    assert_eq!(a.training.data_fingerprint, b.training.data_fingerprint);
    assert_eq!(a.training.rows, rows);
    assert_eq!(b.training.rows, rows);
    assert_eq!(a.normaliser, b.normaliser);
    assert_eq!(a.threshold.value, b.threshold.value);
    assert_eq!(a.training.validation_loss, b.training.validation_loss);
}
