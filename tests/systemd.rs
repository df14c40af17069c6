//! The systemd unit as an operator installs it: `systemd-analyze verify`
//! has nothing to say, `security` keeps the measured exposure, its
//! credentials agree with the config and the installers, and ONNX Runtime
//! scores under MemoryDenyWriteExecute. The template unit for several
//! daemons on one host (`anomalyd@.service`) verifies too and keeps the
//! main unit's hardening line for line.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::*;

/// The shipped unit with ExecStart pointing at the binary under test, so
/// `systemd-analyze` can resolve it, in a directory of its own.
fn unit_copy(dir: &Path, with_cuda_dropin: bool) -> PathBuf {
    let unit = read_repo_file("systemd/anomalyd.service");
    let exec = "ExecStart=/usr/bin/anomalyd run --config /etc/anomalyd/anomalyd.toml";
    assert!(unit.contains(exec), "the unit must start {exec}");
    let path = dir.join("anomalyd.service");
    std::fs::write(
        &path,
        unit.replace(
            "ExecStart=/usr/bin/anomalyd",
            &format!("ExecStart={}", anomalyd_bin().display()),
        ),
    )
    .unwrap();
    if with_cuda_dropin {
        let d = dir.join("anomalyd.service.d");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("cuda.conf"), read_repo_file("systemd/cuda.conf")).unwrap();
    }
    path
}

/// `Overall exposure level for anomalyd.service: 1.1 OK`
fn exposure(report: &str) -> f64 {
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    line.rsplit(':')
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse {line:?}"))
}

/// Asserts `systemd-analyze verify` says nothing about `unit`; returns its
/// exposure (`security --offline`) and the report.
fn verify_and_score(analyze: &Path, unit: &Path) -> (f64, String) {
    let out = run_output(Command::new(analyze).arg("verify").arg(unit));
    assert!(
        out.status.success() && output_text(&out).trim().is_empty(),
        "systemd-analyze verify {} said:\n{}",
        unit.display(),
        output_text(&out)
    );
    let out = run_output(
        Command::new(analyze)
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(unit),
    );
    let report = output_text(&out);
    (exposure(&report), report)
}

/// `systemd-analyze verify` only warns on typos and unknown keys (exit 0),
/// so any output at all fails; the exposure score must stay where it was
/// measured (1.1 "OK"; 1.3 with the CUDA drop-in).
#[test]
fn unit_verifies_without_a_word_and_stays_hardened() {
    let Some(analyze) = tool("/usr/bin/systemd-analyze", "systemd") else {
        return;
    };
    for (cuda, bound) in [(false, 1.5), (true, 2.0)] {
        let dir = tempfile::tempdir().unwrap();
        let unit = unit_copy(dir.path(), cuda);
        let (score, report) = verify_and_score(&analyze, &unit);
        println!("systemd-analyze security (cuda drop-in: {cuda}): exposure {score}");
        assert!(
            score < bound,
            "exposure {score} >= {bound} (cuda drop-in: {cuda}):\n{report}"
        );
    }
    let unit = read_repo_file("systemd/anomalyd.service");
    for line in [
        "Type=notify",
        "DynamicUser=yes",
        "StateDirectory=anomalyd",
        "ConfigurationDirectory=anomalyd",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "MemoryDenyWriteExecute=yes",
        "SystemCallFilter=@system-service",
    ] {
        assert!(unit.lines().any(|l| l == line), "unit lacks {line}");
    }
    assert!(unit.lines().any(|l| l.starts_with("WatchdogSec=")));
}

/// Every `LoadCredential=` of the unit is named by the config's comments as
/// `/run/credentials/anomalyd.service/NAME`, and created (empty, 0600) by
/// both installers, since a missing source file fails the start.
#[test]
fn credentials_agree_between_unit_config_and_installers() {
    let unit = read_repo_file("systemd/anomalyd.service");
    let creds: Vec<(String, String)> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("LoadCredential="))
        .map(|v| {
            let (name, path) = v.split_once(':').expect("LoadCredential=NAME:PATH");
            (name.to_string(), path.to_string())
        })
        .collect();
    let names: Vec<&str> = creds.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["influx-token", "mqtt-password"]);
    let config = read_repo_file("config/anomalyd.toml");
    let postinst = read_repo_file("packaging/debian/postinst");
    let install = read_repo_file("scripts/install.sh");
    for (name, path) in &creds {
        let run_path = format!("/run/credentials/anomalyd.service/{name}");
        assert!(
            config.contains(&run_path),
            "config/anomalyd.toml never names {run_path}"
        );
        assert_eq!(path, &format!("/etc/anomalyd/credentials/{name}"));
        assert!(postinst.contains(name) && postinst.contains("/etc/anomalyd/credentials"));
        assert!(install.contains(name), "install.sh does not create {path}");
    }
}

