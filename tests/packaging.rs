//! Packaging metadata and scripts: the cargo-deb block in Cargo.toml and
//! the assets it packages, and shellcheck over every shell script. The .deb
//! itself (amd64, and arm64 from the cross-build) is built and checked by
//! `scripts/build-deb.sh` (CI runs it after the tests).

use std::process::Command;

use crate::util::*;

/// The block in Cargo.toml is the one in packaging/cargo-deb-metadata.toml
/// (comments aside), and every asset it packages exists (the binary and the
/// generated config come from the build).
#[test]
fn deb_metadata_is_in_cargo_toml_and_its_assets_exist() {
    let block: Vec<String> = read_repo_file("packaging/cargo-deb-metadata.toml")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| l.trim_end().to_string())
        .collect();
    let cargo = read_repo_file("Cargo.toml");
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
        // scripts/build-deb.sh copies the target's ONNX Runtime here.
        if let Some(lib) = src.strip_prefix("packaging/build/ort/") {
            let p = ort_dylib().parent().unwrap().join(lib);
            assert!(p.exists(), "asset {src} missing at {}", p.display());
            continue;
        }
        if src.starts_with("target/release/") || src.starts_with("packaging/build/") {
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
    assert_eq!(assets, 13);
    for script in ["postinst", "postrm"] {
        let p = workspace_root().join("packaging/debian").join(script);
        assert_eq!(file_mode(&p) & 0o111, 0o111, "{script} must be executable");
        assert!(read_repo_file(&format!("packaging/debian/{script}")).contains("#DEBHELPER#"));
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
        "scripts/setup.sh",
        "scripts/apt-need.sh",
        "scripts/demo.sh",
        "scripts/cross-aarch64.sh",
        "packaging/debian/postinst",
        "packaging/debian/postrm",
    ];
    let out = run_output(
        Command::new(shellcheck)
            .current_dir(workspace_root())
            .arg("-x")
            .args(files),
    );
    assert!(out.status.success(), "shellcheck:\n{}", output_text(&out));
}
