//! The commands that check and exit: `run` and `check-config` refuse a bad
//! config or model with exit code 78 and name the key or file, and
//! `inspect-model` prints the model's contract without ONNX Runtime's
//! telemetry uploader starting.

use std::path::Path;
use std::process::Command;

use crate::util::*;

/// `anomalyd SUB --config PATH` with the test's ONNX Runtime; the caller
/// adds to its environment and runs it.
fn with_config(sub: &str, path: &Path) -> Command {
    let mut cmd = Command::new(anomalyd_bin());
    cmd.args([sub, "--config"])
        .arg(path)
        .env("ORT_DYLIB_PATH", ort_dylib());
    cmd
}

/// A config whose broker and database nobody serves: the commands under
/// test must refuse or accept it without connecting to either.
fn offline_config() -> DaemonConfig {
    DaemonConfig::new(1, "http://127.0.0.1:1", 0)
}

/// A config problem exits 78 and names the key; nothing is connected.
#[test]
fn bad_config_exits_78_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let text = offline_config().qos(7).batch_size(0).to_toml();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).unwrap();
    for sub in ["run", "check-config"] {
        let out = with_config(sub, &path).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{sub}: {err}");
        assert!(
            err.contains("mqtt.qos") && err.contains("influx.batch_size"),
            "{err}"
        );
    }
    // An environment override with a wrong type names the key too.
    let good = dir.path().join("good.toml");
    std::fs::write(&good, offline_config().to_toml()).unwrap();
    let out = with_config("check-config", &good)
        .env("ANOMALYD__MQTT__PORT", "many")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mqtt.port"));
    // A good config passes check-config and names its model.
    let out = with_config("check-config", &good).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("model \"pump\""));
    // A model that is not an ONNX file is refused with its path.
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"not a model").unwrap();
    let text = offline_config().model_path(&junk).to_toml();
    std::fs::write(&good, text).unwrap();
    let out = with_config("check-config", &good).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("junk.onnx"));
    // A truncated model file, a pinned hash that does not match, and a
    // channel the model lacks: each refused, naming the problem.
    let truncated = dir.path().join("truncated.onnx");
    let bytes = std::fs::read(shipped_model()).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let base = offline_config().model_path(&truncated).to_toml();
    let cases = [
        (base.clone(), "truncated.onnx"),
        (
            offline_config().model_sha256(&"ab".repeat(32)).to_toml(),
            "SHA-256",
        ),
        (
            offline_config()
                .model_channels(&["current", "rpm"])
                .to_toml(),
            "\"rpm\"",
        ),
    ];
    for (text, needle) in cases {
        std::fs::write(&good, text).unwrap();
        let out = with_config("check-config", &good).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{err}");
        assert!(err.contains(needle), "{needle} not in {err}");
    }
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

/// Loading ONNX Runtime leaves no trace of its telemetry uploader: the
/// official 1.31.1 build writes a device identifier and an event cache
/// under `~/.cache/Microsoft` when it starts the uploader (which then calls
/// out to Microsoft), unless `ORT_DISABLE_TELEMETRY` is set before it
/// initialises. The binary sets it itself; `CI` is removed because ONNX
/// Runtime also stays quiet under CI, which would hide a regression here.
#[test]
fn loading_onnx_runtime_starts_no_telemetry_uploader() {
    // Unset, and set empty (which the library reads as "on").
    for value in [None, Some("")] {
        let home = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(anomalyd_bin());
        cmd.arg("inspect-model")
            .arg(shipped_model())
            .env("ORT_DYLIB_PATH", ort_dylib())
            .env("HOME", home.path())
            .env_remove("XDG_CACHE_HOME")
            .env_remove("CI");
        match value {
            Some(v) => cmd.env("ORT_DISABLE_TELEMETRY", v),
            None => cmd.env_remove("ORT_DISABLE_TELEMETRY"),
        };
        run_checked(&mut cmd);
        let left: Vec<_> = walk(home.path());
        assert!(left.is_empty(), "{value:?}: ONNX Runtime wrote {left:?}");
    }
}

/// Every file below `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// check-config reads a `/run/credentials/...` secret from
/// `$CREDENTIALS_DIRECTORY` (where systemd puts it for the service) and
/// says so; an empty one is a config error naming its key.
#[test]
fn check_config_reads_unit_credentials_and_refuses_an_empty_one() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("influx-token"), "s3cret\n").unwrap();
    let path = dir.path().join("c.toml");
    let unit_path = Path::new("/run/credentials/anomalyd.service/influx-token");
    std::fs::write(
        &path,
        offline_config().influx_token_file(unit_path).to_toml(),
    )
    .unwrap();
    let out = with_config("check-config", &path)
        .env("CREDENTIALS_DIRECTORY", &creds)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.contains("influx.token_file"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        line.contains(&creds.join("influx-token").display().to_string())
            && line.contains("$CREDENTIALS_DIRECTORY"),
        "{line}"
    );
    std::fs::write(creds.join("influx-token"), "").unwrap();
    let out = with_config("check-config", &path)
        .env("CREDENTIALS_DIRECTORY", &creds)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("influx.token_file") && err.contains("is empty"),
        "{err}"
    );
}

/// `--help` lists the exit codes, and the hidden `generate-docs` writes the
/// man page (subcommands, exit status) and the three shell completions that
/// the package installs.
#[test]
fn help_and_man_page_list_the_exit_codes() {
    let out = Command::new(anomalyd_bin()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{help}");
    assert!(
        help.contains("78  a configuration problem (EX_CONFIG)"),
        "{help}"
    );
    assert!(
        !help.contains("generate-docs"),
        "hidden subcommand shown: {help}"
    );

    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(anomalyd_bin())
        .args(["generate-docs", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // roff escapes hyphens.
    let page = std::fs::read_to_string(dir.path().join("anomalyd.8"))
        .unwrap()
        .replace("\\-", "-");
    assert!(page.contains(".TH anomalyd 8"), "{page}");
    for needle in [
        "anomalyd-check-config(8)",
        "anomalyd-replay(8)",
        "EX_CONFIG",
    ] {
        assert!(page.contains(needle), "man page lacks {needle}: {page}");
    }
    for sub in ["run", "check-config", "inspect-model", "replay", "simulate"] {
        let p = dir.path().join(format!("anomalyd-{sub}.8"));
        assert!(p.exists(), "no page for {sub}");
    }
    assert!(!dir.path().join("anomalyd-generate-docs.8").exists());
    let bash = std::fs::read_to_string(dir.path().join("anomalyd.bash")).unwrap();
    assert!(bash.contains("check-config") && bash.contains("--config"));
    assert!(dir.path().join("_anomalyd").exists());
    assert!(dir.path().join("anomalyd.fish").exists());
}
