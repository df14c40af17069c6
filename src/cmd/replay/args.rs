//! `anomalyd replay`'s command line, turned into [`ReplayOptions`].

use std::path::PathBuf;

use super::ReplayOptions;
use crate::config::{AssetRule, Config, ConfigError};
use crate::model::{ExecutionProvider, RuntimeOptions};

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub input: PathBuf,
    /// Config for detector overrides, pipeline settings and --influx.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Asset name written to the output.
    #[arg(long, default_value = "replay")]
    pub asset: String,
    /// Output CSV: timestamp,asset,score,threshold,probability,anomaly.
    #[arg(long, required_unless_present = "influx")]
    pub output: Option<PathBuf>,
    /// Send the records to the configured InfluxDB (backfill).
    #[arg(long)]
    pub influx: bool,
    #[arg(long)]
    pub timestamp_column: Option<String>,
    /// Override the model's threshold.
    #[arg(long)]
    pub threshold: Option<f32>,
    #[arg(long)]
    pub raise_after: Option<u32>,
    #[arg(long)]
    pub clear_after: Option<u32>,
    #[arg(long)]
    pub clear_ratio: Option<f32>,
    /// Let the threshold follow normal scores with this half-life in hours
    /// of data (docs/far-calibration.md §4; 0 = off, the default).
    #[arg(long)]
    pub adapt_half_life_h: Option<f64>,
    /// Cap of the adapted threshold, times the calibrated one [default: 2].
    #[arg(long)]
    pub adapt_max_factor: Option<f32>,
    /// Windows per ONNX Runtime call.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    #[arg(long)]
    pub ort_library: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    pub execution_provider: ExecutionProvider,
}

impl ReplayArgs {
    /// Loads the config named by `--config` (if any) and applies the
    /// command-line overrides of the detector and the runtime.
    ///
    /// # Errors
    /// The config file cannot be read or is invalid.
    pub fn into_options(self) -> Result<ReplayOptions, ConfigError> {
        let config = self
            .config
            .as_deref()
            .map(Config::load)
            .transpose()?
            .map(|s| s.config);
        let rule = (self.threshold.is_some()
            || self.raise_after.is_some()
            || self.clear_after.is_some()
            || self.clear_ratio.is_some()
            || self.adapt_half_life_h.is_some()
            || self.adapt_max_factor.is_some())
        .then(|| AssetRule {
            pattern: "*".into(),
            model: None,
            threshold: self.threshold,
            raise_after: self.raise_after,
            clear_after: self.clear_after,
            clear_ratio: self.clear_ratio,
            adapt_half_life_h: self.adapt_half_life_h,
            adapt_max_factor: self.adapt_max_factor,
        });
        let library_path = self
            .ort_library
            .or_else(|| config.as_ref().and_then(|c| c.runtime.library_path.clone()));
        Ok(ReplayOptions {
            model: self.model,
            input: self.input,
            asset: self.asset,
            output: self.output,
            config,
            influx: self.influx,
            timestamp_column: self.timestamp_column,
            runtime: RuntimeOptions {
                library_path,
                execution_provider: self.execution_provider,
                intra_threads: 1,
            },
            batch: self.batch,
            rule,
            progress: true,
        })
    }
}
