//! What an operator installs and looks at: the systemd unit (`systemd-analyze
//! verify` and `security`), MemoryDenyWriteExecute with ONNX Runtime,
//! `scripts/install.sh` / `uninstall.sh` in a scratch root, the cargo-deb
//! metadata, the shell scripts (shellcheck), and the dashboards, whose every
//! query may name only measurements, fields, tags and metrics the daemon
//! really writes. The .deb itself is built and checked by
//! `scripts/build-deb.sh` (CI runs it after the tests).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anomalyd::core::detect::{AlertEvent, AlertKind, DetectorSettings};
use anomalyd::core::synth::PUMP_CHANNELS;
use anomalyd::ops::metrics::Metrics;
use anomalyd::pipeline::{AssetBinding, Output as PipelineOutput, ScoreRecord};
use anomalyd::sinks::influx::{Measurements, format_output};
use serde_json::Value;

use crate::util::*;

fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The path of a tool from a Debian package, or `None` (printed) when it is
/// missing outside CI; under `CI=true` a missing tool fails the test.
fn tool(path: &str, package: &str) -> Option<PathBuf> {
    if Path::new(path).exists() {
        return Some(PathBuf::from(path));
    }
    let msg = format!("{path} not found: install Debian package `{package}` (scripts/setup.sh)");
    assert!(!is_ci(), "{msg} (required when CI=true)");
    eprintln!("skipping: {msg}");
    None
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn read(rel: &str) -> String {
    let p = workspace_root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

// ---------------------------------------------------------------------------
// systemd
// ---------------------------------------------------------------------------

/// The shipped unit with ExecStart pointing at the binary under test, so
/// `systemd-analyze` can resolve it, in a directory of its own.
fn unit_copy(dir: &Path, with_cuda_dropin: bool) -> PathBuf {
    let unit = read("systemd/anomalyd.service");
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
        std::fs::write(d.join("cuda.conf"), read("systemd/cuda.conf")).unwrap();
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
        let out = run(Command::new(&analyze).arg("verify").arg(&unit));
        assert!(
            out.status.success() && text(&out).trim().is_empty(),
            "systemd-analyze verify (cuda drop-in: {cuda}) said:\n{}",
            text(&out)
        );
        let out = run(Command::new(&analyze)
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(&unit));
        let report = text(&out);
        let score = exposure(&report);
        println!("systemd-analyze security (cuda drop-in: {cuda}): exposure {score}");
        assert!(
            score < bound,
            "exposure {score} >= {bound} (cuda drop-in: {cuda}):\n{report}"
        );
    }
    let unit = read("systemd/anomalyd.service");
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
    let unit = read("systemd/anomalyd.service");
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
    let config = read("config/anomalyd.toml");
    let postinst = read("packaging/debian/postinst");
    let install = read("scripts/install.sh");
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
    let out = run(Command::new(python)
        .arg(workspace_root().join("scripts/mdwe-exec.py"))
        .arg(anomalyd_bin())
        .args(["replay", "--model"])
        .arg(workspace_root().join("models/pump.onnx"))
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .env("ORT_DYLIB_PATH", ort_dylib()));
    assert!(
        out.status.success(),
        "replay under MDWE failed:\n{}",
        text(&out)
    );
    let scores = std::fs::read_to_string(&output).unwrap();
    // A header and a line per row; a window ends at every row from the
    // model's window length on.
    assert_eq!(scores.lines().count(), 121, "{scores}");
    let inspect = run(Command::new(anomalyd_bin())
        .arg("inspect-model")
        .arg(workspace_root().join("models/pump.onnx"))
        .env("ORT_DYLIB_PATH", ort_dylib()));
    let window: usize = text(&inspect)
        .split("window ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no window length in:\n{}", text(&inspect)));
    let scored = format!(" {} windows scored", 120 - window + 1);
    assert!(text(&out).contains(&scored), "{}", text(&out));
}

// ---------------------------------------------------------------------------
// install.sh / uninstall.sh
// ---------------------------------------------------------------------------

