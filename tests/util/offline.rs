//! The offline tools a test runs to completion: `anomalyd replay` (a
//! model's scores of a CSV log) and the trainer, `anomalyd-train`, found
//! next to the daemon's binary in the target directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::paths::is_ci;
use super::{anomalyd_bin, ort_dylib};

/// One row of `replay`'s output: timestamp (ns), score (none while the
/// window fills or for a gap), anomaly flag.
pub type ReplayRow = (i64, Option<f64>, u8);

/// Scores `input` (a CSV log) as asset `asset` with `model` through
/// `anomalyd replay`, writing `output`; panics with replay's stderr if it
/// fails.
pub fn replay_scores(model: &Path, input: &Path, asset: &str, output: &Path) -> Vec<ReplayRow> {
    let st = Command::new(anomalyd_bin())
        .args(["replay", "--model"])
        .arg(model)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(output)
        .args(["--asset", asset])
        .env("ORT_DYLIB_PATH", ort_dylib())
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "replay: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let text = std::fs::read_to_string(output).unwrap();
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

/// The trainer's binary, in the daemon's target directory. The daemon's
/// tests do not build it: `cargo test --workspace` (scripts/test.sh) or
/// `cargo build -p anomalyd-train` does. `None` (printed) when absent;
/// under `CI=true` a missing trainer fails the test.
pub fn trainer_bin() -> Option<PathBuf> {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_anomalyd")).with_file_name("anomalyd-train");
    if bin.is_file() {
        return Some(bin);
    }
    let msg = format!(
        "{} not found: build the trainer first (cargo build -p anomalyd-train, or cargo test --workspace)",
        bin.display()
    );
    assert!(!is_ci(), "{msg} (required when CI=true)");
    eprintln!("skipping: {msg}");
    None
}

/// Runs the trainer with `args` and no InfluxDB credentials from the
/// environment; panics with its output unless it succeeds.
pub fn run_trainer(bin: &Path, args: &[&str]) -> Output {
    let o = Command::new(bin)
        .args(args)
        .env("ORT_DYLIB_PATH", ort_dylib())
        .env_remove("INFLUX_TOKEN")
        .env_remove("INFLUX_USERNAME")
        .env_remove("INFLUX_PASSWORD")
        .output()
        .expect("run anomalyd-train");
    assert!(
        o.status.success(),
        "anomalyd-train {args:?}\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}
