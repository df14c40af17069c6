//! Where things are: the workspace and its shipped files, the binary under
//! test, ONNX Runtime, the SKAB data set, and the Debian tools some tests
//! need. What is missing skips a test outside CI and fails it under
//! `CI=true`, because CI must never pass by skipping.

use std::path::{Path, PathBuf};

/// The workspace root (the `anomalyd` package directory).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `anomalyd` binary Cargo built for these tests.
pub fn anomalyd_bin() -> PathBuf {
    // Another build of the daemon (e.g. an older release, to measure the
    // fault scenarios against it) in place of this one.
    match std::env::var_os("ANOMALYD_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_anomalyd")),
    }
}

/// The ONNX Runtime library: `$ORT_DYLIB_PATH`, else the copy that
/// `scripts/setup.sh` puts in `<root>/.ort/`.
pub fn ort_dylib() -> PathBuf {
    match std::env::var_os("ORT_DYLIB_PATH") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => workspace_root().join(".ort/libonnxruntime.so.1.31.1"),
    }
}

/// The SKAB data set: `$SKAB_DIR`, else `<root>/../shared/data/skab`.
///
/// Returns `None` (and prints why, so a skipped test is visible with
/// `--nocapture`) when it is absent; panics instead when `CI=true`, because CI
/// must never pass by skipping.
pub fn skab_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("SKAB_DIR") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => workspace_root().join("../shared/data/skab"),
    };
    if dir.is_dir() {
        return Some(dir);
    }
    let reason = format!("SKAB data set not found at {}", dir.display());
    if is_ci() {
        panic!("{reason} (required when CI=true; set SKAB_DIR)");
    }
    eprintln!("skipping: {reason} (set SKAB_DIR to run this test)");
    None
}

/// Whether the tests run under CI (`CI=true`).
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The path of a tool from a Debian package, or `None` (printed) when it is
/// missing outside CI; under `CI=true` a missing tool fails the test.
pub fn tool(path: &str, package: &str) -> Option<PathBuf> {
    if Path::new(path).exists() {
        return Some(PathBuf::from(path));
    }
    let msg = format!("{path} not found: install Debian package `{package}` (scripts/setup.sh)");
    assert!(!is_ci(), "{msg} (required when CI=true)");
    eprintln!("skipping: {msg}");
    None
}

/// A file of the workspace, by its path relative to the root.
pub fn read_repo_file(rel: &str) -> String {
    let p = workspace_root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// The permission bits of `p` (with setuid, setgid and sticky).
pub fn file_mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}
