//! `scripts/install.sh` and `uninstall.sh` in a scratch root: exactly the
//! documented files with the right modes, an installed config that checks
//! out, and nothing left behind after `--purge`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::util::*;

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
fn script(name: &str, root: &Path, extra: &[&str]) -> String {
    let mut cmd = Command::new("bash");
    cmd.arg(workspace_root().join("scripts").join(name))
        .arg("--root")
        .arg(root)
        .args(extra)
        .env_remove("DESTDIR");
    let out = run_output(&mut cmd);
    assert!(
        out.status.success(),
        "{name} failed:\n{}",
        output_text(&out)
    );
    output_text(&out)
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
        "usr/lib/systemd/system/anomalyd@.service",
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
        assert_eq!(file_mode(&root.join(rel)), want, "mode of {rel}");
    }
    assert_eq!(
        std::fs::read_to_string(root.join("usr/lib/systemd/system/anomalyd.service")).unwrap(),
        read_repo_file("systemd/anomalyd.service")
    );
    // Every credential source the unit loads exists.
    for line in read_repo_file("systemd/anomalyd.service").lines() {
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
    let out = run_output(
        Command::new(root.join("usr/bin/anomalyd"))
            .args(["check-config", "--config"])
            .arg(&probe)
            .env_remove("ORT_DYLIB_PATH"),
    );
    assert!(
        out.status.success(),
        "check-config of the installed config:\n{}",
        output_text(&out)
    );
    assert!(
        output_text(&out).contains("model \"pump\""),
        "{}",
        output_text(&out)
    );

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
