//! Detection quality against labelled logs (docs/architecture.md §11, the SKAB
//! benchmark): per-row labels and per-row predictions -> confusion matrix
//! -> F1, false-alarm rate (FAR) and missed-alarm rate (MAR), with SKAB's
//! own definitions, and the readers that pair a labelled log with the
//! output of `anomalyd replay`; [`tep`] holds the Tennessee Eastman
//! protocol's figures (per-fault detection rate, FAR).
//!
//! Rows are matched by position (the replay writes one row per input row)
//! and the pairing is checked by timestamp, so a replay of another file, or
//! of the same file cut differently, is refused rather than scored.

mod read;
mod table;
pub mod tep;

use std::path::PathBuf;

use anomalyd::core::log::LoadError;

pub use read::{LabelledLog, ReplayOutput, parse_replay, read_labels, read_replay};
pub use table::{FileResult, format_table, log_name, summary_line};

/// Name of the label column in SKAB's files (1 = anomalous row).
pub const SKAB_LABEL_COLUMN: &str = "anomaly";

/// Header of `anomalyd replay --output`.
pub const REPLAY_HEADER: [&str; 6] = [
    "timestamp",
    "asset",
    "score",
    "threshold",
    "probability",
    "anomaly",
];

/// Why a file could not be scored.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("cannot read labels from {}", path.display())]
    Labels {
        path: PathBuf,
        #[source]
        source: Box<LoadError>,
    },
    #[error("{}: no label column {column:?} (columns: {})", path.display(), available.join(", "))]
    NoLabelColumn {
        path: PathBuf,
        column: String,
        available: Vec<String>,
    },
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", path.display())]
    Replay {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{} has {replay} rows, the labelled log {} has {labels}", replay_path.display(), labels_path.display())]
    RowCount {
        replay_path: PathBuf,
        labels_path: PathBuf,
        replay: usize,
        labels: usize,
    },
    #[error(
        "row {row} (0-based, after the header): the replay output says {replay}, the labelled log {labels}; \
         is {} the replay of {}?",
        replay_path.display(),
        labels_path.display()
    )]
    Timestamp {
        replay_path: PathBuf,
        labels_path: PathBuf,
        row: usize,
        replay: String,
        labels: String,
    },
    #[error("{labels} labels but {predictions} predictions")]
    Length { labels: usize, predictions: usize },
    #[error("{}: expected GROUP/NAME.csv", path.display())]
    LogName { path: PathBuf },
}

/// Binary-classification counts over rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Confusion {
    /// Anomalous rows flagged.
    pub tp: u64,
    /// Normal rows flagged.
    pub fp: u64,
    /// Anomalous rows not flagged.
    pub fn_: u64,
    /// Normal rows not flagged.
    pub tn: u64,
}

impl Confusion {
    /// Counts `predictions` against `labels`, row by row.
    ///
    /// # Errors
    /// [`EvalError::Length`] when the two differ in length.
    pub fn count(labels: &[bool], predictions: &[bool]) -> Result<Self, EvalError> {
        if labels.len() != predictions.len() {
            return Err(EvalError::Length {
                labels: labels.len(),
                predictions: predictions.len(),
            });
        }
        let mut c = Confusion::default();
        for (&y, &p) in labels.iter().zip(predictions) {
            match (y, p) {
                (true, true) => c.tp += 1,
                (false, true) => c.fp += 1,
                (true, false) => c.fn_ += 1,
                (false, false) => c.tn += 1,
            }
        }
        Ok(c)
    }

    /// Rows counted.
    pub fn rows(&self) -> u64 {
        self.tp + self.fp + self.fn_ + self.tn
    }

    /// SKAB's F1: `TP / (TP + (FP + FN) / 2)`; `None` without anomalous or
    /// flagged rows.
    pub fn f1(&self) -> Option<f64> {
        let d = self.tp as f64 + (self.fp + self.fn_) as f64 / 2.0;
        (d > 0.0).then(|| self.tp as f64 / d)
    }

    /// False-alarm rate `FP / (FP + TN)`; `None` without normal rows.
    pub fn far(&self) -> Option<f64> {
        let d = self.fp + self.tn;
        (d > 0).then(|| self.fp as f64 / d as f64)
    }

    /// Missed-alarm rate `FN / (FN + TP)`; `None` without anomalous rows.
    pub fn mar(&self) -> Option<f64> {
        let d = self.fn_ + self.tp;
        (d > 0).then(|| self.fn_ as f64 / d as f64)
    }
}

impl std::ops::Add for Confusion {
    type Output = Confusion;
    fn add(self, o: Confusion) -> Confusion {
        Confusion {
            tp: self.tp + o.tp,
            fp: self.fp + o.fp,
            fn_: self.fn_ + o.fn_,
            tn: self.tn + o.tn,
        }
    }
}

impl std::iter::Sum for Confusion {
    fn sum<I: Iterator<Item = Confusion>>(iter: I) -> Confusion {
        iter.fold(Confusion::default(), |a, b| a + b)
    }
}

/// Checks that `replay` is the row-by-row output for `labels` (same row
/// count, same timestamps) and counts rows `first_row..` (0-based data
/// rows).
///
/// # Errors
/// [`EvalError::RowCount`] or [`EvalError::Timestamp`] naming the first
/// row that differs.
pub fn score_rows(
    labels: &LabelledLog,
    replay: &ReplayOutput,
    first_row: usize,
) -> Result<Confusion, EvalError> {
    if labels.timestamps.len() != replay.timestamps.len() {
        return Err(EvalError::RowCount {
            replay_path: replay.path.clone(),
            labels_path: labels.path.clone(),
            replay: replay.timestamps.len(),
            labels: labels.timestamps.len(),
        });
    }
    if let Some(row) = labels
        .timestamps
        .iter()
        .zip(&replay.timestamps)
        .position(|(a, b)| a != b)
    {
        return Err(EvalError::Timestamp {
            replay_path: replay.path.clone(),
            labels_path: labels.path.clone(),
            row,
            replay: anomalyd::core::timestamp::format_rfc3339(replay.timestamps[row]),
            labels: anomalyd::core::timestamp::format_rfc3339(labels.timestamps[row]),
        });
    }
    let from = first_row.min(labels.anomalous.len());
    Confusion::count(&labels.anomalous[from..], &replay.anomalous[from..])
}

#[cfg(test)]
mod tests;