/// Every path under `root`, relative, directories with a trailing `/`.
fn tree(root: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if e.file_type().unwrap().is_dir() {
                out.insert(format!("{rel}/"));
                walk(root, &p, out);
            } else {
                out.insert(rel);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn script(name: &str, root: &Path, extra: &[&str]) -> String {
    let mut cmd = Command::new("bash");
    cmd.arg(workspace_root().join("scripts").join(name))
        .arg("--root")
        .arg(root)
        .args(extra)
        .env_remove("DESTDIR");
    let out = run(&mut cmd);
    assert!(out.status.success(), "{name} failed:\n{}", text(&out));
    text(&out)
}

/// install.sh puts exactly the documented files in place with the right
/// modes; the installed config checks out against the installed model and
/// library; uninstall.sh removes exactly that, keeps an edited config and
/// credential until `--purge`, and leaves nothing behind after it.
#[test]
fn install_and_uninstall_in_a_scratch_root() {
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let ort_dir = ort_dylib().parent().unwrap().to_path_buf();
    let bin = anomalyd_bin();
    let install_args = [
        "--bin",
        bin.to_str().unwrap(),
        "--ort-dir",
        ort_dir.to_str().unwrap(),
    ];
    script("install.sh", &root, &install_args);

    let mut expected: BTreeSet<String> = [
        "etc/",
        "etc/anomalyd/",
        "etc/anomalyd/anomalyd.toml",
        "etc/anomalyd/credentials/",
        "etc/anomalyd/credentials/influx-token",
        "etc/anomalyd/credentials/mqtt-password",
        "usr/",
        "usr/bin/",
        "usr/bin/anomalyd",
        "usr/lib/",
        "usr/lib/anomalyd/",
        "usr/lib/systemd/",
        "usr/lib/systemd/system/",
        "usr/lib/systemd/system/anomalyd.service",
        "usr/share/",
        "usr/share/anomalyd/",
        "usr/share/anomalyd/install.manifest",
        "usr/share/anomalyd/models/",
        "usr/share/anomalyd/models/pump.onnx",
        "usr/share/anomalyd/dashboards/",
        "usr/share/anomalyd/systemd/",
        "usr/share/anomalyd/systemd/cuda.conf",
        "usr/share/doc/",
        "usr/share/doc/anomalyd/",
        "usr/share/doc/anomalyd/README.md",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    for e in std::fs::read_dir(&ort_dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name.starts_with("libonnxruntime") && name.contains(".so") {
            expected.insert(format!("usr/lib/anomalyd/{name}"));
        }
    }
    let mut boards = 0;
    for e in std::fs::read_dir(workspace_root().join("dashboards")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") {
            expected.insert(format!("usr/share/anomalyd/dashboards/{name}"));
            boards += 1;
        }
    }
    assert_eq!(boards, 3);
    assert_eq!(tree(&root), expected, "installed tree");

    for (rel, want) in [
        ("usr/bin/anomalyd", 0o755),
        ("etc/anomalyd/anomalyd.toml", 0o644),
        ("etc/anomalyd/credentials", 0o700),
        ("etc/anomalyd/credentials/influx-token", 0o600),
        ("etc/anomalyd/credentials/mqtt-password", 0o600),
        ("usr/lib/anomalyd/libonnxruntime.so.1.31.1", 0o644),
        ("usr/share/anomalyd/models", 0o755),
        ("usr/lib/systemd/system/anomalyd.service", 0o644),
    ] {
        assert_eq!(mode(&root.join(rel)), want, "mode of {rel}");
    }
    assert_eq!(
        std::fs::read_to_string(root.join("usr/lib/systemd/system/anomalyd.service")).unwrap(),
        read("systemd/anomalyd.service")
    );
    // Every credential source the unit loads exists.
    for line in read("systemd/anomalyd.service").lines() {
        if let Some((_, path)) = line
            .strip_prefix("LoadCredential=")
            .and_then(|v| v.split_once(':'))
        {
            assert!(root.join(&path[1..]).is_file(), "{path} not created");
        }
    }

    // The installed config names the installed model and library; with the
    // scratch root prefixed it passes check-config.
    let config = std::fs::read_to_string(root.join("etc/anomalyd/anomalyd.toml")).unwrap();
    assert!(config.contains("path = \"/usr/share/anomalyd/models/pump.onnx\""));
    assert!(config.contains("library_path = \"/usr/lib/anomalyd/libonnxruntime.so.1.31.1\""));
    let probe = scratch.path().join("probe.toml");
    std::fs::write(
        &probe,
        config.replace("\"/usr/", &format!("\"{}/usr/", root.display())),
    )
    .unwrap();
    let out = run(Command::new(root.join("usr/bin/anomalyd"))
        .args(["check-config", "--config"])
        .arg(&probe)
        .env_remove("ORT_DYLIB_PATH"));
    assert!(
        out.status.success(),
        "check-config of the installed config:\n{}",
        text(&out)
    );
    assert!(text(&out).contains("model \"pump\""), "{}", text(&out));

    // The operator edits the config and fills a credential; a second
    // install (upgrade) keeps both.
    let edited = format!("{config}\n# site: plant 7\n");
    std::fs::write(root.join("etc/anomalyd/anomalyd.toml"), &edited).unwrap();
    std::fs::write(
        root.join("etc/anomalyd/credentials/influx-token"),
        "s3cret\n",
    )
    .unwrap();
    let again = script("install.sh", &root, &install_args);
    assert!(
        again.contains("keeping existing /etc/anomalyd/anomalyd.toml"),
        "{again}"
    );
    assert_eq!(tree(&root), expected, "tree after a second install");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/anomalyd/anomalyd.toml")).unwrap(),
        edited
    );

    // Uninstall keeps exactly what the operator changed (and its manifest).
    let said = script("uninstall.sh", &root, &[]);
    let kept: BTreeSet<String> = [
        "etc/",
        "etc/anomalyd/",
        "etc/anomalyd/anomalyd.toml",
        "etc/anomalyd/credentials/",
        "etc/anomalyd/credentials/influx-token",
        "usr/",
        "usr/share/",
        "usr/share/anomalyd/",
        "usr/share/anomalyd/install.manifest",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(tree(&root), kept, "after uninstall:\n{said}");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/anomalyd/credentials/influx-token")).unwrap(),
        "s3cret\n"
    );
    script("uninstall.sh", &root, &["--purge"]);
    assert!(tree(&root).is_empty(), "after --purge: {:?}", tree(&root));

    // A pristine install uninstalls to nothing, and a directory that was
    // there before (and a file the scripts do not own) survive.
    std::fs::create_dir_all(root.join("etc/anomalyd")).unwrap();
    std::fs::write(root.join("etc/anomalyd/site-notes.txt"), "mine").unwrap();
    script("install.sh", &root, &install_args);
    script("uninstall.sh", &root, &[]);
    let left: Vec<String> = tree(&root).into_iter().collect();
    assert_eq!(
        left,
        ["etc/", "etc/anomalyd/", "etc/anomalyd/site-notes.txt"]
    );
}

// ---------------------------------------------------------------------------
// Packaging metadata and scripts
// ---------------------------------------------------------------------------

/// The block in Cargo.toml is the one in packaging/cargo-deb-metadata.toml
/// (comments aside), and every asset it packages exists (the binary and the
/// generated config come from the build).
#[test]
fn deb_metadata_is_in_cargo_toml_and_its_assets_exist() {
    let block: Vec<String> = read("packaging/cargo-deb-metadata.toml")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| l.trim_end().to_string())
        .collect();
    let cargo = read("Cargo.toml");
    let start = cargo.find("[package.metadata.deb]").unwrap_or_else(|| {
        panic!("Cargo.toml has no [package.metadata.deb]: paste packaging/cargo-deb-metadata.toml")
    });
    let in_cargo: Vec<String> = cargo[start..]
        .lines()
        .take_while(|l| {
            let t = l.trim_start();
            !t.starts_with('[') || t.starts_with("[package.metadata.deb") || t.starts_with("[\"")
        })
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| l.trim_end().to_string())
        .collect();
    let trim = |v: &[String]| -> Vec<String> {
        let mut v: Vec<String> = v.iter().skip_while(|l| l.is_empty()).cloned().collect();
        while v.last().is_some_and(|l| l.is_empty()) {
            v.pop();
        }
        v
    };
    assert_eq!(
        trim(&in_cargo),
        trim(&block),
        "Cargo.toml's [package.metadata.deb] differs from packaging/cargo-deb-metadata.toml"
    );

    let mut assets = 0;
    for line in &block {
        let Some(rest) = line.trim().strip_prefix("[\"") else {
            continue;
        };
        let src = rest.split('"').next().unwrap();
        assets += 1;
        if src.starts_with("target/release/") || src.starts_with("packaging/build/") {
            continue;
        }
        if let Some(lib) = src.strip_prefix(".ort/") {
            let p = ort_dylib().parent().unwrap().join(lib);
            assert!(p.exists(), "asset {src} missing at {}", p.display());
            continue;
        }
        if let Some(dir) = src.strip_suffix("/*.json") {
            let n = std::fs::read_dir(workspace_root().join(dir))
                .unwrap()
                .count();
            assert!(n > 0, "no {src}");
            continue;
        }
        assert!(workspace_root().join(src).exists(), "asset {src} missing");
    }
    assert_eq!(assets, 8);
    for script in ["postinst", "postrm"] {
        let p = workspace_root().join("packaging/debian").join(script);
        assert_eq!(mode(&p) & 0o111, 0o111, "{script} must be executable");
        assert!(read(&format!("packaging/debian/{script}")).contains("#DEBHELPER#"));
    }
}