/// systemd's MemoryDenyWriteExecute=yes is a seccomp filter; systemd is not
/// PID 1 where the tests run, so `scripts/mdwe-exec.py` installs the same
/// rules and the whole ONNX Runtime path (load the library, create the
/// session, score windows) runs under them.
#[test]
fn onnx_runtime_scores_under_memory_deny_write_execute() {
    let Some(python) = tool("/usr/bin/python3", "python3") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = anomalyd::core::synth::generate(
        120,
        3,
        1_767_225_600_000_000_000,
        1_000_000_000,
        Some((anomalyd::core::synth::FaultKind::Bearing, 80..120)),
    );
    let input = dir.path().join("in.csv");
    std::fs::write(&input, log.to_csv()).unwrap();
    let output = dir.path().join("scores.csv");
    let out = run_output(
        Command::new(python)
            .arg(workspace_root().join("scripts/mdwe-exec.py"))
            .arg(anomalyd_bin())
            .args(["replay", "--model"])
            .arg(workspace_root().join("models/pump.onnx"))
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(&output)
            .env("ORT_DYLIB_PATH", ort_dylib()),
    );
    assert!(
        out.status.success(),
        "replay under MDWE failed:\n{}",
        output_text(&out)
    );
    let scores = std::fs::read_to_string(&output).unwrap();
    // A header and a line per row; a window ends at every row from the
    // model's window length on.
    assert_eq!(scores.lines().count(), 121, "{scores}");
    let inspect = run_output(
        Command::new(anomalyd_bin())
            .arg("inspect-model")
            .arg(workspace_root().join("models/pump.onnx"))
            .env("ORT_DYLIB_PATH", ort_dylib()),
    );
    let window: usize = output_text(&inspect)
        .split("window ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no window length in:\n{}", output_text(&inspect)));
    let scored = format!(" {} windows scored", 120 - window + 1);
    assert!(output_text(&out).contains(&scored), "{}", output_text(&out));
}

/// The `[Service]` lines of a unit that are settings (not comments, not
/// blank), in order.
fn service_settings(unit: &str) -> Vec<&str> {
    unit.lines()
        .skip_while(|l| *l != "[Service]")
        .take_while(|l| *l != "[Install]")
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// `anomalyd@NAME`: `systemd-analyze verify` of an instance says nothing,
/// its exposure is the main unit's, it reads `/etc/anomalyd/NAME.toml`
/// and keeps state in `/var/lib/anomalyd/NAME`, and every other setting
/// (hardening, credentials, timeouts, watchdog) is the main unit's.
#[test]
fn template_unit_verifies_and_keeps_the_main_units_settings() {
    let template = read_repo_file("systemd/anomalyd@.service");
    let main = read_repo_file("systemd/anomalyd.service");
    let differ = [
        (
            "ExecStart=/usr/bin/anomalyd run --config /etc/anomalyd/anomalyd.toml",
            "ExecStart=/usr/bin/anomalyd run --config /etc/anomalyd/%i.toml",
        ),
        ("StateDirectory=anomalyd", "StateDirectory=anomalyd/%i"),
    ];
    let expected: Vec<&str> = service_settings(&main)
        .into_iter()
        .map(|l| differ.iter().find(|d| d.0 == l).map_or(l, |d| d.1))
        .collect();
    assert_eq!(service_settings(&template), expected);
    assert!(template.contains("\n[Install]\nWantedBy=multi-user.target\n"));

    let Some(analyze) = tool("/usr/bin/systemd-analyze", "systemd") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("anomalyd@.service"),
        template.replace(
            "ExecStart=/usr/bin/anomalyd",
            &format!("ExecStart={}", anomalyd_bin().display()),
        ),
    )
    .unwrap();
    let instance = dir.path().join("anomalyd@a.service");
    let (score, report) = verify_and_score(&analyze, &instance);
    println!("systemd-analyze security anomalyd@a.service: exposure {score}");
    assert!(score < 1.5, "exposure {score}:\n{report}");
}
