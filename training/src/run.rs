//! One training run, start to finish: load the windows, train, calibrate,
//! export, check the written file with ONNX Runtime against burn (parity),
//! then move it into place and write the report.
//!
//! Results go to stdout, progress and warnings to stderr. The model file
//! appears at `--out` only after the parity check has passed; a failing
//! check leaves any previous file there untouched.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anomalyd::core::contract::{ModelMetadata, SCHEMA_VERSION, ScoreDefinition, TrainingSummary};
use anomalyd::core::normalise::Normaliser;
use anomalyd::core::timestamp::format_rfc3339;
use anomalyd::model::{ExecutionProvider, LoadedModel, RuntimeError, RuntimeOptions};
use burn::tensor::Device;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value, json};

use crate::calibrate::{self, CalibrateError, ChannelWeighting};
use crate::centering::{self, Centering};
use crate::data::{DataError, DataOptions, Dataset, load_dataset};
use crate::export::{self, ExportError};
use crate::model::{Architecture, ModelConfig, ModelError};
use crate::network::{self, Aggregation, ChannelError};
use crate::report::{
    self, EpochRecord, Parity, PlotInputs, Report, ReportError, SampleWindow, Timings,
};
use crate::train::{self, EpochStats, INFERENCE_BATCH, TrainConfig, TrainError};

/// Largest absolute difference allowed between ONNX Runtime and burn.
pub const PARITY_TOLERANCE: f64 = 1e-4;

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
    pub threshold_quantile: f64,
    pub threshold_factor: f64,
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
    let detector = calibrate::detector_defaults(
        opts.raise_after,
        opts.clear_after,
        opts.clear_ratio,
        opts.smoothing,
    )?;
    opts.train.validate()?;
    // Check the architecture against the window, and that the model can be
    // written, before reading any data or training.
    model_config(opts, 1).validate()?;
    let out_dir = match opts.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !out_dir.is_dir() {
        return Err(RunError::OutputDir {
            out: opts.out.clone(),
            dir: out_dir,
        });
    }
    let device = make_device(opts.device)?;
    // The parity check needs ONNX Runtime: find it before spending time.
    anomalyd::model::init_runtime(opts.ort_library.as_deref()).map_err(RunError::Runtime)?;

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
    let calibration =
        calibrate::calibrate(&smoothed, opts.threshold_quantile, opts.threshold_factor)?;
    for w in &calibration.warnings {
        eprintln!("warning: {w}");
    }
    let chosen_ks = calibration
        .candidates
        .iter()
        .find(|q| q.distribution == calibration.distribution)
        .map_or(f64::NAN, |q| q.ks);
    println!(
        "threshold {:.6} ({} = quantile {} of {} validation scores{} x {}); error distribution {} (KS {:.3}); {:.2} % of validation windows above",
        calibration.threshold.value,
        calibration.threshold.method,
        opts.threshold_quantile,
        calibration.windows,
        if opts.smoothing < 1.0 {
            format!(" smoothed with weight {}", opts.smoothing)
        } else {
            String::new()
        },
        opts.threshold_factor,
        distribution_name(&calibration.distribution),
        chosen_ks,
        calibration.above_threshold * 100.0
    );
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
            recent_frames: match opts.channel_error {
                ChannelError::RecentBias { frames } => Some(frames),
                ChannelError::Mse => None,
            },
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

fn model_config(opts: &TrainOptions, channels: usize) -> ModelConfig {
    ModelConfig {
        arch: opts.arch.clone(),
        channels,
        window: opts.data.window,
        dropout: opts.dropout,
        batch_norm: opts.batch_norm,
    }
}

fn make_device(kind: DeviceKind) -> Result<Device, RunError> {
    match kind {
        DeviceKind::Cpu => Ok(Device::flex()),
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda => Ok(Device::cuda(0)),
        #[cfg(not(feature = "cuda"))]
        DeviceKind::Cuda => Err(RunError::Options(
            "--device cuda needs a trainer built with `--features cuda`".into(),
        )),
    }
}

fn device_name(kind: DeviceKind) -> &'static str {
    match kind {
        DeviceKind::Cpu => "cpu (burn flex)",
        DeviceKind::Cuda => "cuda:0 (burn cuda)",
    }
}