/// The install and packaging scripts pass shellcheck.
#[test]
fn shell_scripts_pass_shellcheck() {
    let Some(shellcheck) = tool("/usr/bin/shellcheck", "shellcheck") else {
        return;
    };
    let files = [
        "scripts/install.sh",
        "scripts/uninstall.sh",
        "scripts/build-deb.sh",
        "scripts/packaged-config.sh",
        "packaging/debian/postinst",
        "packaging/debian/postrm",
    ];
    let out = run(Command::new(shellcheck)
        .current_dir(workspace_root())
        .args(files));
    assert!(out.status.success(), "shellcheck:\n{}", text(&out));
}

// ---------------------------------------------------------------------------
// Dashboards
// ---------------------------------------------------------------------------

/// What the daemon writes: measurement -> (tags, fields). A field ending in
/// `*` is a family (`err_<channel>`).
fn schema() -> BTreeMap<&'static str, (Vec<&'static str>, Vec<&'static str>)> {
    BTreeMap::from([
        (
            "anomaly_score",
            (
                vec!["asset", "model"],
                vec!["score", "threshold", "anomalous", "probability", "err_*"],
            ),
        ),
        (
            "anomaly_alert",
            (
                vec!["asset", "model", "state", "top_channel"],
                vec![
                    "score",
                    "peak",
                    "threshold",
                    "duration_s",
                    "top1_error",
                    "top2_error",
                    "top3_error",
                ],
            ),
        ),
    ])
}

