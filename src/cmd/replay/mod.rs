//! `anomalyd replay`: the daemon's pipeline fed from a CSV or line-protocol
//! file instead of MQTT. Writes one CSV row per input row (or sends the
//! records to InfluxDB for backfill). Used for evaluation and in tests that
//! hold the live path to the same numbers.

mod args;

pub use args::ReplayArgs;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::config::{AssetRule, Config};
use crate::core::log::{LoadOptions, load_log};
use crate::model::{LoadedModel, RuntimeOptions};
use crate::ops::metrics::Metrics;
use crate::pipeline::{Binder, FeatureStage, ModelSlot, NamedModel, Output, Scorer, StageSettings};
pub use crate::sinks::csv::RowResult;
use crate::sinks::csv::write_csv;
use crate::sinks::influx::{InfluxWriter, SinkSettings, run_sink};

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Runtime(#[from] crate::model::RuntimeError),
    #[error(transparent)]
    Load(#[from] crate::core::log::LoadError),
    #[error("input {path} lacks channel(s) the model needs: {missing:?} (it has {available:?})")]
    MissingChannels {
        path: PathBuf,
        missing: Vec<String>,
        available: Vec<String>,
    },
    #[error(transparent)]
    Write(#[from] crate::sinks::csv::CsvError),
    #[error("--influx needs a config with an [influx] section (--config)")]
    NoInfluxConfig,
    #[error(transparent)]
    Sink(#[from] crate::sinks::influx::SinkError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Other(String),
}

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub model: PathBuf,
    pub input: PathBuf,
    pub asset: String,
    pub output: Option<PathBuf>,
    pub config: Option<Config>,
    pub influx: bool,
    pub timestamp_column: Option<String>,
    pub runtime: RuntimeOptions,
    /// Windows per ONNX Runtime call.
    pub batch: usize,
    /// Overrides of the detector (e.g. from the command line).
    pub rule: Option<AssetRule>,
    pub progress: bool,
}

/// Figures of a finished replay.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplaySummary {
    pub rows: usize,
    pub windows: u64,
    pub alerts_raised: u64,
    pub anomalous_rows: usize,
    pub seconds: f64,
    pub dropped: u64,
}

/// Runs the replay.
///
/// # Errors
/// Unreadable model or input, missing channels, output not writable.
pub fn replay(opts: &ReplayOptions) -> Result<(ReplaySummary, Vec<RowResult>), ReplayError> {
    let start = Instant::now();
    crate::model::init_runtime(opts.runtime.library_path.as_deref())?;
    let model = LoadedModel::load(&opts.model, &opts.runtime)?;
    let meta = model.metadata.clone();
    let log = load_log(
        &opts.input,
        &LoadOptions {
            timestamp_column: opts.timestamp_column.clone(),
            rows: None,
        },
    )?;
    let missing: Vec<String> = meta
        .channels
        .iter()
        .filter(|c| log.column_index(c).is_none())
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(ReplayError::MissingChannels {
            path: opts.input.clone(),
            missing,
            available: log.columns.clone(),
        });
    }
    let cols = log.select(&meta.channels)?;

    let metrics = Arc::new(Metrics::default());
    let name = meta.name.clone();
    let mut binder = match &opts.config {
        Some(cfg) => Binder::from_config(cfg),
        None => Binder::single(&name),
    };
    if opts.config.is_some() {
        // The model given on the command line is the one used, whatever
        // name the config's rules use.
        binder = binder.with_rule(AssetRule {
            pattern: "*".into(),
            model: Some(name.clone()),
            threshold: None,
            raise_after: None,
            clear_after: None,
            clear_ratio: None,
            adapt_half_life_h: None,
            adapt_max_factor: None,
        });
        if let Some(cfg) = &opts.config
            && let Some(r) = Binder::from_config(cfg).rule_for(&opts.asset)
        {
            binder = binder.with_rule(AssetRule {
                model: Some(name.clone()),
                ..r.clone()
            });
        }
    }
    if let Some(rule) = &opts.rule {
        binder = binder.with_rule(AssetRule {
            model: Some(name.clone()),
            ..rule.clone()
        });
    }
    let settings = opts
        .config
        .as_ref()
        .map(StageSettings::from_config)
        .unwrap_or_default();
    let mut stage = FeatureStage::new(
        vec![ModelSlot::new(&name, meta.clone())],
        binder,
        settings,
        metrics.clone(),
    );
    let mut scorer = Scorer::new(
        vec![NamedModel {
            name: name.as_str().into(),
            model,
        }],
        metrics.clone(),
    );

    let mut requests = Vec::new();
    let mut outputs = Vec::new();
    let mut row = vec![0f64; cols.len()];
    let batch = opts.batch.max(1);
    let n = log.timestamps.len();
    let mut next_progress = n / 10;
    for (i, (ts, values)) in log.timestamps.iter().zip(&log.values).enumerate() {
        for (k, &c) in cols.iter().enumerate() {
            row[k] = values[c];
        }
        stage.push_row(&opts.asset, *ts, &row, &mut requests);
        if requests.len() >= batch {
            scorer.score(&mut requests, &mut outputs);
        }
        if opts.progress && n >= 10_000 && i >= next_progress {
            eprintln!("replay: {}% ({i}/{n} rows)", i * 100 / n);
            next_progress += n / 10;
        }
    }
    stage.flush(&mut requests);
    scorer.score(&mut requests, &mut outputs);

    // Per-row results: the state after the latest window ending at or
    // before the row's frame tick.
    let period = meta.sample_period_ms as i64 * 1_000_000;
    let mut scored: Vec<(i64, f32, f32, f64, bool)> = outputs
        .iter()
        .filter_map(|o| match o {
            Output::Score(r) => Some((r.ts, r.score, r.threshold, r.probability, r.anomalous)),
            Output::Alert { .. } | Output::Quality(_) | Output::Barrier(_) | Output::Frame(_) => {
                None
            }
        })
        .collect();
    scored.sort_by_key(|s| s.0);
    let default_threshold = scored.first().map(|s| s.2).unwrap_or(meta.threshold.value);
    let rows: Vec<RowResult> = log
        .timestamps
        .iter()
        .map(|&ts| {
            let tick = ts.div_euclid(period) * period;
            let k = scored.partition_point(|s| s.0 <= tick);
            match k.checked_sub(1).map(|i| scored[i]) {
                Some((_, score, threshold, p, anomalous)) => RowResult {
                    ts,
                    score: Some(score),
                    threshold,
                    probability: p.is_finite().then_some(p),
                    anomalous,
                },
                None => RowResult {
                    ts,
                    score: None,
                    threshold: default_threshold,
                    probability: None,
                    anomalous: false,
                },
            }
        })
        .collect();

    if let Some(path) = &opts.output {
        write_csv(path, &opts.asset, &rows)?;
    }
    if opts.influx {
        let cfg = opts.config.as_ref().ok_or(ReplayError::NoInfluxConfig)?;
        send_to_influx(cfg, outputs, metrics.clone())?;
    }
    let summary = ReplaySummary {
        rows: rows.len(),
        windows: metrics
            .windows_scored
            .load(std::sync::atomic::Ordering::Relaxed),
        alerts_raised: metrics
            .alerts_raised
            .load(std::sync::atomic::Ordering::Relaxed),
        anomalous_rows: rows.iter().filter(|r| r.anomalous).count(),
        seconds: start.elapsed().as_secs_f64(),
        dropped: metrics.total_dropped(),
    };
    Ok((summary, rows))
}