fn distribution_name(d: &anomalyd::core::contract::ErrorDistribution) -> String {
    use anomalyd::core::contract::ErrorDistribution;
    match d {
        ErrorDistribution::Gamma { shape, rate } => {
            format!("gamma(shape {shape:.3}, rate {rate:.3})")
        }
        ErrorDistribution::LogNormal { location, scale } => {
            format!("log-normal(location {location:.3}, scale {scale:.3})")
        }
    }
}

fn print_data_summary(data: &Dataset) {
    let boundary: usize = data.inputs.iter().map(|i| i.boundary_windows_dropped).sum();
    println!(
        "data: {} input(s), {} rows, {} channels ({}), sample period {} ms",
        data.inputs.len(),
        data.rows,
        data.channels.len(),
        data.channels.join(", "),
        data.sample_period_ms
    );
    println!(
        "windows: {} training, {} validation ({} between them dropped so the parts share no row), window {}, stride {}",
        data.train.len(),
        data.validation.len(),
        boundary,
        data.window,
        data.stride
    );
}

/// One line on what was centered and why: level ratio, and drift when the
/// validation part was long enough to measure it.
fn print_centering(channels: &[String], ratios: &[f64], drifts: Option<&[f64]>, centered: &[bool]) {
    let describe = |c: usize| match drifts {
        Some(d) => format!(
            "{} (level ratio {:.2}, drift {:.0} %)",
            channels[c],
            ratios[c],
            d[c] * 100.0
        ),
        None => format!("{} (level ratio {:.2})", channels[c], ratios[c]),
    };
    let list: Vec<String> = (0..channels.len())
        .filter(|c| centered[*c])
        .map(describe)
        .collect();
    if list.is_empty() {
        println!("centering: none (every channel is scored on its level too)");
    } else {
        println!(
            "centering: {} scored on their shape within each window",
            list.join(", ")
        );
    }
}

/// `training.created`: `SOURCE_DATE_EPOCH` if set (reproducible files),
/// else the current time.
fn created_now() -> String {
    let from_env = std::env::var(SOURCE_DATE_EPOCH)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .map(|s| s.saturating_mul(1_000_000_000));
    let ns = from_env.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    });
    // Whole seconds: sub-second noise says nothing about a model.
    format_rfc3339(ns - ns.rem_euclid(1_000_000_000))
}

/// Every setting that shaped the model, by flag name.
fn hyperparameters(opts: &TrainOptions, data: &Dataset) -> Map<String, Value> {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    put("arch", json!(opts.arch.name()));
    match &opts.arch {
        Architecture::Conv { filters, kernel } => {
            put("filters", json!(filters));
            put("kernel", json!(kernel));
        }
        Architecture::Dense { hidden, latent } => {
            put("hidden", json!(hidden));
            put("latent", json!(latent));
        }
    }
    put("window", json!(data.window));
    put("stride", json!(data.stride));
    put("epochs", json!(opts.train.epochs));
    put("batch_size", json!(opts.train.batch_size));
    put("learning_rate", json!(opts.train.learning_rate));
    put("optimizer", json!("adam"));
    put("loss", json!("mse"));
    put("patience", json!(opts.train.patience));
    put("dropout", json!(opts.dropout));
    put("weight_decay", short(opts.train.weight_decay));
    put(
        "clip_grad_norm",
        opts.train.clip_grad_norm.map_or(Value::Null, short),
    );
    put("batch_norm", json!(opts.batch_norm));
    put("noise_sigma", json!(opts.train.noise_sigma));
    put("validation_fraction", json!(opts.data.validation_fraction));
    put("centering", json!(opts.centering));
    put("centering_ratio", json!(opts.centering_ratio));
    put("centering_drift", json!(opts.centering_drift));
    put("threshold_quantile", json!(opts.threshold_quantile));
    put("threshold_factor", json!(opts.threshold_factor));
    put("channel_weighting", json!(opts.channel_weighting));
    put("score", json!(opts.channel_error.name()));
    put(
        "score_frames",
        match opts.channel_error {
            ChannelError::RecentBias { frames } => json!(frames),
            ChannelError::Mse => Value::Null,
        },
    );
    put("score_aggregation", json!(opts.aggregation));
    put("smoothing", short(opts.smoothing));
    put("raise_after", json!(opts.raise_after));
    put("clear_after", json!(opts.clear_after));
    put("clear_ratio", short(opts.clear_ratio));
    put("name", json!(opts.name));
    put("model_version", json!(opts.model_version));
    put(
        "max_imputed_fraction",
        json!(opts.data.max_imputed_fraction),
    );
    put("sample_period_ms", json!(data.sample_period_ms));
    put(
        "sample_period_source",
        json!(if opts.data.sample_period_ms.is_some() {
            "flag"
        } else {
            "median spacing"
        }),
    );
    put(
        "rows",
        match &opts.data.rows {
            Some(r) if r.end == usize::MAX => json!(format!("{}..", r.start)),
            Some(r) => json!(format!("{}..{}", r.start, r.end)),
            None => Value::Null,
        },
    );
    put("timestamp_column", json!(opts.data.timestamp_column));
    put(
        "inputs",
        json!(
            opts.data
                .inputs
                .iter()
                .map(|i| i.describe())
                .collect::<Vec<_>>()
        ),
    );
    put("seed", json!(opts.train.seed));
    put("device", json!(device_name(opts.device)));
    m
}

