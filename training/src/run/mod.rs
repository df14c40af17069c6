//! One training run, start to finish: load the windows, train, calibrate,
//! export, check the written file with ONNX Runtime against burn (parity),
//! then move it into place and write the report.
//!
//! Results go to stdout, progress and warnings to stderr. The model file
//! appears at `--out` only after the parity check has passed; a failing
//! check leaves any previous file there untouched.
//!
//! `preflight` checks what it can before any data is read; `console`
//! prints the progress; `record` assembles what the model file and the
//! report say about the run; `parity` is the last check.

mod console;
mod crossfit;
mod parity;
mod preflight;
mod record;

use std::path::PathBuf;
use std::time::Instant;

use anomalyd::core::contract::{ModelMetadata, SCHEMA_VERSION, ScoreDefinition, TrainingSummary};
use anomalyd::model::RuntimeError;

use crate::calibrate::{self, CalibrateError, ChannelWeighting, ThresholdRule};
use crate::centering::{self, Centering};
use crate::data::{DataError, DataOptions, load_dataset};
use crate::export::{self, ExportError};
use crate::model::autoencoder::{Architecture, ModelError};
use crate::model::network::{self, Aggregation, ChannelError};
use crate::model::train::{self, TrainConfig, TrainError};
use crate::report::{self, EpochRecord, Parity, PlotInputs, Report, ReportError, Timings};
use console::{EpochProgress, print_centering, print_data_summary, print_threshold};
use parity::{candidate_path, check_parity};
use preflight::{device_name, model_config, preflight};
use record::{created_now, hyperparameters, sample_windows, spec_parameters};

pub use parity::PARITY_TOLERANCE;

/// Environment variable with a Unix time to use as `training.created`
/// (the reproducible-builds convention), for byte-identical model files.
pub const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";

/// Where to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceKind {
    /// burn's Flex CPU backend.
    Cpu,
    /// burn's CUDA backend (builds with `--features cuda` only).
    Cuda,
}

/// Everything a run needs, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    pub data: DataOptions,
    pub out: PathBuf,
    pub report: Option<PathBuf>,
    pub arch: Architecture,
    pub dropout: f64,
    pub batch_norm: bool,
    pub train: TrainConfig,
    /// Which channels the graph centers per window (`crate::centering`).
    pub centering: Centering,
    pub centering_ratio: f64,
    pub centering_drift: f64,
    pub threshold: ThresholdRule,
    /// `target-far`: folds of the training windows scored out of fold for
    /// the calibration (0 or 1: the validation windows only).
    pub calibration_folds: usize,
    pub channel_weighting: ChannelWeighting,
    /// What `channel_error` measures.
    pub channel_error: ChannelError,
    /// How the weighted channel errors make the score.
    pub aggregation: Aggregation,
    /// Detector default: EWMA weight of the newest score (1 = none).
    pub smoothing: f32,
    pub raise_after: u32,
    pub clear_after: u32,
    pub clear_ratio: f32,
    pub name: String,
    pub model_version: String,
    pub device: DeviceKind,
    pub ort_library: Option<PathBuf>,
}

/// The exit codes of [`RunError::exit_code`] as `--help` and the man page
/// list them.
pub const EXIT_HELP: &str = "\
Exit status (sysexits.h):
  0   the model file was written
  1   any other failure
  2   a command-line usage error (unknown or malformed option)
  64  invalid options (EX_USAGE)
  65  unusable input data (EX_DATAERR): too few rows or windows, bad values
  66  an input file is missing or unreadable (EX_NOINPUT)
  69  ONNX Runtime cannot be loaded (EX_UNAVAILABLE)
  70  the exported model failed its parity check (EX_SOFTWARE)
  73  the model or report cannot be written (EX_CANTCREAT)";

/// Why a run failed. [`RunError::exit_code`] maps it to a process exit code.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Options(String),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Calibrate(#[from] CalibrateError),
    #[error("cannot export the model")]
    Export(#[source] ExportError),
    #[error("cannot check the exported model with ONNX Runtime")]
    Runtime(#[source] RuntimeError),
    #[error(
        "exporter parity check failed: ONNX Runtime and burn differ by up to {reconstruction:e} (reconstruction) / {score:e} (score) on {windows} validation windows, tolerance {PARITY_TOLERANCE:e}; {} was not written",
        out.display()
    )]
    Parity {
        reconstruction: f64,
        score: f64,
        windows: usize,
        out: PathBuf,
    },
    #[error("cannot move the checked model into place at {}", path.display())]
    Install {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the report")]
    Report(#[source] ReportError),
    #[error("--out {}: the folder {} does not exist", out.display(), dir.display())]
    OutputDir { out: PathBuf, dir: PathBuf },
}

impl RunError {
    /// Exit code in the spirit of BSD `sysexits.h`: 64 bad usage, 65 bad
    /// data, 66 missing input, 69 ONNX Runtime unavailable, 70 parity
    /// failure (an exporter bug), 73 cannot write output, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        use anomalyd::core::log::LoadError;
        match self {
            RunError::Options(_)
            | RunError::Model(ModelError::Zero { .. })
            | RunError::Model(ModelError::Dropout(_))
            | RunError::Model(ModelError::EvenKernel(_))
            | RunError::Model(ModelError::FilterCount(_))
            | RunError::Model(ModelError::WindowNotDivisibleBy4(..))
            | RunError::Calibrate(CalibrateError::Invalid { .. })
            | RunError::Train(TrainError::Invalid { .. })
            | RunError::Data(DataError::NoInput) => 64,
            RunError::Data(DataError::Load(e)) if matches!(**e, LoadError::Io { .. }) => 66,
            RunError::Data(_) => 65,
            RunError::Runtime(RuntimeError::Library { .. } | RuntimeError::Environment { .. }) => {
                69
            }
            RunError::Export(ExportError::Io { .. })
            | RunError::OutputDir { .. }
            | RunError::Install { .. }
            | RunError::Report(_) => 73,
            RunError::Parity { .. }
            | RunError::Model(ModelError::Weights { .. })
            | RunError::Export(_) => 70,
            _ => 1,
        }
    }
}

