//! What the trainer's integration tests share: where the workspace, the
//! ONNX Runtime library and the benchmark data are. Each test crate uses a
//! part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use anomalyd::cmd::replay::{ReplayOptions, ReplaySummary, RowResult, replay};
use anomalyd::model::RuntimeOptions;

/// The repository root (the trainer lives in `<root>/training`).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("training/ has a parent")
        .to_path_buf()
}

/// `ORT_DYLIB_PATH`, else the library `scripts/setup.sh` puts in `.ort/`.
pub fn ort_library() -> PathBuf {
    match std::env::var_os("ORT_DYLIB_PATH") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => workspace().join(".ort/libonnxruntime.so.1.31.1"),
    }
}

/// The folder `$var` names, else `<workspace>/../shared/data/<name>`, if
/// every one of `files` is in it. Otherwise `None` after printing why the
/// test is skipped; under `CI=true` the test fails instead.
pub fn data_dir(var: &str, name: &str, what: &str, files: &[&str]) -> Option<PathBuf> {
    let dir = match std::env::var_os(var) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => workspace().join("../shared/data").join(name),
    };
    if files.iter().all(|f| dir.join(f).is_file()) {
        return Some(dir);
    }
    let reason = format!(
        "{what} files {files:?} not found under {} (set {var})",
        dir.display()
    );
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{reason}; required when CI=true"
    );
    eprintln!("skipping: {reason}");
    None
}

/// Replays `log` through the daemon's pipeline (`anomalyd::cmd::replay`)
/// with `model`, writing the per-row results to `csv`.
pub fn replay_log(model: &Path, log: &Path, csv: &Path) -> (ReplaySummary, Vec<RowResult>) {
    replay(&ReplayOptions {
        model: model.to_path_buf(),
        input: log.to_path_buf(),
        asset: "replay".into(),
        output: Some(csv.to_path_buf()),
        config: None,
        influx: false,
        timestamp_column: None,
        runtime: RuntimeOptions {
            library_path: Some(ort_library()),
            ..RuntimeOptions::cpu()
        },
        batch: 256,
        rule: None,
        progress: false,
    })
    .unwrap_or_else(|e| panic!("replay of {}: {e}", log.display()))
}

/// Runs a benchmark's scorer binary over the replays in `replays` for
/// `logs`, drawing `plot_file` to `plot`; its standard output, once it
/// succeeded.
pub fn score(bin: &str, replays: &Path, plot: &Path, plot_file: &str, logs: &[PathBuf]) -> String {
    let o = Command::new(bin)
        .arg("--replays")
        .arg(replays)
        .arg("--plot")
        .arg(plot)
        .args(["--plot-file", plot_file])
        .args(logs)
        .output()
        .unwrap_or_else(|e| panic!("run {bin}: {e}"));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    stdout
}