/// (measurement, tag keys, field keys) of one line of line protocol without
/// escaped characters.
fn parse_line(line: &str) -> (String, BTreeSet<String>, BTreeSet<String>) {
    let mut parts = line.split(' ');
    let series = parts.next().unwrap();
    let fields = parts.next().unwrap();
    let mut s = series.split(',');
    let measurement = s.next().unwrap().to_string();
    let tags = s
        .map(|kv| kv.split('=').next().unwrap().to_string())
        .collect();
    let fields = fields
        .split(',')
        .map(|kv| kv.split('=').next().unwrap().to_string())
        .collect();
    (measurement, tags, fields)
}

/// The schema above is what `format_output` really produces.
#[test]
fn dashboard_schema_matches_the_sink_output() {
    let binding = std::sync::Arc::new(AssetBinding {
        asset: "pump-001".into(),
        model: "pump".into(),
        detector: DetectorSettings {
            threshold: 0.1,
            raise_after: 3,
            clear_after: 5,
            clear_ratio: 0.8,
        },
        channels: PUMP_CHANNELS
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .into(),
    });
    let m = Measurements {
        score: "anomaly_score".into(),
        alert: "anomaly_alert".into(),
    };
    let mut buf = String::new();
    format_output(
        &PipelineOutput::Score(ScoreRecord {
            binding: binding.clone(),
            ts: 1_767_225_600_000_000_000,
            score: 0.2,
            threshold: 0.1,
            anomalous: true,
            probability: 0.99,
            channel_error: vec![0.1; PUMP_CHANNELS.len()],
        }),
        &m,
        &mut buf,
    );
    format_output(
        &PipelineOutput::Alert {
            binding,
            event: AlertEvent {
                kind: AlertKind::Raised,
                start_ts: 1_767_225_600_000_000_000,
                ts: 1_767_225_603_000_000_000,
                score: 0.2,
                peak: 0.3,
                threshold: 0.1,
                top_channels: vec![
                    ("vibration_1".into(), 0.5),
                    ("current".into(), 0.2),
                    ("pressure".into(), 0.1),
                ],
            },
        },
        &m,
        &mut buf,
    );
    let schema = schema();
    for line in buf.lines() {
        let (measurement, tags, fields) = parse_line(line);
        let (want_tags, want_fields) = &schema[measurement.as_str()];
        assert_eq!(
            tags,
            want_tags.iter().map(|t| t.to_string()).collect(),
            "{line}"
        );
        let want: BTreeSet<String> = want_fields
            .iter()
            .flat_map(|f| match f.strip_suffix('*') {
                Some(prefix) => PUMP_CHANNELS
                    .iter()
                    .map(|c| format!("{prefix}{c}"))
                    .collect(),
                None => vec![f.to_string()],
            })
            .collect();
        assert_eq!(fields, want, "{line}");
    }
}

