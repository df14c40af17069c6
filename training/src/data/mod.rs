//! From logs to training and validation windows, through the library's own
//! loader, aligner, windowing and normaliser (the daemon runs the same code,
//! so training and serving compute features identically).
//!
//! Per input file: load -> select channels -> align (one aligner per file,
//! so no window spans two files) -> windows -> time-ordered split. Then the
//! per-channel z-score is fitted on the training rows only and applied to
//! every window.

use std::ops::Range;
use std::path::PathBuf;

use anomalyd::core::Normaliser;
use anomalyd::core::contract::NormaliserParams;
use anomalyd::core::log::{LoadError, LoadOptions, LogTable, load_log};
use anomalyd::core::synth::{self, PUMP_CHANNELS};
use anomalyd::core::{Aligner, AlignerConfig, Frame};
use anomalyd::core::{Window, windows_from_frames};
use serde::Serialize;
use sha2::{Digest, Sha256};

pub mod influx;
pub use influx::{InfluxAuth, InfluxSource};

/// Start of the synthetic pump log: 2026-01-01T00:00:00Z.
const SYNTHETIC_START_NS: i64 = 1_767_225_600 * 1_000_000_000;
/// Row spacing of the synthetic pump log (the simulator steps once a second).
const SYNTHETIC_PERIOD_NS: i64 = 1_000_000_000;

/// Why the data could not be turned into windows.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("no input: give --input FILE (or --synthetic-pump ROWS)")]
    NoInput,
    /// Boxed: `LoadError` is large and errors are rare.
    #[error(transparent)]
    Load(Box<LoadError>),
    #[error("{}: {source}", path.display())]
    Column {
        path: PathBuf,
        #[source]
        source: Box<LoadError>,
    },
    #[error(
        "{}: column {column:?} has no numeric value in the kept rows (left out as text or empty)",
        path.display()
    )]
    ColumnNotNumeric { path: PathBuf, column: String },
    #[error("{}: no channels to train on: every numeric column is a label ({})", path.display(), columns.join(", "))]
    NoChannels { path: PathBuf, columns: Vec<String> },
    #[error("--channels lists {0:?} twice")]
    DuplicateChannel(String),
    #[error(
        "{}: {rows} data rows{range}, but one window needs {needed} (--window {needed})",
        path.display()
    )]
    TooFewRows {
        path: PathBuf,
        rows: usize,
        needed: usize,
        range: String,
    },
    #[error(
        "cannot infer the sample period: no two rows with increasing timestamps; give --sample-period-ms"
    )]
    NoPeriod,
    #[error(
        "too few windows to train: {train} for training and {validation} for validation from {rows} rows \
         (window {window}, stride {stride}, validation fraction {fraction}); the time-ordered split drops the \
         window - 1 windows between the two parts, so each file needs about {needed} rows with these settings"
    )]
    TooFewWindows {
        train: usize,
        validation: usize,
        rows: usize,
        window: usize,
        stride: usize,
        fraction: f64,
        needed: usize,
    },
    #[error("--synthetic-pump needs at least 1 row")]
    EmptySynthetic,
    #[error("InfluxDB: {0}")]
    Influx(String),
}

impl From<LoadError> for DataError {
    fn from(e: LoadError) -> Self {
        DataError::Load(Box::new(e))
    }
}

/// Where rows come from.
#[derive(Debug, Clone, PartialEq)]
pub enum InputSource {
    /// A CSV or line-protocol log read by [`anomalyd::core::log::load_log`].
    File(PathBuf),
    /// `rows` seconds of the library's pump simulator, no fault
    /// ([`anomalyd::core::synth::generate`]), channels [`PUMP_CHANNELS`].
    SyntheticPump { rows: usize, seed: u64 },
    /// A measurement read from InfluxDB through InfluxQL ([`influx`]).
    Influx(InfluxSource),
}

impl InputSource {
    /// How the source is named in messages, metadata and the report.
    pub fn describe(&self) -> String {
        match self {
            InputSource::File(p) => p.display().to_string(),
            InputSource::SyntheticPump { rows, seed } => {
                format!("synthetic-pump(rows={rows},seed={seed})")
            }
            InputSource::Influx(src) => src.describe(),
        }
    }
}

/// What to read and how to cut it into windows.
#[derive(Debug, Clone, PartialEq)]
pub struct DataOptions {
    pub inputs: Vec<InputSource>,
    /// Data rows kept from each input (`A..B`, B exclusive).
    pub rows: Option<Range<usize>>,
    /// Channels in model order; `None` takes the first input's numeric
    /// columns minus label columns.
    pub channels: Option<Vec<String>>,
    pub timestamp_column: Option<String>,
    pub window: usize,
    pub stride: usize,
    /// Fraction of each file's windows (its last ones) kept for validation.
    pub validation_fraction: f64,
    /// Frame period; `None` takes the median spacing of the timestamps.
    pub sample_period_ms: Option<u64>,
    /// Windows with a larger fraction of imputed values in one channel are left out.
    pub max_imputed_fraction: f32,
}

