//! Command-line arguments of `anomalyd-train` (clap) and their conversion
//! into the validated [`TrainOptions`] that [`crate::run::run`] takes.

use std::ops::Range;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::calibrate::{self, ChannelWeighting, ThresholdRule};
use crate::centering::{self, Centering};
use crate::data::{DataOptions, InfluxAuth, InfluxSource, InputSource};
use crate::model::autoencoder::Architecture;
use crate::model::network::{Aggregation, ChannelError};
use crate::model::train::TrainConfig;
use crate::run::{DeviceKind, RunError, TrainOptions};

/// Network family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ArchArg {
    /// 1-D convolutional autoencoder (like SKAB's Conv-AE).
    Conv,
    /// Dense autoencoder on the flattened window.
    Dense,
}

/// What `channel_error` (and so the score) measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScoreArg {
    /// Mean squared reconstruction error over the whole window.
    Mse,
    /// Squared mean reconstruction error over the window's last
    /// --score-frames frames: reacts to a change as soon as it starts.
    RecentBias,
    /// Mean squared reconstruction error over the window's last
    /// --score-frames frames: the recent bias plus the residual's spread,
    /// so a change in how a channel moves counts too.
    RecentMse,
}

/// Trains the anomalyd autoencoder on normal-operation logs and writes the
/// one ONNX model file the daemon loads (network + metadata).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "anomalyd-train",
    version,
    about,
    max_term_width = 100,
    after_help = crate::run::EXIT_HELP
)]
pub struct Args {
    /// Write the man page anomalyd-train.1 and the bash, zsh and fish
    /// completions into DIR, and nothing else (the package build runs this).
    #[arg(long, value_name = "DIR", hide = true, exclusive = true)]
    pub generate_docs: Option<PathBuf>,
    /// CSV or InfluxDB line-protocol log of normal operation; repeat for
    /// several files (windows never span two files).
    #[arg(
        long = "input",
        value_name = "FILE",
        required_unless_present_any = ["synthetic_pump", "influx_url"]
    )]
    pub inputs: Vec<PathBuf>,
    /// Read the training data from InfluxDB at URL through InfluxQL
    /// (`/query`: 1.x, 2.x's v1 compatibility API, 3.x); credentials from
    /// INFLUX_TOKEN, or INFLUX_USERNAME and INFLUX_PASSWORD.
    #[arg(long, value_name = "URL", requires_all = ["database", "measurement"])]
    pub influx_url: Option<String>,
    /// Database (1.x) or bucket (2.x, 3.x) to read with --influx-url.
    #[arg(long, visible_alias = "bucket", value_name = "NAME")]
    pub database: Option<String>,
    /// Measurement to read with --influx-url; its numeric fields are the
    /// channels (e.g. the daemon's [record] measurement).
    #[arg(long, value_name = "M")]
    pub measurement: Option<String>,
    /// Only points with this tag, e.g. asset=pump-7; repeatable.
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    pub tags: Vec<(String, String)>,
    /// Time range to read with --influx-url, START..END (RFC 3339 or epoch;
    /// END exclusive; either side may be left empty).
    #[arg(long, value_name = "START..END", value_parser = parse_range)]
    pub range: Option<(String, String)>,
    /// Also train on ROWS seconds of the built-in pump simulator (no fault),
    /// channels vibration_1 .. flow_rate.
    #[arg(long, value_name = "ROWS")]
    pub synthetic_pump: Option<usize>,
    /// Seed of the pump simulator for --synthetic-pump.
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub synthetic_seed: u64,
    /// Model file to write (atomically, once the parity check has passed).
    #[arg(long, value_name = "MODEL.onnx")]
    pub out: PathBuf,
    /// Keep data rows A (inclusive) to B (exclusive) of each input, counted
    /// from 0 after the header; `A..` and `..B` work too.
    #[arg(long, value_name = "A..B", value_parser = parse_rows)]
    pub rows: Option<Range<usize>>,
    /// Channels in model order [default: every numeric column of the first
    /// input except anomaly/changepoint/label].
    #[arg(long, value_name = "a,b,...", value_delimiter = ',')]
    pub channels: Option<Vec<String>>,
    /// Name of the CSV timestamp column [default: the first column].
    #[arg(long, value_name = "NAME")]
    pub timestamp_column: Option<String>,
    /// Window length T in frames.
    #[arg(long, default_value_t = 40)]
    pub window: usize,
    /// Frames between two windows (training, and scoring in the daemon).
    #[arg(long, default_value_t = 1)]
    pub stride: usize,
    /// Network family.
    #[arg(long, value_enum, default_value_t = ArchArg::Conv)]
    pub arch: ArchArg,
    /// Most epochs to train (early stopping may end sooner).
    #[arg(long, default_value_t = 100)]
    pub epochs: usize,
    /// Seed of weight initialisation, dropout, noise and shuffling.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Write report.json and loss/errors/reconstruction PNGs into DIR.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,

    /// Conv: widths of the two encoder layers (the decoder mirrors them).
    #[arg(
        long,
        value_name = "F1,F2",
        value_delimiter = ',',
        default_value = "32,16"
    )]
    pub filters: Vec<usize>,
    /// Conv: kernel size of every layer (odd).
    #[arg(long, default_value_t = 7)]
    pub kernel: usize,
    /// Dense: width of the hidden layers.
    #[arg(long, default_value_t = 64)]
    pub hidden: usize,
    /// Dense: width of the bottleneck.
    #[arg(long, default_value_t = 16)]
    pub latent: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub learning_rate: f64,
    /// Windows per training batch.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Stop after this many epochs without a better validation loss (0: never).
    #[arg(long, default_value_t = 5)]
    pub patience: usize,
    /// Dropout probability after the first encoder and first decoder layer
    /// (training only; not in the exported graph).
    #[arg(long, default_value_t = 0.2)]
    pub dropout: f64,
    /// L2 penalty on the weights (added to the gradient).
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    /// Clip each parameter's gradient to this L2 norm.
    #[arg(long, value_name = "NORM")]
    pub clip_grad_norm: Option<f32>,
    /// Batch normalisation after the first three layers (folded into them
    /// at export).
    #[arg(long)]
    pub batch_norm: bool,
    /// Denoising: standard deviation of Gaussian noise added to the training
    /// inputs (normalised units); the target stays the clean window.
    #[arg(long, default_value_t = 0.0)]
    pub noise_sigma: f64,
    /// Fraction of each file's windows (the last ones) used for validation,
    /// early stopping and calibration.
    #[arg(long, default_value_t = 0.2)]
    pub validation_fraction: f64,
    /// Share of normal rows the detector may flag: the threshold is
    /// calibrated to it on the held-out validation windows, the detector's
    /// smoothing, raise and clear rules included (docs/far-calibration.md).
    #[arg(long, value_name = "RATE", default_value_t = calibrate::target::DEFAULT_TARGET_FAR)]
    pub target_far: f64,
    /// --target-far: besides the validation windows, calibrate on the
    /// training windows scored out of fold: cut each input's training
    /// windows into this many stretches and train one more model per
    /// stretch on the others (0: validation windows only).
    #[arg(long, value_name = "K", default_value_t = 2)]
    pub calibration_folds: usize,
    /// Instead of --target-far: threshold = this factor x the
    /// --threshold-quantile of the smoothed validation scores.
    #[arg(long, value_name = "F", conflicts_with = "target_far")]
    pub threshold_factor: Option<f64>,
    /// With --threshold-factor: the quantile it multiplies.
    #[arg(
        long,
        value_name = "Q",
        default_value_t = 0.99,
        requires = "threshold_factor"
    )]
    pub threshold_quantile: f64,
    /// Channels scored on their shape within each window instead of their
    /// level (the graph subtracts their window mean): `auto` takes those
    /// whose level wanders more between training windows than they vary
    /// within one (level ratio above --centering-ratio), e.g. a slowly
    /// drifting temperature, unless a long validation part shows the level
    /// staying in the trained range (--centering-drift).
    #[arg(long, value_enum, default_value_t = Centering::Auto)]
    pub centering: Centering,
    /// `--centering auto`: center channels whose level ratio (std of the
    /// window means / mean within-window std, on the training windows)
    /// exceeds this.
    #[arg(long, value_name = "R", default_value_t = centering::DEFAULT_RATIO)]
    pub centering_ratio: f64,
    /// `--centering auto` with a validation part of at least 10 windows'
    /// span: center such a channel only if its drift (share of validation
    /// windows whose mean is outside the training windows' range) exceeds
    /// this.
    #[arg(long, value_name = "D", default_value_t = centering::DEFAULT_DRIFT)]
    pub centering_drift: f64,
    /// What each channel's error measures.
    #[arg(long, value_enum, default_value_t = ScoreArg::RecentBias)]
    pub score: ScoreArg,
    /// `--score recent-bias`/`recent-mse`: frames at the end of the window
    /// it averages [default: window / 4].
    #[arg(long, value_name = "K")]
    pub score_frames: Option<usize>,
    /// How the weighted channel errors make the score.
    #[arg(long, value_enum, default_value_t = Aggregation::Max)]
    pub score_aggregation: Aggregation,
    /// Weights of the per-channel errors in the score.
    #[arg(long, value_enum, default_value_t = ChannelWeighting::InverseValidationError)]
    pub channel_weighting: ChannelWeighting,
    /// Detector default: weight of the newest window in the moving average
    /// of the score compared with the threshold (1 = no smoothing); the
    /// threshold is calibrated on validation scores smoothed the same way.
    #[arg(long, value_name = "ALPHA", default_value_t = 0.1)]
    pub smoothing: f32,
    /// Detector default: raise an alert after this many windows above threshold.
    #[arg(long, default_value_t = 3)]
    pub raise_after: u32,
    /// Detector default: clear after this many windows below threshold * clear-ratio.
    #[arg(long, default_value_t = 5)]
    pub clear_after: u32,
    /// Detector default: hysteresis ratio for clearing.
    #[arg(long, default_value_t = 0.8)]
    pub clear_ratio: f32,
    /// Model name (the `model` tag of every output point) [default: the
    /// output file's stem].
    #[arg(long)]
    pub name: Option<String>,
    /// Model version (free text).
    #[arg(long, default_value = "1")]
    pub model_version: String,
    /// Frame period in ms [default: median spacing of the input timestamps].
    #[arg(long, value_name = "MS")]
    pub sample_period_ms: Option<u64>,
    /// Leave out windows with a larger fraction of imputed (carried-forward)
    /// values in any channel.
    #[arg(long, default_value_t = 0.1)]
    pub max_imputed_fraction: f32,
    /// Where to train.
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
    /// ONNX Runtime library for the parity check [default: ORT_DYLIB_PATH,
    /// then next to the executable].
    #[arg(long, value_name = "PATH")]
    pub ort_library: Option<PathBuf>,
}

