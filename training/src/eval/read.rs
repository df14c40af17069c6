//! The readers that pair a labelled log with the output of `anomalyd
//! replay`: the labels through the daemon's own log loader, the replay's
//! CSV by its fixed header.

use std::path::{Path, PathBuf};

use anomalyd::core::log::{LoadOptions, load_log};
use anomalyd::core::timestamp::parse_timestamp;

use super::{EvalError, REPLAY_HEADER};

/// A labelled log: one timestamp and one label per data row.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledLog {
    pub path: PathBuf,
    /// Event time, ns since the Unix epoch (parsed as `anomalyd replay` does).
    pub timestamps: Vec<i64>,
    pub anomalous: Vec<bool>,
}

/// Reads `column` (non-zero = anomalous) and the timestamps of a log with
/// the library's loader, the one `anomalyd replay` reads it with.
///
/// # Errors
/// The file cannot be loaded, or has no such numeric column.
pub fn read_labels(path: &Path, column: &str) -> Result<LabelledLog, EvalError> {
    let table = load_log(path, &LoadOptions::default()).map_err(|e| EvalError::Labels {
        path: path.to_path_buf(),
        source: Box::new(e),
    })?;
    let index = table
        .column_index(column)
        .ok_or_else(|| EvalError::NoLabelColumn {
            path: path.to_path_buf(),
            column: column.to_string(),
            available: table.columns.clone(),
        })?;
    Ok(LabelledLog {
        path: path.to_path_buf(),
        anomalous: table
            .values
            .iter()
            .map(|row| row[index].is_finite() && row[index] != 0.0)
            .collect(),
        timestamps: table.timestamps,
    })
}

/// The rows of an `anomalyd replay --output` file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplayOutput {
    pub path: PathBuf,
    pub timestamps: Vec<i64>,
    /// Empty before the first scored window.
    pub score: Vec<Option<f32>>,
    pub threshold: Vec<f32>,
    /// The detector's state after the window that ends at the row.
    pub anomalous: Vec<bool>,
}

/// Reads a replay output (`timestamp,asset,score,threshold,probability,anomaly`).
///
/// # Errors
/// Unreadable file, another header, or a row that does not parse.
pub fn read_replay(path: &Path) -> Result<ReplayOutput, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_replay(&text, path)
}

/// [`read_replay`] on text already in memory (`path` names it in errors).
///
/// # Errors
/// As [`read_replay`].
pub fn parse_replay(text: &str, path: &Path) -> Result<ReplayOutput, EvalError> {
    let bad = |line: usize, message: String| EvalError::Replay {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut lines = text.lines().enumerate();
    let header: Vec<String> = lines.next().map(|(_, h)| split_csv(h)).unwrap_or_default();
    if header != REPLAY_HEADER {
        return Err(bad(
            1,
            format!(
                "header {:?} is not {:?} (an `anomalyd replay --output` file)",
                header.join(","),
                REPLAY_HEADER.join(",")
            ),
        ));
    }
    let mut out = ReplayOutput {
        path: path.to_path_buf(),
        ..ReplayOutput::default()
    };
    for (i, line) in lines {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let f = split_csv(line);
        if f.len() != REPLAY_HEADER.len() {
            return Err(bad(
                n,
                format!("{} fields, expected {}", f.len(), REPLAY_HEADER.len()),
            ));
        }
        let ts =
            parse_timestamp(&f[0]).map_err(|e| bad(n, format!("timestamp {:?}: {e}", f[0])))?;
        let score = if f[2].is_empty() {
            None
        } else {
            Some(
                f[2].parse::<f32>()
                    .map_err(|_| bad(n, format!("score {:?} is not a number", f[2])))?,
            )
        };
        let threshold = f[3]
            .parse::<f32>()
            .map_err(|_| bad(n, format!("threshold {:?} is not a number", f[3])))?;
        let anomalous = match f[5].as_str() {
            "1" => true,
            "0" => false,
            other => return Err(bad(n, format!("anomaly {other:?} is not 0 or 1"))),
        };
        out.timestamps.push(ts);
        out.score.push(score);
        out.threshold.push(threshold);
        out.anomalous.push(anomalous);
    }
    Ok(out)
}

/// Splits one CSV line, honouring double quotes (`""` inside quotes is `"`).
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(ch) = chars.next() {
        match (ch, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    fields.push(field);
    fields
}