/// A set of windows `[count, C, T]`, flat and channel-major per window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowSet {
    pub data: Vec<f32>,
    pub end_ts: Vec<i64>,
    /// Index of the input each window came from.
    pub source: Vec<usize>,
}

impl WindowSet {
    /// Number of windows.
    pub fn len(&self) -> usize {
        self.end_ts.len()
    }

    /// True when there is no window.
    pub fn is_empty(&self) -> bool {
        self.end_ts.is_empty()
    }

    fn push(&mut self, w: Window, source: usize) {
        self.data.extend_from_slice(&w.data);
        self.end_ts.push(w.end_ts);
        self.source.push(source);
    }
}

/// What happened to one input, for the log and the report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct InputSummary {
    pub source: String,
    /// Data rows kept (after `--rows`).
    pub rows: usize,
    /// 0-based data row of the first kept row.
    pub first_row: usize,
    pub skipped_columns: Vec<String>,
    /// Channels with NaN/inf/empty cells and how many were skipped (the
    /// aligner carries the channel's last value forward).
    pub non_finite: Vec<(String, u64)>,
    pub frames: u64,
    pub imputed_values: u64,
    pub late_readings: u64,
    pub warmup_frames: u64,
    pub gaps: u64,
    pub windows: usize,
    pub train_windows: usize,
    pub validation_windows: usize,
    /// Windows between the two parts, dropped so that they share no row.
    pub boundary_windows_dropped: usize,
    /// Rows the normaliser was fitted on.
    pub training_rows: usize,
}

/// The windows the trainer uses, normalised, with their provenance.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub channels: Vec<String>,
    pub window: usize,
    pub stride: usize,
    pub sample_period_ms: u64,
    pub normaliser: NormaliserParams,
    pub train: WindowSet,
    pub validation: WindowSet,
    /// Rows kept over all inputs.
    pub rows: usize,
    /// Rows the normaliser was fitted on (those under the training windows).
    pub training_rows: usize,
    /// SHA-256 (hex) of the training rows' values, see [`load_dataset`].
    pub fingerprint: String,
    pub inputs: Vec<InputSummary>,
    /// Things a user should know (constant channels, skipped cells, ...).
    pub warnings: Vec<String>,
}