/// Parses `A..B`, `A..` or `..B`.
fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE (e.g. asset=pump-7)")),
    }
}

fn parse_range(s: &str) -> Result<(String, String), String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("{s:?} is not a time range START..END"))?;
    Ok((a.trim().to_string(), b.trim().to_string()))
}

fn parse_rows(s: &str) -> Result<Range<usize>, String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("{s:?} is not a row range A..B (e.g. 0..400)"))?;
    let num = |t: &str, default: usize| -> Result<usize, String> {
        let t = t.trim();
        if t.is_empty() {
            Ok(default)
        } else {
            t.parse()
                .map_err(|_| format!("{t:?} in {s:?} is not a row number"))
        }
    };
    let start = num(a, 0)?;
    let end = num(b, usize::MAX)?;
    if end <= start {
        return Err(format!(
            "row range {s:?} is empty (B must be larger than A)"
        ));
    }
    Ok(start..end)
}

impl Args {
    /// Checks the arguments and builds the options.
    ///
    /// # Errors
    /// [`RunError::Options`] naming the bad flag.
    pub fn into_options(self) -> Result<TrainOptions, RunError> {
        let bad = |m: String| Err(RunError::Options(m));
        let arch = match self.arch {
            ArchArg::Conv => Architecture::conv(&self.filters, self.kernel)?,
            ArchArg::Dense => Architecture::Dense {
                hidden: self.hidden,
                latent: self.latent,
            },
        };
        if !(self.validation_fraction > 0.0 && self.validation_fraction < 1.0) {
            return bad(format!(
                "--validation-fraction must be in (0, 1), got {}",
                self.validation_fraction
            ));
        }
        if !(0.0..=1.0).contains(&self.max_imputed_fraction) {
            return bad(format!(
                "--max-imputed-fraction must be in [0, 1], got {}",
                self.max_imputed_fraction
            ));
        }
        if !(0.0..=1.0).contains(&self.centering_drift) {
            return bad(format!(
                "--centering-drift must be in [0, 1], got {}",
                self.centering_drift
            ));
        }
        if !(self.centering_ratio.is_finite() && self.centering_ratio > 0.0) {
            return bad(format!(
                "--centering-ratio must be a positive number, got {}",
                self.centering_ratio
            ));
        }
        if !(self.target_far > 0.0 && self.target_far < 1.0) {
            return bad(format!(
                "--target-far must be in (0, 1), got {}",
                self.target_far
            ));
        }
        if self.stride == 0 {
            return bad("--stride must be at least 1".into());
        }
        let channel_error = match self.score {
            ScoreArg::Mse => ChannelError::Mse,
            ScoreArg::RecentBias | ScoreArg::RecentMse => {
                let frames = self.score_frames.unwrap_or((self.window / 4).max(1));
                if frames == 0 || frames > self.window {
                    return bad(format!(
                        "--score-frames must be between 1 and --window ({}), got {frames}",
                        self.window
                    ));
                }
                if self.score == ScoreArg::RecentMse {
                    ChannelError::RecentMse { frames }
                } else {
                    ChannelError::RecentBias { frames }
                }
            }
        };
        if self.sample_period_ms == Some(0) {
            return bad("--sample-period-ms must be at least 1".into());
        }
        let name = match self.name {
            Some(n) => n,
            None => self
                .out
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("model")
                .to_string(),
        };
        if name.trim().is_empty() {
            return bad("--name must not be empty".into());
        }
        let mut inputs: Vec<InputSource> = self.inputs.into_iter().map(InputSource::File).collect();
        if let Some(url) = self.influx_url {
            inputs.push(InputSource::Influx(InfluxSource {
                url,
                database: self.database.unwrap_or_default(),
                measurement: self.measurement.unwrap_or_default(),
                tags: self.tags,
                range: self.range,
                channels: self.channels.clone(),
                auth: InfluxAuth::from_env(),
            }));
        }
        if let Some(rows) = self.synthetic_pump {
            inputs.push(InputSource::SyntheticPump {
                rows,
                seed: self.synthetic_seed,
            });
        }
        Ok(TrainOptions {
            data: DataOptions {
                inputs,
                rows: self.rows,
                channels: self.channels,
                timestamp_column: self.timestamp_column,
                window: self.window,
                stride: self.stride,
                validation_fraction: self.validation_fraction,
                sample_period_ms: self.sample_period_ms,
                max_imputed_fraction: self.max_imputed_fraction,
            },
            out: self.out,
            report: self.report,
            arch,
            dropout: self.dropout,
            batch_norm: self.batch_norm,
            train: TrainConfig {
                epochs: self.epochs,
                batch_size: self.batch_size,
                learning_rate: self.learning_rate,
                weight_decay: self.weight_decay,
                clip_grad_norm: self.clip_grad_norm,
                patience: self.patience,
                noise_sigma: self.noise_sigma,
                seed: self.seed,
            },
            centering: self.centering,
            centering_ratio: self.centering_ratio,
            centering_drift: self.centering_drift,
            threshold: match self.threshold_factor {
                Some(factor) => ThresholdRule::QuantileFactor {
                    quantile: self.threshold_quantile,
                    factor,
                },
                None => ThresholdRule::TargetFar(self.target_far),
            },
            calibration_folds: self.calibration_folds,
            channel_weighting: self.channel_weighting,
            channel_error,
            aggregation: self.score_aggregation,
            smoothing: self.smoothing,
            raise_after: self.raise_after,
            clear_after: self.clear_after,
            clear_ratio: self.clear_ratio,
            name,
            model_version: self.model_version,
            device: self.device,
            ort_library: self.ort_library,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn row_ranges_parse() {
        assert_eq!(parse_rows("0..400").unwrap(), 0..400);
        assert_eq!(parse_rows("10..").unwrap(), 10..usize::MAX);
        assert_eq!(parse_rows("..5").unwrap(), 0..5);
        assert!(parse_rows("5..5").unwrap_err().contains("empty"));
        assert!(parse_rows("a..5").is_err());
        assert!(parse_rows("400").is_err());
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let a = Args::parse_from(["anomalyd-train", "--input", "x.csv", "--out", "m.onnx"]);
        let o = a.into_options().unwrap();
        assert_eq!(o.data.window, 40);
        assert_eq!(o.channel_error, ChannelError::RecentBias { frames: 10 });
        assert_eq!(o.aggregation, Aggregation::Max);
        assert_eq!(o.centering, Centering::Auto);
        assert_eq!(o.smoothing, 0.1);
        assert_eq!(o.threshold, ThresholdRule::TargetFar(0.01));
        assert_eq!(o.name, "m");
        let a = Args::parse_from([
            "anomalyd-train",
            "--input",
            "x.csv",
            "--out",
            "m.onnx",
            "--threshold-factor",
            "8",
        ]);
        assert_eq!(
            a.into_options().unwrap().threshold,
            ThresholdRule::QuantileFactor {
                quantile: 0.99,
                factor: 8.0
            }
        );
        assert_eq!(
            o.arch,
            Architecture::Conv {
                filters: [32, 16],
                kernel: 7
            }
        );
        assert_eq!(o.train.batch_size, 32);
        assert_eq!(o.train.patience, 5);
    }

    #[test]
    fn bad_values_name_the_flag() {
        let a = Args::parse_from([
            "anomalyd-train",
            "--input",
            "x.csv",
            "--out",
            "m.onnx",
            "--validation-fraction",
            "1.5",
        ]);
        let e = a.into_options().unwrap_err().to_string();
        assert!(e.contains("--validation-fraction"), "{e}");
        let a = Args::parse_from([
            "anomalyd-train",
            "--input",
            "x.csv",
            "--out",
            "m.onnx",
            "--score-frames",
            "41",
        ]);
        let e = a.into_options().unwrap_err().to_string();
        assert!(e.contains("--score-frames") && e.contains("(40)"), "{e}");
        let a = Args::parse_from([
            "anomalyd-train",
            "--input",
            "x.csv",
            "--out",
            "m.onnx",
            "--filters",
            "8",
        ]);
        assert!(
            a.into_options()
                .unwrap_err()
                .to_string()
                .contains("--filters")
        );
    }
}
