//! Detection quality against labelled logs (DESIGN.md §11, the SKAB
//! benchmark): per-row labels and per-row predictions -> confusion matrix
//! -> F1, false-alarm rate (FAR) and missed-alarm rate (MAR), with SKAB's
//! own definitions, and the readers that pair a labelled log with the
//! output of `anomalyd replay`.
//!
//! Rows are matched by position (the replay writes one row per input row)
//! and the pairing is checked by timestamp, so a replay of another file, or
//! of the same file cut differently, is refused rather than scored.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anomalyd::core::log::{LoadError, LoadOptions, load_log};
use anomalyd::core::timestamp::parse_timestamp;

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

/// One file's result.
#[derive(Debug, Clone, PartialEq)]
pub struct FileResult {
    /// e.g. `valve1/0`.
    pub name: String,
    pub confusion: Confusion,
}

/// The per-file table and the totals (confusion summed over files), as
/// plain text: `file rows TP FP FN TN F1 FAR MAR`, rates in percent.
pub fn format_table(results: &[FileResult]) -> String {
    let width = results
        .iter()
        .map(|r| r.name.len())
        .chain([5])
        .max()
        .unwrap_or(5);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<width$} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>7} {:>7}",
        "file", "rows", "TP", "FP", "FN", "TN", "F1", "FAR %", "MAR %"
    );
    let row = |s: &mut String, name: &str, c: &Confusion| {
        let _ = writeln!(
            s,
            "{:<width$} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>7} {:>7}",
            name,
            c.rows(),
            c.tp,
            c.fp,
            c.fn_,
            c.tn,
            fmt_opt(c.f1(), 1.0, 3),
            fmt_opt(c.far(), 100.0, 2),
            fmt_opt(c.mar(), 100.0, 2)
        );
    };
    for r in results {
        row(&mut s, &r.name, &r.confusion);
    }
    let total: Confusion = results.iter().map(|r| r.confusion).sum();
    let _ = writeln!(s, "{}", "-".repeat(width + 57));
    row(&mut s, "total", &total);
    s
}

