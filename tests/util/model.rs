//! The shipped model and the synthetic pump data the tests feed it: the
//! window length, how many windows a stream scores, and the rows
//! `anomalyd simulate` publishes.

use std::path::PathBuf;

use super::workspace_root;

/// Event times of the generated data: a fixed day, 1 s apart.
pub const START_NS: i64 = 1_767_225_600_000_000_000; // 2026-01-01T00:00:00Z

/// The model the package ships, `models/pump.onnx`.
pub fn shipped_model() -> PathBuf {
    workspace_root().join("models/pump.onnx")
}

/// The window length of the shipped `models/pump.onnx`.
pub const WINDOW: usize = 40;

/// Windows scored from `rows` on-grid frame messages of one asset: each
/// message closes its own frame, so a window ends at every row from
/// `WINDOW` on.
pub fn windows_for(rows: usize) -> usize {
    rows + 1 - WINDOW
}

/// The first `rows` rows of the synthetic pump seeded with `seed`, as
/// `anomalyd simulate` publishes them for an asset with that seed.
pub fn synth_rows(rows: usize, seed: u64) -> Vec<[f64; 8]> {
    anomalyd::core::synth::generate(rows, seed, 0, 1_000_000_000, None).values
}