/// Metric series names (histograms with `_bucket`/`_sum`/`_count`) and
/// label names that `/metrics` exposes.
fn prometheus_names() -> (BTreeSet<String>, BTreeSet<String>) {
    let m = Metrics::default();
    m.set_models(vec![("pump".into(), "1".into(), "cpu".into())]);
    let text = m.render();
    let mut names = BTreeSet::new();
    let mut labels = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (name, kind) = (it.next().unwrap(), it.next().unwrap());
            if kind == "histogram" {
                for s in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{s}"));
                }
            } else {
                names.insert(name.to_string());
            }
        } else if !line.starts_with('#')
            && let Some((_, rest)) = line.split_once('{')
        {
            for kv in rest.split('}').next().unwrap().split(',') {
                labels.insert(kv.split('=').next().unwrap().to_string());
            }
        }
    }
    (names, labels)
}

/// Identifiers made of `[A-Za-z0-9_]` starting at each match of `prefix`.
fn idents_after<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        let after = &rest[i + prefix.len()..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        // Skip matches inside a longer identifier (e.g. "expr." for "r.").
        let before_ok = rest[..i]
            .chars()
            .last()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        if before_ok && end > 0 {
            out.push(&after[..end]);
        }
        rest = &after[end..];
    }
    out
}

/// Strings in double quotes following each match of `prefix` up to `]`.
fn quoted_list_after(text: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        let after = &rest[i + prefix.len()..];
        let end = after.find(']').unwrap_or(after.len());
        out.extend(after[..end].split('"').skip(1).step_by(2).map(String::from));
        rest = &after[end..];
    }
    out
}

/// What a query may name: the allowed names for fields, tags and columns.
struct Names {
    schema: BTreeMap<&'static str, (Vec<&'static str>, Vec<&'static str>)>,
    metrics: BTreeSet<String>,
    labels: BTreeSet<String>,
}

impl Names {
    fn new() -> Self {
        let (metrics, labels) = prometheus_names();
        Names {
            schema: schema(),
            metrics,
            labels,
        }
    }

    fn field_ok(&self, measurement: &str, field: &str) -> bool {
        if measurement == "prometheus" {
            return self.metrics.contains(field);
        }
        self.schema[measurement]
            .1
            .iter()
            .any(|f| match f.strip_suffix('*') {
                Some(prefix) => field.starts_with(prefix) && field.len() > prefix.len(),
                None => *f == field,
            })
    }

    /// A field regex is accepted in the simple form `^prefix`, when that
    /// prefix starts a field of the measurement.
    fn field_regex_ok(&self, measurement: &str, re: &str) -> bool {
        let Some(prefix) = re.strip_prefix('^') else {
            return false;
        };
        prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
            && self.schema[measurement]
                .1
                .iter()
                .any(|f| f.starts_with(prefix) || prefix.starts_with(f.trim_end_matches('*')))
    }

    fn tag_ok(&self, measurement: &str, tag: &str) -> bool {
        if measurement == "prometheus" {
            // Telegraf's inputs.prometheus adds `url` (and `host`).
            return self.labels.contains(tag) || tag == "url" || tag == "host";
        }
        self.schema[measurement].0.contains(&tag)
    }

    fn column_ok(&self, measurements: &[String], col: &str) -> bool {
        const META: [&str; 7] = [
            "_time",
            "_value",
            "_field",
            "_measurement",
            "_start",
            "_stop",
            "text",
        ];
        META.contains(&col)
            || measurements
                .iter()
                .any(|m| self.tag_ok(m, col) || self.field_ok(m, col))
    }