/// An `f32` flag value as the user typed it (`0.8`, not `0.800000011920929`).
fn short(x: f32) -> Value {
    x.to_string()
        .parse::<f64>()
        .map_or(Value::Null, |v| json!(v))
}

/// The temporary name the model is written under until parity passes.
fn candidate_path(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model.onnx".into());
    out.with_file_name(format!(".{name}.unchecked"))
}

/// Reloads the written file through ONNX Runtime and compares its outputs
/// with burn's on every validation window.
fn check_parity(
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

/// The validation windows with the lowest, median and highest score, in
/// engineering units, for `reconstruction.png`.
fn sample_windows(data: &Dataset, recon: &[f32], scores: &[f32]) -> Vec<SampleWindow> {
    let per_window = data.channels.len() * data.window;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    let Some(&last) = order.last() else {
        return Vec::new();
    };
    let mut picks = vec![
        ("lowest score", order[0]),
        ("median score", order[order.len() / 2]),
        ("highest score", last),
    ];
    // Fewer than three windows: show each once.
    picks.dedup_by_key(|(_, i)| *i);
    let norm = Normaliser::new(&data.normaliser);
    let mut out: Vec<SampleWindow> = Vec::new();
    for (label, i) in picks {
        let mut original = data.validation.data[i * per_window..(i + 1) * per_window].to_vec();
        let mut reconstruction = recon[i * per_window..(i + 1) * per_window].to_vec();
        norm.invert_window(&mut original, data.window);
        norm.invert_window(&mut reconstruction, data.window);
        out.push(SampleWindow {
            label: label.into(),
            score: scores[i],
            original,
            reconstruction,
        });
    }
    out
}

fn spec_parameters(spec: &crate::network::NetworkSpec) -> usize {
    use crate::network::Layer;
    spec.layers
        .iter()
        .map(|l| match l {
            Layer::Conv1d { weight, bias, .. }
            | Layer::ConvTranspose1d { weight, bias, .. }
            | Layer::Dense { weight, bias, .. } => weight.len() + bias.len(),
            Layer::Relu => 0,
        })
        .sum()
}

/// Per-epoch progress on stderr: a bar on a terminal, else one line per
/// epoch (logs and CI stay readable).
struct EpochProgress {
    bar: Option<ProgressBar>,
}

impl EpochProgress {
    fn new(epochs: usize) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self { bar: None };
        }
        let bar = ProgressBar::new(epochs as u64);
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix} {pos:>3}/{len} [{bar:20.cyan/blue}] {elapsed:>4} {wide_msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix("epoch");
        Self { bar: Some(bar) }
    }

    fn epoch(&self, e: &EpochStats) {
        let line = format!(
            "train loss {:.5}  val loss {:.5}{}",
            e.train_loss,
            e.validation_loss,
            if e.improved { "  (best)" } else { "" }
        );
        match &self.bar {
            Some(bar) => {
                bar.set_message(line);
                bar.inc(1);
            }
            None => eprintln!(
                "epoch {:>3}: {line} [{:.2} s]",
                e.epoch,
                e.elapsed.as_secs_f64()
            ),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