/// What a successful run produced.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub model_path: PathBuf,
    pub model_bytes: u64,
    pub metadata: ModelMetadata,
    pub parity: Parity,
    pub timings: Timings,
    pub report_files: Vec<PathBuf>,
}

/// Trains, calibrates, exports and checks one model; see the module docs.
///
/// # Errors
/// Any [`RunError`]; nothing is written to `opts.out` unless the run
/// succeeds (the report, if asked for, is written last).
pub fn run(opts: &TrainOptions) -> Result<RunSummary, RunError> {
    let started = Instant::now();
    let mut timings = Timings::default();
    let (detector, device) = preflight(opts)?;

    let mut data = load_dataset(&opts.data)?;
    timings.load_s = started.elapsed().as_secs_f64();
    let (c, t) = (data.channels.len(), data.window);
    print_data_summary(&data);
    let level_ratios = centering::level_ratios(&data.train, c, t);
    let drifts = centering::drifts(&data.train, &data.validation, c, t);
    let centered = centering::choose(
        opts.centering,
        &level_ratios,
        drifts.as_deref(),
        opts.centering_ratio,
        opts.centering_drift,
    );
    for set in [&mut data.train, &mut data.validation] {
        centering::center_windows(&mut set.data, c, t, &centered);
    }
    print_centering(&data.channels, &level_ratios, drifts.as_deref(), &centered);
    for w in &data.warnings {
        eprintln!("warning: {w}");
    }

    // Seeding the device seeds weight initialisation, dropout masks and
    // input noise; the shuffle has its own generator seeded from the same
    // number.
    device.seed(opts.train.seed);
    let autodiff = device.clone().autodiff();
    let model = model_config(opts, c).init(&autodiff)?;
    println!(
        "training {} autoencoder ({} parameters) on {} for up to {} epochs",
        opts.arch.name(),
        model.parameter_count(),
        device_name(opts.device),
        opts.train.epochs
    );
    let progress = EpochProgress::new(opts.train.epochs);
    let outcome = train::train(
        model,
        &data.train,
        &data.validation,
        (c, t),
        &opts.train,
        &autodiff,
        |e| progress.epoch(e),
    )?;
    progress.finish();
    timings.train_s = outcome.elapsed.as_secs_f64();
    println!(
        "best epoch {} of {}{}: train loss {:.5}, validation loss {:.5} ({:.1} s)",
        outcome.best_epoch,
        outcome.epochs_run,
        if outcome.stopped_early {
            " (early stop)"
        } else {
            ""
        },
        outcome.train_loss[outcome.best_epoch - 1],
        outcome.validation_loss[outcome.best_epoch - 1],
        timings.train_s
    );

    let stage = Instant::now();
    let recon = train::reconstruct(&outcome.model, &data.validation, (c, t), &device)?;
    let errors = calibrate::channel_errors(&data.validation.data, &recon, t, opts.channel_error);
    let weights = calibrate::channel_weights(opts.channel_weighting, &errors, c);
    let scores = calibrate::scores(&errors, &weights, opts.aggregation);
    // The detector compares its moving average with the threshold.
    let smoothed = calibrate::smooth(&scores, &data.validation.source, opts.smoothing);
    let (threshold, far, warning) = match opts.threshold {
        ThresholdRule::TargetFar(target) => {
            let pooled = crossfit::calibration_scores(opts, &data, &device, &weights, &scores)?;
            let (spec, far) = calibrate::target_far_threshold(
                &pooled.scores,
                &pooled.stretches,
                &detector,
                target,
            )?;
            (spec, Some(far), None)
        }
        ThresholdRule::QuantileFactor { quantile, factor } => {
            let (spec, warning) =
                calibrate::quantile_factor_threshold(&smoothed, quantile, factor)?;
            (spec, None, warning)
        }
    };
    let mut calibration = calibrate::calibrate(&smoothed, threshold, far)?;
    calibration.warnings.extend(warning);
    for w in &calibration.warnings {
        eprintln!("warning: {w}");
    }
    print_threshold(&calibration, opts.smoothing);
    timings.calibrate_s = stage.elapsed().as_secs_f64();

    let metadata = ModelMetadata {
        schema_version: SCHEMA_VERSION,
        name: opts.name.clone(),
        version: opts.model_version.clone(),
        channels: data.channels.clone(),
        sample_period_ms: data.sample_period_ms,
        window: t,
        stride: data.stride,
        arch: opts.arch.name().into(),
        normaliser: data.normaliser.clone(),
        score: ScoreDefinition {
            kind: network::score_kind(opts.channel_error, opts.aggregation),
            channel_weights: weights.clone(),
            recent_frames: opts.channel_error.recent_frames(),
            centered_channels: data
                .channels
                .iter()
                .zip(&centered)
                .filter(|(_, c)| **c)
                .map(|(n, _)| n.clone())
                .collect(),
        },
        threshold: calibration.threshold.clone(),
        error_distribution: calibration.distribution.clone(),
        detector,
        training: TrainingSummary {
            rows: data.rows,
            train_windows: data.train.len(),
            validation_windows: data.validation.len(),
            epochs_run: outcome.epochs_run,
            best_epoch: outcome.best_epoch,
            train_loss: outcome.train_loss.clone(),
            validation_loss: outcome.validation_loss.clone(),
            seed: opts.train.seed,
            data_fingerprint: data.fingerprint.clone(),
            created: created_now(),
            trainer_version: env!("CARGO_PKG_VERSION").into(),
            hyperparameters: hyperparameters(opts, &data),
        },
    };

    let stage = Instant::now();
    let spec = outcome
        .model
        .to_network_spec(c, t, weights, centered.clone())?
        .with_score(opts.channel_error, opts.aggregation);
    let proto = export::build_model(&spec, &metadata).map_err(RunError::Export)?;
    let candidate = candidate_path(&opts.out);
    let model_bytes = export::write_model(&candidate, &proto).map_err(RunError::Export)?;
    timings.export_s = stage.elapsed().as_secs_f64();

    let stage = Instant::now();
    let parity = match check_parity(opts, &candidate, &data, &recon, &errors, &scores) {
        Ok(p) if p.passed => p,
        Ok(p) => {
            let _ = std::fs::remove_file(&candidate);
            return Err(RunError::Parity {
                reconstruction: p.max_abs_diff_reconstruction,
                score: p.max_abs_diff_score,
                windows: p.windows,
                out: opts.out.clone(),
            });
        }
        Err(e) => {
            let _ = std::fs::remove_file(&candidate);
            return Err(e);
        }
    };
    timings.parity_s = stage.elapsed().as_secs_f64();
    println!(
        "parity: max abs diff {:.3e} (reconstruction), {:.3e} (score) over {} validation windows, ONNX Runtime vs burn (tolerance {PARITY_TOLERANCE:e})",
        parity.max_abs_diff_reconstruction, parity.max_abs_diff_score, parity.windows
    );
    std::fs::rename(&candidate, &opts.out).map_err(|source| {
        let _ = std::fs::remove_file(&candidate);
        RunError::Install {
            path: opts.out.clone(),
            source,
        }
    })?;
    timings.total_s = started.elapsed().as_secs_f64();
    println!(
        "wrote {} ({model_bytes} bytes) in {:.1} s",
        opts.out.display(),
        timings.total_s
    );

    let mut report_files = Vec::new();
    if let Some(dir) = &opts.report {
        let samples = sample_windows(&data, &recon, &scores);
        let mut warnings = data.warnings.clone();
        warnings.extend(calibration.warnings.iter().cloned());
        let report = Report {
            model_file: opts.out.display().to_string(),
            model_bytes,
            parameters: spec_parameters(&spec),
            device: device_name(opts.device).into(),
            metadata: metadata.clone(),
            epochs: outcome
                .train_loss
                .iter()
                .zip(&outcome.validation_loss)
                .enumerate()
                .map(|(i, (tl, vl))| EpochRecord {
                    epoch: i + 1,
                    train_loss: *tl,
                    validation_loss: *vl,
                })
                .collect(),
            best_epoch: outcome.best_epoch,
            stopped_early: outcome.stopped_early,
            calibration: calibration.clone(),
            parity: parity.clone(),
            timings: timings.clone(),
            inputs: data.inputs.clone(),
            warnings,
        };
        let (files, warnings) = report::write_report(
            dir,
            &report,
            PlotInputs {
                validation_scores: &smoothed,
                samples: &samples,
            },
        )
        .map_err(RunError::Report)?;
        for w in warnings {
            eprintln!("warning: {w}");
        }
        println!("report: {}", dir.display());
        report_files = files;
    }

    Ok(RunSummary {
        model_path: opts.out.clone(),
        model_bytes,
        metadata,
        parity,
        timings,
        report_files,
    })
}