    /// Checks one Flux query; returns the measurements it reads.
    fn check_flux(&self, q: &str, what: &str) -> Vec<String> {
        let mut measurements: Vec<String> = Vec::new();
        for (i, _) in q.match_indices("_measurement == \"") {
            let rest = &q[i + "_measurement == \"".len()..];
            measurements.push(rest[..rest.find('"').unwrap()].to_string());
        }
        if q.contains("schema.tagValues") {
            let pred = q
                .split("predicate:")
                .nth(1)
                .expect("tagValues with a predicate");
            assert!(
                pred.contains("_measurement == \""),
                "{what}: tagValues must filter a measurement:\n{q}"
            );
        }
        assert!(
            !measurements.is_empty(),
            "{what}: names no measurement:\n{q}"
        );
        for m in &measurements {
            assert!(
                self.schema.contains_key(m.as_str()) || m == "prometheus",
                "{what}: unknown measurement {m}:\n{q}"
            );
        }
        let fields = q
            .match_indices("_field == \"")
            .map(|(i, p)| {
                let rest = &q[i + p.len()..];
                rest[..rest.find('"').unwrap()].to_string()
            })
            .collect::<Vec<_>>();
        for f in &fields {
            assert!(
                measurements.iter().any(|m| self.field_ok(m, f)),
                "{what}: field {f} is not written to {measurements:?}:\n{q}"
            );
        }
        for (i, p) in q.match_indices("_field =~ /") {
            let rest = &q[i + p.len()..];
            let re = &rest[..rest.find('/').unwrap()];
            assert!(
                measurements.iter().any(|m| self.field_regex_ok(m, re)),
                "{what}: field regex /{re}/ matches no field of {measurements:?}:\n{q}"
            );
        }
        let mut columns: Vec<String> = idents_after(q, "r.")
            .into_iter()
            .map(String::from)
            .collect();
        for (i, p) in q.match_indices("r[\"") {
            let rest = &q[i + p.len()..];
            columns.push(rest[..rest.find('"').unwrap()].to_string());
        }
        for (i, p) in q.match_indices("tag: \"") {
            let rest = &q[i + p.len()..];
            columns.push(rest[..rest.find('"').unwrap()].to_string());
        }
        for key in ["columns: [", "rowKey: [", "columnKey: ["] {
            columns.extend(quoted_list_after(q, key));
        }
        for c in &columns {
            assert!(
                self.column_ok(&measurements, c),
                "{what}: column {c} is neither a tag nor a field of {measurements:?}:\n{q}"
            );
        }
        measurements
    }

