//! The layer rules of `src/lib.rs`, checked by reading every `crate::` path
//! in the library's code: a stage that reaches into a layer it must not
//! know (the pure core into the daemon, a sink into the MQTT source) fails
//! here with the file and line, before it becomes an import cycle.

use std::path::{Path, PathBuf};

/// What each top-level folder of `src/` may import besides itself. A
/// `crate::` path is allowed when it starts with one of these prefixes.
const RULES: &[(&str, &[&str])] = &[
    ("core", &[]),
    ("manual", &[]),
    ("model", &["core"]),
    ("config", &["core"]),
    ("ops::metrics", &["core"]),
    ("pipeline", &["core", "config", "model", "ops::metrics"]),
    ("state", &["core", "config", "ops::metrics"]),
    (
        "sources",
        &["core", "config", "pipeline", "state", "ops::metrics"],
    ),
    (
        "sinks",
        &["core", "config", "pipeline", "state", "ops::metrics"],
    ),
    ("ops", &["core", "config", "model", "pipeline"]),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under `src/`, e.g. `ops::metrics` for
/// `src/ops/metrics.rs` and `config` for `src/config/mod.rs`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("file under src/");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// The rule that governs `module`: the longest matching folder prefix.
fn rule_for(module: &str) -> Option<(&'static str, &'static [&'static str])> {
    RULES
        .iter()
        .filter(|(layer, _)| module == *layer || module.starts_with(&format!("{layer}::")))
        .max_by_key(|(layer, _)| layer.len())
        .copied()
}

/// Every `crate::a::b` path in the code (comments and doc comments left out).
fn crate_paths(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let tail = &rest[i + "crate::".len()..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        out.push(tail[..end].trim_end_matches(':').to_string());
        rest = &tail[end..];
    }
    out
}

#[test]
fn every_layer_imports_only_what_its_rule_allows() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut checked = 0;
    let mut broken = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        let Some((layer, allowed)) = rule_for(&module) else {
            continue; // lib.rs, main.rs and cmd/ wire everything.
        };
        let text = std::fs::read_to_string(file).expect("read source");
        for (n, line) in text.lines().enumerate() {
            for path in crate_paths(line) {
                checked += 1;
                let ok = path == layer
                    || path.starts_with(&format!("{layer}::"))
                    || allowed
                        .iter()
                        .any(|a| path == *a || path.starts_with(&format!("{a}::")));
                if !ok {
                    broken.push(format!(
                        "{}:{}: `{layer}` must not use crate::{path}",
                        file.display(),
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} crate:: paths found: is the scan broken?"
    );
    assert!(
        broken.is_empty(),
        "layer rules broken:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_scan_sees_paths_and_skips_comments() {
    assert_eq!(
        crate_paths("use crate::core::align::{Aligner, Frame};"),
        ["core::align"]
    );
    assert_eq!(
        crate_paths("let m = crate::ops::metrics::Metrics::default(); // crate::cmd"),
        ["ops::metrics::Metrics::default"]
    );
    assert!(crate_paths("/// see [`crate::cmd::run`]").is_empty());
    assert_eq!(rule_for("ops::metrics").map(|r| r.0), Some("ops::metrics"));
    assert_eq!(rule_for("ops::http").map(|r| r.0), Some("ops"));
    assert_eq!(rule_for("cmd::run"), None);
}

#[test]
fn the_code_map_names_every_folder_of_src() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("read lib.rs");
    let map: String = lib
        .lines()
        .take_while(|l| l.starts_with("//!"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut folders = 0;
    for entry in std::fs::read_dir(&src).expect("read src/") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            folders += 1;
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            assert!(
                map.contains(&format!("[`{name}`]")),
                "src/lib.rs's code map does not name src/{name}/"
            );
        }
    }
    assert!(folders >= 9, "expected the nine folders of src/");
}

#[test]
fn no_channel_in_the_library_is_unbounded() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read source");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains("unbounded_channel") || code.contains("UnboundedSender") {
                found.push(format!("{}:{}", file.display(), n + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "unbounded channels (a stalled consumer grows memory without limit):\n{}",
        found.join("\n")
    );
}
