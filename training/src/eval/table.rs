//! The scorer's text output: the per-file table with its total, and one
//! summary line per group of files.

use std::fmt::Write as _;
use std::path::Path;

use super::{Confusion, EvalError};

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

/// `GROUP/NAME` of a log path (`DIR/GROUP/NAME.csv`): its folder's name and
/// its stem.
///
/// # Errors
/// [`EvalError::LogName`] when the path has no such parts.
pub fn log_name(log: &Path) -> Result<(String, String), EvalError> {
    let stem = log.file_stem().and_then(|s| s.to_str());
    let group = log
        .parent()
        .and_then(Path::file_name)
        .and_then(|s| s.to_str());
    match (group, stem) {
        (Some(g), Some(s)) => Ok((g.to_string(), s.to_string())),
        _ => Err(EvalError::LogName {
            path: log.to_path_buf(),
        }),
    }
}

/// `WHAT: F1 .. FAR .. % MAR .. % (N rows)`, the line under the table for a
/// group of files or for all of them.
pub fn summary_line(what: &str, c: &Confusion) -> String {
    let pct = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{:.2} %", v * 100.0));
    format!(
        "{what}: F1 {} FAR {} MAR {} ({} rows)",
        c.f1().map_or_else(|| "-".into(), |v| format!("{v:.3}")),
        pct(c.far()),
        pct(c.mar()),
        c.rows()
    )
}