/// Loads every input and builds the normalised train/validation windows.
///
/// The fingerprint is the SHA-256 of the selected channel values of the
/// training rows (every input in order, each row's values as little-endian
/// `f64`, NaN for a skipped cell), so two models trained on the same rows
/// share it whatever the file names.
///
/// # Errors
/// A missing or malformed file (named, with row and column where there is
/// one), an unknown or non-numeric channel, too few rows for one window or
/// for the split.
pub fn load_dataset(opts: &DataOptions) -> Result<Dataset, DataError> {
    if opts.inputs.is_empty() {
        return Err(DataError::NoInput);
    }
    let load_opts = LoadOptions {
        timestamp_column: opts.timestamp_column.clone(),
        rows: opts.rows.clone(),
    };
    let tables = opts
        .inputs
        .iter()
        .map(|input| load_input(input, &load_opts))
        .collect::<Result<Vec<_>, _>>()?;

    let channels = choose_channels(&tables[0], opts.channels.as_deref())?;
    let mut selections = Vec::with_capacity(tables.len());
    for table in &tables {
        selections.push(select(table, &channels)?);
        if table.len() < opts.window {
            return Err(DataError::TooFewRows {
                path: table.source.clone(),
                rows: table.len(),
                needed: opts.window,
                range: match &opts.rows {
                    Some(r) => format!(" (rows {}..{})", r.start, r.end),
                    None => String::new(),
                },
            });
        }
    }

    let period_ns = match opts.sample_period_ms {
        Some(ms) => i64::try_from(ms.max(1))
            .unwrap_or(i64::MAX / 1_000_000)
            .saturating_mul(1_000_000),
        None => median_spacing_ns(&tables).ok_or(DataError::NoPeriod)?,
    };
    let sample_period_ms = u64::try_from((period_ns + 500_000) / 1_000_000)
        .unwrap_or(1)
        .max(1);
    // The aligner runs on whole milliseconds, as the daemon will.
    let period_ns = i64::try_from(sample_period_ms).unwrap_or(1) * 1_000_000;

    let c = channels.len();
    let t = opts.window;
    let mut warnings = Vec::new();
    let mut summaries = Vec::with_capacity(tables.len());
    let mut raw_train = WindowSet::default();
    let mut raw_val = WindowSet::default();
    let mut fit_rows: Vec<Vec<f64>> = Vec::new();
    let mut hasher = Sha256::new();
    let mut total_rows = 0;

    for (index, (table, cols)) in tables.iter().zip(&selections).enumerate() {
        let mut summary = InputSummary {
            source: table.source.display().to_string(),
            rows: table.len(),
            first_row: table.first_row,
            skipped_columns: table.skipped_columns.clone(),
            ..InputSummary::default()
        };
        total_rows += table.len();
        let rows: Vec<Vec<f64>> = table
            .values
            .iter()
            .map(|row| cols.iter().map(|&i| row[i]).collect())
            .collect();
        let mut non_finite = vec![0u64; c];
        for row in &rows {
            for (n, v) in non_finite.iter_mut().zip(row) {
                *n += u64::from(!v.is_finite());
            }
        }
        summary.non_finite = channels
            .iter()
            .cloned()
            .zip(non_finite)
            .filter(|(_, n)| *n > 0)
            .collect();
        let skipped: u64 = summary.non_finite.iter().map(|(_, n)| n).sum();
        if skipped > 0 {
            let detail: Vec<String> = summary
                .non_finite
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(name, n)| format!("{name} {n}"))
                .collect();
            warnings.push(format!(
                "{}: skipped {skipped} empty/NaN/infinite cells ({}); the aligner carries the last value forward",
                summary.source,
                detail.join(", ")
            ));
        }

        let mut aligner = Aligner::new(c, AlignerConfig::for_period(period_ns));
        let mut frames: Vec<Frame> = Vec::new();
        for (ts, row) in table.timestamps.iter().zip(&rows) {
            aligner.push_row(*ts, row, &mut frames);
        }
        aligner.flush(&mut frames);
        let stats = aligner.stats();
        summary.frames = stats.frames;
        summary.imputed_values = stats.imputed_values;
        summary.late_readings = stats.late;
        summary.warmup_frames = stats.warmup_frames;
        summary.gaps = stats.gaps;

        let windows = windows_from_frames(&frames, c, t, opts.stride, opts.max_imputed_fraction);
        summary.windows = windows.len();
        if windows.is_empty() {
            warnings.push(format!(
                "{}: no usable window ({} frames after alignment, {} gaps; windows need {t} frames with at most {} imputed)",
                summary.source, stats.frames, stats.gaps, opts.max_imputed_fraction
            ));
            summaries.push(summary);
            continue;
        }

        // Time-ordered split: the last `validation_fraction` of this file's
        // windows validate. Training windows that overlap the first
        // validation window (with stride 1, the `window - 1` windows just
        // before it) are dropped, so that no row is in both parts and the
        // validation loss is an honest estimate of the error on unseen data.
        let n = windows.len();
        let n_val = ((n as f64 * opts.validation_fraction).ceil() as usize).clamp(1, n);
        let first_val = n - n_val;
        let val_start_ts = windows[first_val]
            .end_ts
            .saturating_sub(period_ns.saturating_mul(t as i64 - 1));
        let mut last_train_end = None;
        for (i, w) in windows.into_iter().enumerate() {
            if i >= first_val {
                summary.validation_windows += 1;
                raw_val.push(w, index);
            } else if w.end_ts < val_start_ts {
                summary.train_windows += 1;
                last_train_end = Some(w.end_ts);
                raw_train.push(w, index);
            } else {
                summary.boundary_windows_dropped += 1;
            }
        }

        // The normaliser sees the rows under the training windows only.
        if let Some(end) = last_train_end {
            for (ts, row) in table.timestamps.iter().zip(rows) {
                if *ts <= end {
                    for v in &row {
                        hasher.update(v.to_le_bytes());
                    }
                    fit_rows.push(row);
                    summary.training_rows += 1;
                }
            }
        }
        summaries.push(summary);
    }

    if raw_train.is_empty() || raw_val.is_empty() {
        let stride = opts.stride.max(1);
        // n windows need (n - 1) * stride + t rows; the split needs about
        // t - 1 dropped windows plus one on each side.
        let needed_windows = (t + 1) as f64 / (1.0 - opts.validation_fraction).max(1e-9);
        let needed = (needed_windows.ceil() as usize).saturating_sub(1) * stride + t;
        return Err(DataError::TooFewWindows {
            train: raw_train.len(),
            validation: raw_val.len(),
            rows: total_rows,
            window: t,
            stride: opts.stride,
            fraction: opts.validation_fraction,
            needed,
        });
    }

    let normaliser = Normaliser::fit(&channels, &fit_rows);
    for name in &normaliser.constant_channels {
        warnings.push(format!(
            "channel {name:?} is constant in the training rows; it is normalised to 0 (std stored as 1) and only its deviations from the training value will score"
        ));
    }
    let norm = Normaliser::new(&normaliser);
    for set in [&mut raw_train, &mut raw_val] {
        for w in set.data.chunks_exact_mut(c * t) {
            norm.apply_window(w, t);
        }
    }

    let training_rows = fit_rows.len();
    Ok(Dataset {
        channels,
        window: t,
        stride: opts.stride,
        sample_period_ms,
        normaliser,
        train: raw_train,
        validation: raw_val,
        rows: total_rows,
        training_rows,
        fingerprint: hex(&hasher.finalize()),
        inputs: summaries,
        warnings,
    })
}