fn fmt_opt(v: Option<f64>, scale: f64, decimals: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{:.decimals$}", v * scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(v: &[u8]) -> Vec<bool> {
        v.iter().map(|x| *x != 0).collect()
    }

    #[test]
    fn confusion_and_metrics_match_hand_computed_values() {
        // y: 1 1 1 1 0 0 0 0 0 0
        // p: 1 1 1 0 1 1 0 0 0 0  -> TP 3, FN 1, FP 2, TN 4
        let c = Confusion::count(
            &b(&[1, 1, 1, 1, 0, 0, 0, 0, 0, 0]),
            &b(&[1, 1, 1, 0, 1, 1, 0, 0, 0, 0]),
        )
        .unwrap();
        assert_eq!(
            c,
            Confusion {
                tp: 3,
                fp: 2,
                fn_: 1,
                tn: 4
            }
        );
        // F1 = 3 / (3 + 3/2) = 2/3; FAR = 2/6; MAR = 1/4.
        assert!((c.f1().unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert!((c.far().unwrap() - 1.0 / 3.0).abs() < 1e-12);
        assert!((c.mar().unwrap() - 0.25).abs() < 1e-12);
        assert_eq!(c.rows(), 10);
    }

    #[test]
    fn totals_sum_confusions_not_rates() {
        // File A: perfect on 4 anomalous rows. File B: 4 false alarms in 4 normal rows.
        let a = Confusion::count(&b(&[1, 1, 1, 1]), &b(&[1, 1, 1, 1])).unwrap();
        let bb = Confusion::count(&b(&[0, 0, 0, 0]), &b(&[1, 1, 1, 1])).unwrap();
        let t = a + bb;
        assert_eq!(
            t,
            Confusion {
                tp: 4,
                fp: 4,
                fn_: 0,
                tn: 0
            }
        );
        // F1 = 4 / (4 + 2) = 2/3 (the mean of the per-file F1s, 1 and
        // undefined, would say otherwise); FAR = 1; MAR = 0.
        assert!((t.f1().unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(t.far(), Some(1.0));
        assert_eq!(t.mar(), Some(0.0));
        assert_eq!([a, bb].into_iter().sum::<Confusion>(), t);
    }

    #[test]
    fn undefined_rates_are_none() {
        let c = Confusion::count(&b(&[0, 0]), &b(&[0, 0])).unwrap();
        assert_eq!((c.f1(), c.far(), c.mar()), (None, Some(0.0), None));
        assert!(Confusion::count(&b(&[0]), &b(&[0, 1])).is_err());
    }

    const REPLAY: &str = "timestamp,asset,score,threshold,probability,anomaly\n\
        2020-03-09T10:14:33Z,replay,,1.5,,0\n\
        2020-03-09T10:14:34Z,\"a,b\",0.5,1.5,0.1,0\n\
        2020-03-09T10:14:36Z,replay,2.5,1.5,0.999,1\n\
        2020-03-09T10:14:37Z,replay,2.5,1.5,0.999,1\n";

    fn labels(ts: &[&str], y: &[u8]) -> LabelledLog {
        LabelledLog {
            path: PathBuf::from("x.csv"),
            timestamps: ts.iter().map(|t| parse_timestamp(t).unwrap()).collect(),
            anomalous: b(y),
        }
    }

    const TS: [&str; 4] = [
        "2020-03-09 10:14:33",
        "2020-03-09 10:14:34",
        "2020-03-09 10:14:36",
        "2020-03-09 10:14:37",
    ];

    #[test]
    fn replay_output_parses_and_scores_from_the_first_row() {
        let r = parse_replay(REPLAY, Path::new("r.csv")).unwrap();
        assert_eq!(r.anomalous, b(&[0, 0, 1, 1]));
        assert_eq!(r.score, vec![None, Some(0.5), Some(2.5), Some(2.5)]);
        assert_eq!(r.threshold, vec![1.5; 4]);
        let l = labels(&TS, &[1, 0, 0, 1]);
        // Rows 1..: y 0 0 1, p 0 1 1 -> TP 1, FP 1, TN 1.
        let c = score_rows(&l, &r, 1).unwrap();
        assert_eq!(
            c,
            Confusion {
                tp: 1,
                fp: 1,
                fn_: 0,
                tn: 1
            }
        );
        assert_eq!(score_rows(&l, &r, 9).unwrap().rows(), 0);
    }

    #[test]
    fn mismatched_rows_are_refused_with_the_row() {
        let r = parse_replay(REPLAY, Path::new("r.csv")).unwrap();
        let mut ts = TS;
        ts[2] = "2020-03-09 10:14:35";
        let err = score_rows(&labels(&ts, &[0; 4]), &r, 0).unwrap_err();
        assert!(matches!(err, EvalError::Timestamp { row: 2, .. }), "{err}");
        let err = score_rows(&labels(&TS[..3], &[0; 3]), &r, 0).unwrap_err();
        assert!(err.to_string().contains("has 4 rows"), "{err}");
    }

    #[test]
    fn bad_replay_files_name_the_line() {
        let err = parse_replay("a,b\n", Path::new("r.csv")).unwrap_err();
        assert!(err.to_string().contains("r.csv:1"), "{err}");
        let text = format!("{}2020-03-09T10:14:38Z,replay,x,1.5,,0\n", REPLAY);
        let err = parse_replay(&text, Path::new("r.csv")).unwrap_err();
        assert!(err.to_string().contains("r.csv:6: score"), "{err}");
        let text = format!("{}2020-03-09T10:14:38Z,replay,1,1.5,,2\n", REPLAY);
        assert!(parse_replay(&text, Path::new("r.csv")).is_err());
    }

    #[test]
    fn table_lists_files_and_summed_totals() {
        let results = vec![
            FileResult {
                name: "valve1/0".into(),
                confusion: Confusion {
                    tp: 3,
                    fp: 1,
                    fn_: 1,
                    tn: 5,
                },
            },
            FileResult {
                name: "other/1".into(),
                confusion: Confusion {
                    tp: 1,
                    fp: 0,
                    fn_: 1,
                    tn: 2,
                },
            },
        ];
        let t = format_table(&results);
        let last = t.lines().last().unwrap();
        // TP 4, FP 1, FN 2, TN 7: F1 4/5.5, FAR 1/8, MAR 2/6.
        assert!(last.starts_with("total"), "{t}");
        assert!(
            last.contains(" 14 ") && last.contains("0.727") && last.contains("12.50"),
            "{t}"
        );
        assert!(last.contains("33.33"), "{t}");
        assert_eq!(t.lines().count(), 5);
    }
}