    fn check_influxql(&self, q: &str, what: &str) {
        let from = q
            .split("FROM \"")
            .nth(1)
            .unwrap_or_else(|| panic!("{what}: no FROM \"measurement\":\n{q}"));
        let m = &from[..from.find('"').unwrap()];
        assert!(
            self.schema.contains_key(m),
            "{what}: unknown measurement {m}:\n{q}"
        );
        // Drop what is not a name: aliases, regex values, string values.
        let mut cleaned = String::new();
        let mut rest = q;
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("AS \"") {
                rest = &r[r.find('"').unwrap() + 1..];
            } else if let Some(r) = rest.strip_prefix("=~ /") {
                rest = &r[r.find('/').unwrap() + 1..];
            } else if let Some(r) = rest.strip_prefix('\'') {
                rest = &r[r.find('\'').unwrap() + 1..];
            } else {
                let c = rest.chars().next().unwrap();
                cleaned.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        let (select, tail) = cleaned
            .split_once(" FROM ")
            .map(|(s, t)| (s.to_string(), t.to_string()))
            .unwrap_or_default();
        for (i, name) in select.split('"').enumerate() {
            if i % 2 == 1 {
                assert!(
                    self.field_ok(m, name) || self.tag_ok(m, name),
                    "{what}: {name} is not written to {m}:\n{q}"
                );
            }
        }
        if let Some((_, rest)) = select.split_once('/') {
            let re = rest.split('/').next().unwrap_or("");
            assert!(
                self.field_regex_ok(m, re),
                "{what}: regex /{re}/ matches no field of {m}:\n{q}"
            );
        }
        for (i, name) in tail.split('"').enumerate() {
            if i % 2 == 1 && name != m {
                assert!(
                    self.tag_ok(m, name) || self.field_ok(m, name),
                    "{what}: {name} is not a tag or field of {m}:\n{q}"
                );
            }
        }
    }

    fn check_promql(&self, q: &str, what: &str) {
        let names = idents_after(q, "anomalyd_");
        assert!(!names.is_empty(), "{what}: no anomalyd metric in {q}");
        for n in names {
            let full = format!("anomalyd_{n}");
            assert!(
                self.metrics.contains(&full),
                "{what}: /metrics has no {full}:\n{q}"
            );
        }
        let allowed = |l: &str| self.labels.contains(l) || l == "instance" || l == "job";
        for (i, p) in q.match_indices("by (") {
            let rest = &q[i + p.len()..];
            for l in rest[..rest.find(')').unwrap()].split(',') {
                assert!(allowed(l.trim()), "{what}: unknown label {l} in {q}");
            }
        }
        for (i, p) in q.match_indices('{') {
            let rest = &q[i + p.len()..];
            for kv in rest[..rest.find('}').unwrap()].split(',') {
                let l = kv.split(['=', '!']).next().unwrap().trim();
                assert!(allowed(l), "{what}: unknown label {l} in {q}");
            }
        }
        if let Some(rest) = q.strip_prefix("label_values(") {
            let l = rest.split(',').nth(1).unwrap().trim().trim_end_matches(')');
            assert!(allowed(l), "{what}: unknown label {l}");
        }
    }
}

/// Every query string of a Grafana dashboard with its language, from the
/// nearest enclosing datasource type.
fn grafana_queries(v: &Value, ds: &str, path: &str, out: &mut Vec<(String, String, String)>) {
    match v {
        Value::Object(map) => {
            let ds = map
                .get("datasource")
                .and_then(|d| d.get("type"))
                .and_then(Value::as_str)
                .unwrap_or(ds);
            for (k, child) in map {
                let p = format!("{path}.{k}");
                match (k.as_str(), child) {
                    ("expr", Value::String(s)) => out.push(("prometheus".into(), s.clone(), p)),
                    ("query", Value::String(s)) => out.push((ds.to_string(), s.clone(), p)),
                    _ => grafana_queries(child, ds, &p, out),
                }
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                grafana_queries(child, ds, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// `$name`, `${name}` and `${name:format}` references in `q`.
fn grafana_vars(q: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in q.match_indices('$') {
        let rest = &q[i + 1..];
        let rest = rest.strip_prefix('{').unwrap_or(rest);
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end > 0 {
            out.push(rest[..end].to_string());
        }
    }
    out
}

/// Both Grafana dashboards parse, import cleanly (datasources are inputs),
/// and every query names only what the daemon writes and exports.
#[test]
fn grafana_dashboards_query_only_what_the_daemon_writes() {
    let names = Names::new();
    for (file, lang) in [
        ("dashboards/grafana-influxdb-flux.json", "flux"),
        ("dashboards/grafana-influxql.json", "influxql"),
    ] {
        let doc: Value =
            serde_json::from_str(&read(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let inputs: Vec<&str> = doc["__inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap())
            .collect();
        assert_eq!(inputs, ["DS_INFLUXDB", "DS_PROMETHEUS"], "{file}");
        let vars: BTreeSet<String> = doc["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_string())
            .collect();
        let mut ids = BTreeSet::new();
        let panels = doc["panels"].as_array().unwrap();
        for p in panels {
            assert!(
                ids.insert(p["id"].as_u64().unwrap()),
                "{file}: duplicate panel id"
            );
            if p["type"] != "row" {
                let uid = p["datasource"]["uid"].as_str().unwrap_or("");
                assert!(
                    uid == "${DS_INFLUXDB}" || uid == "${DS_PROMETHEUS}",
                    "{file}: panel {} has datasource {uid}",
                    p["title"]
                );
                assert!(!p["targets"].as_array().unwrap().is_empty());
            }
        }
        let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
        assert!(
            titles.iter().any(|t| t.starts_with("Score vs threshold")),
            "{titles:?}"
        );
        assert!(
            titles.iter().any(|t| t.starts_with("Top channels")),
            "{titles:?}"
        );
        let anns = doc["annotations"]["list"].as_array().unwrap();
        assert!(
            anns.iter()
                .filter(|a| a["datasource"]["uid"] == "${DS_INFLUXDB}")
                .count()
                >= 2
        );

        let mut queries = Vec::new();
        grafana_queries(&doc, "", file, &mut queries);
        let (mut influx, mut prom) = (0, 0);
        for (ds, q, path) in &queries {
            for var in grafana_vars(q) {
                let builtin = var.starts_with("__") || var == "timeFilter";
                assert!(
                    builtin || vars.contains(&var),
                    "{path}: unknown variable ${var} in {q}"
                );
            }
            match (ds.as_str(), lang) {
                ("prometheus", _) => {
                    names.check_promql(q, path);
                    prom += 1;
                }
                ("influxdb", "flux") => {
                    names.check_flux(q, path);
                    influx += 1;
                }
                ("influxdb", _) if q.starts_with("SHOW TAG VALUES") => {
                    assert_eq!(
                        q,
                        "SHOW TAG VALUES FROM \"anomaly_score\" WITH KEY = \"asset\""
                    );
                    influx += 1;
                }
                ("influxdb", _) => {
                    names.check_influxql(q, path);
                    influx += 1;
                }
                ("", _) if q == "anomalyd" => {} // the bucket textbox's default
                other => panic!("{path}: query of unknown kind {other:?}: {q}"),
            }
        }
        println!("{file}: {influx} InfluxDB and {prom} Prometheus queries checked");
        assert!(
            influx >= 10 && prom >= 10,
            "{file}: {influx} influx, {prom} prometheus queries"
        );
        for metric in [
            "anomalyd_windows_scored_total",
            "anomalyd_readings_dropped_total",
            "anomalyd_inference_latency_seconds_bucket",
            "anomalyd_sink_queue_points",
            "anomalyd_mqtt_connected",
            "anomalyd_model_info",
        ] {
            assert!(
                queries.iter().any(|(_, q, _)| q.contains(metric)),
                "{file} never shows {metric}"
            );
        }
    }
}

/// The InfluxDB 2 template: resources of known kinds, every `v.name` a
/// template variable (or built in), every Flux query within the schema, and
/// a Telegraf config that scrapes the daemon's default metrics address.
#[test]
fn influxdb2_template_queries_only_what_the_daemon_writes() {
    let names = Names::new();
    let doc: Value = serde_json::from_str(&read("dashboards/influxdb2-template.json")).unwrap();
    let resources = doc.as_array().expect("a template is an array of resources");
    let mut kinds = BTreeMap::new();
    let mut vars = BTreeSet::from([
        "timeRangeStart".to_string(),
        "timeRangeStop".into(),
        "windowPeriod".into(),
    ]);
    for r in resources {
        assert_eq!(r["apiVersion"], "influxdata.com/v2alpha1");
        let kind = r["kind"].as_str().unwrap();
        *kinds.entry(kind).or_insert(0) += 1;
        if kind == "Variable" {
            vars.insert(r["spec"]["name"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(
        kinds,
        BTreeMap::from([
            ("Dashboard", 1),
            ("Label", 1),
            ("Telegraf", 1),
            ("Variable", 2)
        ])
    );
    let mut checked = 0;
    let mut prometheus = 0;
    for r in resources {
        let spec = &r["spec"];
        let mut queries: Vec<String> = Vec::new();
        match r["kind"].as_str().unwrap() {
            "Variable" => {
                let q = spec["query"].as_str().unwrap();
                if !q.starts_with("buckets()") {
                    queries.push(q.to_string());
                }
            }
            "Dashboard" => {
                for c in spec["charts"].as_array().unwrap() {
                    for q in c["queries"].as_array().into_iter().flatten() {
                        queries.push(q["query"].as_str().unwrap().to_string());
                    }
                }
            }
            "Telegraf" => {
                let config = spec["config"].as_str().unwrap();
                let listen = read("config/anomalyd.toml")
                    .lines()
                    .find_map(|l| l.strip_prefix("listen = \""))
                    .map(|v| v.trim_end_matches('"').to_string())
                    .unwrap();
                assert!(
                    config.contains(&format!("http://{listen}/metrics")),
                    "{config}"
                );
                assert!(config.contains("metric_version = 2"));
            }
            _ => {}
        }
        for q in queries {
            for v in idents_after(&q, "v.") {
                assert!(vars.contains(v), "unknown variable v.{v} in {q}");
            }
            if names
                .check_flux(&q, "influxdb2-template")
                .iter()
                .any(|m| m == "prometheus")
            {
                prometheus += 1;
            }
            checked += 1;
        }
    }
    println!("influxdb2-template: {checked} Flux queries checked ({prometheus} on daemon metrics)");
    assert!(
        checked >= 12 && prometheus >= 5,
        "{checked} queries, {prometheus} on metrics"
    );
}
