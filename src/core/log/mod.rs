//! Loading sensor logs into a [`LogTable`]: CSV exported from a historian
//! (`,` `;` or tab delimited, one timestamp column, one column per channel;
//! pandas-style with an unnamed index; InfluxDB annotated CSV) and InfluxDB
//! line protocol. The trainer and `replay` both read logs here,
//! so both see the same rows.
//!
//! Parsing works on text and has no I/O; only [`load_log`] touches the file
//! system. Every error names the file and, where there is one, the line and
//! the column.

mod annotated;
mod csv;
mod line_protocol;

use std::ops::Range;
use std::path::{Path, PathBuf};

pub use self::annotated::annotated_to_wide;
pub use self::csv::{PANDAS_INDEX, parse_csv};
pub use self::line_protocol::{LINE_PROTOCOL_TIME, looks_like_line_protocol, parse_line_protocol};

/// Column names that hold labels rather than sensor values (compared
/// case-insensitively). They are loaded like any numeric column but left out
/// of [`LogTable::default_channels`].
pub const LABEL_COLUMNS: &[&str] = &["anomaly", "changepoint", "label"];

/// True for a label-like column name (see [`LABEL_COLUMNS`]).
pub fn is_label_column(name: &str) -> bool {
    LABEL_COLUMNS.iter().any(|l| l.eq_ignore_ascii_case(name))
}

/// What to load from a log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// CSV: name of the timestamp column; `None` takes the first column.
    /// Ignored for line protocol, whose time is part of each line.
    pub timestamp_column: Option<String>,
    /// Data rows to keep, `start` inclusive, `end` exclusive, counted from 0
    /// at the first row after the CSV header (for line protocol: the merged,
    /// time-sorted rows). `None` keeps all.
    pub rows: Option<Range<usize>>,
}

/// A loaded log: one timestamp and one value per numeric column per row.
#[derive(Debug, Clone, PartialEq)]
pub struct LogTable {
    /// The file it came from (for messages).
    pub source: PathBuf,
    /// Name of the timestamp column (`time` for line protocol).
    pub timestamp_column: String,
    /// Every numeric column except the timestamp, in file order; label-like
    /// columns included.
    pub columns: Vec<String>,
    /// One per kept row, nanoseconds since the epoch, in file order (not
    /// sorted: the aligner deals with late data).
    pub timestamps: Vec<i64>,
    /// Per kept row, `columns.len()` values; NaN for an empty cell.
    pub values: Vec<Vec<f64>>,
    /// Data-row index of `values[0]` (0 = first row after the header).
    pub first_row: usize,
    /// Columns left out: text columns (e.g. a status column), and columns
    /// with no value at all in the kept rows.
    pub skipped_columns: Vec<String>,
}

/// Why a log could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: the file is empty", path.display())]
    Empty { path: PathBuf },
    #[error("{}:{line}: no header row: {reason}", path.display())]
    NoHeader {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{}:{line}: column {column:?} appears twice in the header", path.display())]
    DuplicateColumn {
        path: PathBuf,
        line: usize,
        column: String,
    },
    #[error("{}: timestamp column {name:?} not found; the columns are: {}", path.display(), available.join(", "))]
    NoTimestampColumn {
        path: PathBuf,
        name: String,
        available: Vec<String>,
    },
    #[error("{}:{line}: data row {row}, column {column:?}: {value:?} is not a number", path.display())]
    BadCell {
        path: PathBuf,
        /// 1-based line in the file.
        line: usize,
        /// 0-based data row, as counted by [`LoadOptions::rows`].
        row: usize,
        column: String,
        value: String,
    },
    #[error("{}:{line}: column {column:?}: {value:?} is not a timestamp ({reason})", path.display())]
    BadTimestamp {
        path: PathBuf,
        line: usize,
        column: String,
        value: String,
        reason: String,
    },
    #[error("unknown column {name:?}; the available columns are: {}", available.join(", "))]
    UnknownColumn {
        name: String,
        available: Vec<String>,
    },
    #[error("{}: no data rows to load: {detail}", path.display())]
    NoRows { path: PathBuf, detail: String },
    #[error("{}: no numeric column besides the timestamp{}", path.display(), if skipped.is_empty() { String::new() } else { format!(" (left out as not numeric: {})", skipped.join(", ")) })]
    NoColumns { path: PathBuf, skipped: Vec<String> },
    #[error("{}:{line}: {message}", path.display())]
    BadLine {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

impl LogTable {
    /// Index of a column in [`LogTable::columns`] (exact name).
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// The columns a model would use by default: every numeric column except
    /// the label-like ones ([`LABEL_COLUMNS`]).
    pub fn default_channels(&self) -> Vec<String> {
        self.columns
            .iter()
            .filter(|c| !is_label_column(c))
            .cloned()
            .collect()
    }

    /// Indices of the named columns, in the order given.
    ///
    /// # Errors
    /// [`LoadError::UnknownColumn`] for the first name that is not a numeric
    /// column of this table, listing the ones that are.
    pub fn select(&self, channels: &[String]) -> Result<Vec<usize>, LoadError> {
        channels
            .iter()
            .map(|name| {
                self.column_index(name)
                    .ok_or_else(|| LoadError::UnknownColumn {
                        name: name.clone(),
                        available: self.columns.clone(),
                    })
            })
            .collect()
    }

    /// Number of kept rows.
    pub fn len(&self) -> usize {
        self.timestamps.len()
    }

    /// True when no row was kept (never the case for a loaded table).
    pub fn is_empty(&self) -> bool {
        self.timestamps.is_empty()
    }
}

/// Loads a CSV or line-protocol log. The format is taken from the extension
/// (`.lp`, `.line`, `.influx` are line protocol; `.csv`, `.tsv` CSV), else
/// from the shape of the first line that is not blank or a `#` comment.
/// Bytes that are not UTF-8 (e.g. a Latin-1 `°` in a header) are replaced,
/// not refused.
///
/// # Errors
/// [`LoadError::Io`] when the file cannot be read, else whatever
/// [`parse_csv`] or [`parse_line_protocol`] report.
pub fn load_log(path: &Path, opts: &LoadOptions) -> Result<LogTable, LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let line_protocol = match ext.as_deref() {
        Some("lp" | "line" | "influx") => true,
        Some("csv" | "tsv") => false,
        _ => looks_like_line_protocol(&text),
    };
    if line_protocol {
        parse_line_protocol(&text, path, opts)
    } else {
        parse_csv(&text, path, opts)
    }
}

#[cfg(test)]
mod tests;
