//! The parity check: the written file, reloaded through ONNX Runtime,
//! against burn's outputs on every validation window, before the file is
//! moved into place.

use std::path::{Path, PathBuf};

use anomalyd::model::{ExecutionProvider, LoadedModel, RuntimeOptions};

use super::{RunError, TrainOptions};
use crate::data::Dataset;
use crate::model::train::INFERENCE_BATCH;
use crate::report::Parity;

/// Largest absolute difference allowed between ONNX Runtime and burn.
pub const PARITY_TOLERANCE: f64 = 1e-4;

/// The temporary name the model is written under until parity passes.
pub(super) fn candidate_path(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model.onnx".into());
    out.with_file_name(format!(".{name}.unchecked"))
}

/// Reloads the written file through ONNX Runtime and compares its outputs
/// with burn's on every validation window.
pub(super) fn check_parity(
    opts: &TrainOptions,
    path: &Path,
    data: &Dataset,
    recon: &[f32],
    errors: &[f32],
    scores: &[f32],
) -> Result<Parity, RunError> {
    let runtime = RuntimeOptions {
        library_path: opts.ort_library.clone(),
        execution_provider: ExecutionProvider::Cpu,
        intra_threads: 1,
    };
    let mut model = LoadedModel::load(path, &runtime).map_err(RunError::Runtime)?;
    let per_window = data.channels.len() * data.window;
    let c = data.channels.len();
    let (mut d_rec, mut d_score, mut d_err) = (0.0f64, 0.0f64, 0.0f64);
    let max_diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (f64::from(*x) - f64::from(*y)).abs())
            .fold(
                0.0f64,
                |m, d| if d.is_nan() { f64::INFINITY } else { m.max(d) },
            )
    };
    for (i, chunk) in data
        .validation
        .data
        .chunks(INFERENCE_BATCH * per_window)
        .enumerate()
    {
        let n = chunk.len() / per_window;
        let first = i * INFERENCE_BATCH;
        let out = model
            .run_with_reconstruction(chunk, n)
            .map_err(RunError::Runtime)?;
        let rec = out.reconstruction.unwrap_or_default();
        if rec.len() != chunk.len() {
            d_rec = f64::INFINITY;
        }
        d_rec = d_rec.max(max_diff(
            &rec,
            &recon[first * per_window..(first + n) * per_window],
        ));
        d_score = d_score.max(max_diff(&out.score, &scores[first..first + n]));
        d_err = d_err.max(max_diff(
            &out.channel_error,
            &errors[first * c..(first + n) * c],
        ));
    }
    Ok(Parity {
        windows: data.validation.len(),
        max_abs_diff_reconstruction: d_rec,
        max_abs_diff_score: d_score,
        max_abs_diff_channel_error: d_err,
        tolerance: PARITY_TOLERANCE,
        passed: d_rec < PARITY_TOLERANCE && d_score < PARITY_TOLERANCE && d_err < PARITY_TOLERANCE,
    })
}
