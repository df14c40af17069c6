//! `replay`'s CSV output: one row per input row,
//! `timestamp,asset,score,threshold,probability,anomaly`, written to a
//! temporary file and renamed so a reader never sees half a file.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct CsvError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// One output row per input row.
#[derive(Debug, Clone, PartialEq)]
pub struct RowResult {
    pub ts: i64,
    pub score: Option<f32>,
    pub threshold: f32,
    pub probability: Option<f64>,
    pub anomalous: bool,
}

/// Writes `timestamp,asset,score,threshold,probability,anomaly`, atomically.
///
/// # Errors
/// [`CsvError`] when the temporary file cannot be created, written or
/// renamed over `path`.
pub fn write_csv(path: &Path, asset: &str, rows: &[RowResult]) -> Result<(), CsvError> {
    let werr = |source| CsvError {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("csv.tmp");
    let file = std::fs::File::create(&tmp).map_err(werr)?;
    let mut w = std::io::BufWriter::new(file);
    let asset_field = csv_field(asset);
    writeln!(w, "timestamp,asset,score,threshold,probability,anomaly").map_err(werr)?;
    for r in rows {
        write!(
            w,
            "{},{},",
            crate::core::timestamp::format_rfc3339(r.ts),
            asset_field
        )
        .map_err(werr)?;
        if let Some(s) = r.score {
            write!(w, "{s}").map_err(werr)?;
        }
        write!(w, ",{},", r.threshold).map_err(werr)?;
        if let Some(p) = r.probability {
            write!(w, "{p:.6}").map_err(werr)?;
        }
        writeln!(w, ",{}", u8::from(r.anomalous)).map_err(werr)?;
    }
    w.flush().map_err(werr)?;
    drop(w);
    std::fs::rename(&tmp, path).map_err(werr)
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
