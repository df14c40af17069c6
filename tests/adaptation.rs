//! Threshold adaptation through the binary (docs/far-calibration.md §4):
//! `anomalyd replay` with the shipped model on a pump whose blockage grows
//! over an hour, with adaptation off (the default) and switched on in the
//! config's `[detector]` section.

use std::path::Path;
use std::process::Command;

use anomalyd::core::synth::{FaultKind, generate_ramped};

use crate::util::*;

const NORMAL_ROWS: usize = 3_600;
const RAMP_ROWS: usize = 3_600;
const ROWS: usize = NORMAL_ROWS + RAMP_ROWS + 1_800;

/// Replays `input` (with `config`, if any); returns per row the threshold
/// and the anomaly flag.
fn replay(dir: &Path, input: &Path, config: Option<&str>) -> Vec<(f64, bool)> {
    let out = dir.join("scores.csv");
    let mut cmd = Command::new(anomalyd_bin());
    cmd.args(["replay", "--model"])
        .arg(shipped_model())
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(&out)
        .env("ORT_DYLIB_PATH", ort_dylib());
    if let Some(text) = config {
        let path = dir.join("anomalyd.toml");
        std::fs::write(&path, text).unwrap();
        cmd.arg("--config").arg(path);
    }
    let st = cmd.output().unwrap();
    assert!(
        st.status.success(),
        "replay: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[3].parse().unwrap(), f[5] == "1")
        })
        .collect()
}

fn first_alert(rows: &[(f64, bool)]) -> Option<usize> {
    rows.iter().position(|r| r.1)
}

/// Off by default: the calibrated threshold on every row. On (half-life
/// 15 min, cap 3): the threshold follows the growing fault, stays within
/// 1..3 x the calibrated one, and the first alert comes later.
#[test]
fn adaptation_follows_a_slow_fault_within_its_cap_and_delays_the_alert() {
    let dir = tempfile::tempdir().unwrap();
    let log = generate_ramped(
        ROWS,
        5,
        1_767_225_600_000_000_000,
        1_000_000_000,
        Some((FaultKind::Blockage, NORMAL_ROWS..ROWS)),
        RAMP_ROWS as u64,
    );
    let input = dir.path().join("input.csv");
    std::fs::write(&input, log.to_csv()).unwrap();

    let off = replay(dir.path(), &input, None);
    assert_eq!(off.len(), ROWS);
    let h0 = off[0].0;
    assert!(off.iter().all(|r| r.0 == h0), "off: one threshold");
    let off_alert = first_alert(&off).expect("the fault is raised without adaptation");
    assert!(off_alert >= NORMAL_ROWS, "no false alarm: {off_alert}");

    let mut cfg = DaemonConfig::new(1, "http://127.0.0.1:1", 0).to_toml();
    cfg.push_str("\n[detector]\nadapt_half_life_h = 0.25\nadapt_max_factor = 3.0\n");
    let on = replay(dir.path(), &input, Some(&cfg));
    assert_eq!(on.len(), ROWS);
    let tol = 1e-4 * h0;
    assert!(on.iter().all(|r| r.0 >= h0 - tol && r.0 <= 3.0 * h0 + tol));
    let highest = on.iter().map(|r| r.0).fold(0.0, f64::max);
    assert!(
        highest > 2.0 * h0,
        "the threshold followed: {highest} vs {h0}"
    );
    // Bounded: the fault outgrows the cap and is still raised, later.
    let on_alert = first_alert(&on).expect("the cap keeps the fault visible");
    assert!(on_alert > off_alert + 60, "{on_alert} vs {off_alert}");
    // Frozen while the alert is open.
    let at_raise = on[on_alert].0;
    assert!(
        on[on_alert..]
            .iter()
            .take_while(|r| r.1)
            .all(|r| r.0 == at_raise)
    );
}