fn load_input(input: &InputSource, opts: &LoadOptions) -> Result<LogTable, DataError> {
    match input {
        InputSource::File(path) => Ok(load_log(path, opts)?),
        InputSource::Influx(src) => {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_message(format!("reading {}", src.describe()));
            let started = std::time::Instant::now();
            let mut table = influx::read_influx(src, |rows| {
                bar.set_message(format!("{rows} rows from {}", src.describe()));
                bar.tick();
            })
            .map_err(DataError::Influx)?;
            let n = table.len();
            bar.finish_and_clear();
            eprintln!(
                "read {n} rows of {} ({:.0} rows/s)",
                src.describe(),
                n as f64 / started.elapsed().as_secs_f64().max(1e-9)
            );
            if let Some(r) = &opts.rows {
                let keep = r.start.min(n)..r.end.min(n);
                table.timestamps = table.timestamps[keep.clone()].to_vec();
                table.values = table.values[keep.clone()].to_vec();
                table.first_row = keep.start;
                if keep.is_empty() {
                    return Err(LoadError::NoRows {
                        path: table.source,
                        detail: format!("rows {}..{} of {n}", r.start, r.end),
                    }
                    .into());
                }
            }
            Ok(table)
        }
        InputSource::SyntheticPump { rows, seed } => {
            if *rows == 0 {
                return Err(DataError::EmptySynthetic);
            }
            let log = synth::generate(*rows, *seed, SYNTHETIC_START_NS, SYNTHETIC_PERIOD_NS, None);
            let range = opts.rows.clone().unwrap_or(0..*rows);
            let keep = range.start.min(*rows)..range.end.min(*rows);
            let source = PathBuf::from(input.describe());
            if keep.is_empty() {
                return Err(LoadError::NoRows {
                    path: source,
                    detail: format!("rows {}..{} of {rows}", range.start, range.end),
                }
                .into());
            }
            Ok(LogTable {
                source,
                timestamp_column: "timestamp".into(),
                columns: PUMP_CHANNELS.iter().map(|s| s.to_string()).collect(),
                timestamps: log.timestamps[keep.clone()].to_vec(),
                values: log.values[keep.clone()]
                    .iter()
                    .map(|r| r.to_vec())
                    .collect(),
                first_row: keep.start,
                skipped_columns: Vec::new(),
            })
        }
    }
}

fn choose_channels(first: &LogTable, wanted: Option<&[String]>) -> Result<Vec<String>, DataError> {
    match wanted {
        Some(list) => {
            let mut seen = std::collections::HashSet::new();
            for name in list {
                if !seen.insert(name.as_str()) {
                    return Err(DataError::DuplicateChannel(name.clone()));
                }
            }
            Ok(list.to_vec())
        }
        None => {
            let channels = first.default_channels();
            if channels.is_empty() {
                return Err(DataError::NoChannels {
                    path: first.source.clone(),
                    columns: first.columns.clone(),
                });
            }
            Ok(channels)
        }
    }
}

fn select(table: &LogTable, channels: &[String]) -> Result<Vec<usize>, DataError> {
    if let Some(column) = channels
        .iter()
        .find(|c| table.column_index(c).is_none() && table.skipped_columns.contains(c))
    {
        return Err(DataError::ColumnNotNumeric {
            path: table.source.clone(),
            column: column.clone(),
        });
    }
    table.select(channels).map_err(|source| DataError::Column {
        path: table.source.clone(),
        source: Box::new(source),
    })
}

/// Median of the positive spacings between consecutive timestamps.
fn median_spacing_ns(tables: &[LogTable]) -> Option<i64> {
    let mut d: Vec<i64> = tables
        .iter()
        .flat_map(|t| t.timestamps.windows(2).map(|w| w[1].saturating_sub(w[0])))
        .filter(|d| *d > 0)
        .collect();
    if d.is_empty() {
        return None;
    }
    let mid = d.len() / 2;
    let (_, m, _) = d.select_nth_unstable(mid);
    Some(*m)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests;
