//! The training report written with `--report DIR`: `report.json` (metadata,
//! per-epoch losses, calibration, exporter parity, timings, input summaries)
//! and three PNG plots drawn with `plotters`: `loss.png`, `errors.png` and
//! `reconstruction.png`. Also [`plot_replay`]: a replayed log's score,
//! threshold, labels and alert state over time (the benchmark's picture).
//!
//! Text needs a TrueType font. None is embedded: one is looked up at run
//! time (`ANOMALYD_FONT`, then common system paths such as Debian's
//! `fonts-dejavu-core`); without one the plots are drawn without text and a
//! warning says so.

mod draw;
mod plots;
mod replay;

use std::path::{Path, PathBuf};

use anomalyd::core::contract::ModelMetadata;
use serde::Serialize;

use crate::calibrate::Calibration;
use crate::data::InputSummary;

pub use draw::{FONT_CANDIDATES, FONT_ENV, font_available};
pub use replay::plot_replay;

use draw::draw;
use plots::{error_plot, loss_plot, reconstruction_plot};

/// `reconstruction.png` shows at most this many channels (the first ones),
/// one panel row each, so that the image stays viewable.
pub const MAX_PLOTTED_CHANNELS: usize = 16;

/// Why the report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot draw {}: {message}", path.display())]
    Plot { path: PathBuf, message: String },
}

/// One epoch's losses.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train_loss: f32,
    pub validation_loss: f32,
}

/// Exporter parity: ONNX Runtime on the written file vs burn's own forward
/// pass, on the validation windows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Parity {
    pub windows: usize,
    pub max_abs_diff_reconstruction: f64,
    pub max_abs_diff_score: f64,
    pub max_abs_diff_channel_error: f64,
    pub tolerance: f64,
    pub passed: bool,
}

/// Wall-clock seconds per stage.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Timings {
    pub load_s: f64,
    pub train_s: f64,
    pub calibrate_s: f64,
    pub export_s: f64,
    pub parity_s: f64,
    pub total_s: f64,
}

/// Everything in `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model_file: String,
    pub model_bytes: u64,
    pub parameters: usize,
    pub device: String,
    pub metadata: ModelMetadata,
    pub epochs: Vec<EpochRecord>,
    pub best_epoch: usize,
    pub stopped_early: bool,
    pub calibration: Calibration,
    pub parity: Parity,
    pub timings: Timings,
    pub inputs: Vec<InputSummary>,
    pub warnings: Vec<String>,
}

/// A validation window to plot, in engineering units.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleWindow {
    /// e.g. `highest score`.
    pub label: String,
    pub score: f32,
    /// Channel-major `[C, T]`.
    pub original: Vec<f32>,
    pub reconstruction: Vec<f32>,
}

/// What the plots need besides the report.
#[derive(Debug, Clone, Copy)]
pub struct PlotInputs<'a> {
    pub validation_scores: &'a [f32],
    pub samples: &'a [SampleWindow],
}

/// Writes `report.json` and the three PNGs into `dir` (created if needed).
/// Returns the files written and warnings (e.g. no font).
///
/// # Errors
/// The directory or a file cannot be written, or a plot cannot be drawn.
pub fn write_report(
    dir: &Path,
    report: &Report,
    plots: PlotInputs<'_>,
) -> Result<(Vec<PathBuf>, Vec<String>), ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut warnings = Vec::new();
    let text = font_available();
    if !text {
        warnings.push(format!(
            "no TrueType font found (set {FONT_ENV} or install fonts-dejavu-core): plots are drawn without text"
        ));
    }
    let json_path = dir.join("report.json");
    let json = serde_json::to_string_pretty(report).map_err(|e| ReportError::Io {
        path: json_path.clone(),
        source: std::io::Error::other(e),
    })?;
    std::fs::write(&json_path, json + "\n").map_err(|source| ReportError::Io {
        path: json_path.clone(),
        source,
    })?;

    let loss = dir.join("loss.png");
    draw(&loss, (900, 520), |area| loss_plot(area, report, text))?;
    let errors = dir.join("errors.png");
    draw(&errors, (900, 520), |area| {
        error_plot(
            area,
            plots.validation_scores,
            report.metadata.threshold.value,
            &report.metadata.error_distribution,
            text,
        )
    })?;
    let recon = dir.join("reconstruction.png");
    let c = report.metadata.channels.len().min(MAX_PLOTTED_CHANNELS);
    let columns = plots.samples.len().max(1);
    let size = (
        (380 * columns as u32 + 120).max(700),
        (150 * c as u32 + 80).max(300),
    );
    draw(&recon, size, |area| {
        reconstruction_plot(
            area,
            &report.metadata.channels[..c],
            report.metadata.window,
            plots.samples,
            text,
        )
    })?;
    Ok((vec![json_path, loss, errors, recon], warnings))
}