fn send_to_influx(
    cfg: &Config,
    outputs: Vec<Output>,
    metrics: Arc<Metrics>,
) -> Result<(), ReplayError> {
    let (_auth, auth_rx) = tokio::sync::watch::channel(cfg.influx_auth()?);
    let writer = InfluxWriter::new(&cfg.influx, auth_rx)?;
    let settings = SinkSettings::from_config(&cfg.influx);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ReplayError::Other(format!("cannot start the I/O runtime: {e}")))?;
    let n = outputs.len() as u64;
    rt.block_on(async {
        let (tx, rx) = tokio::sync::mpsc::channel(cfg.influx.queue_capacity);
        let stop = tokio_util::sync::CancellationToken::new();
        let sink = tokio::spawn(run_sink(
            writer,
            settings,
            rx,
            metrics.clone(),
            stop.clone(),
            crate::sinks::SinkStore::default(),
        ));
        // Nobody fixes credentials during a backfill: stop at the first
        // refusal instead of retrying forever, and report what was written.
        let refused = {
            let (metrics, stop) = (metrics.clone(), stop.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
                while metrics.sink_refusal().is_none() {
                    tick.tick().await;
                }
                stop.cancel();
            })
        };
        for o in outputs {
            if tx.send(o).await.is_err() {
                break;
            }
        }
        drop(tx);
        let _ = sink.await;
        refused.abort();
    });
    let written = metrics
        .points_written
        .load(std::sync::atomic::Ordering::Relaxed);
    if written < n {
        let why = metrics
            .sink_refusal()
            .map(|r| format!(": the database refuses writes ({r})"))
            .unwrap_or_default();
        return Err(ReplayError::Other(format!(
            "only {written} of {n} points reached the database{why}"
        )));
    }
    Ok(())
}
