//! InfluxDB annotated CSV (what `influx query --raw`, the InfluxDB 2 UI and
//! the `/api/v2/query` API export): `#datatype`, `#group` and `#default`
//! annotation rows, an empty first column, one header per table, tables
//! separated by blank lines. It is turned into the plain wide CSV the
//! loader reads (`time` then one column per channel, one row per
//! timestamp): Flux's long shape (`_time`, `_field`, `_value`) is pivoted
//! so each field becomes a channel; an already pivoted table keeps its
//! numeric columns. Flux's bookkeeping columns (`result`, `table`,
//! `_start`, `_stop`, `_measurement`) and string columns (tags) are left
//! out.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

use super::LoadError;
use crate::core::timestamp::parse_timestamp;

/// Columns Flux adds that are never channels.
const BOOKKEEPING: &[&str] = &["", "result", "table", "_start", "_stop", "_measurement"];

/// The wide CSV for an annotated-CSV `text`, or `None` when `text` is
/// not annotated CSV.
///
/// # Errors
/// A table without `_time`, or a `_time` that is not a timestamp.
pub fn annotated_to_wide(text: &str, source: &Path) -> Result<Option<String>, LoadError> {
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let annotated = ["#datatype", "#group", "#default"]
        .iter()
        .any(|a| first.starts_with(a))
        || first.starts_with(",result,table,");
    if !annotated {
        return Ok(None);
    }
    let bad = |line: usize, message: String| LoadError::BadLine {
        path: source.to_path_buf(),
        line,
        message,
    };
    let mut channels: Vec<String> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    // ns -> (time text, values by channel index)
    let mut rows: BTreeMap<i64, (String, HashMap<usize, String>)> = BTreeMap::new();
    let mut datatypes: Vec<String> = Vec::new();
    let mut header: Option<Vec<String>> = None;
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            header = None;
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            header = None;
            if rest.starts_with("datatype") {
                datatypes = split(line).into_iter().skip(1).collect();
            }
            continue;
        }
        let cells = split(line);
        let Some(names) = &header else {
            header = Some(cells.iter().map(|c| c.trim().to_string()).collect());
            continue;
        };
        if cells.len() != names.len() {
            return Err(bad(
                line_no,
                format!(
                    "{} cells but the table's header has {}",
                    cells.len(),
                    names.len()
                ),
            ));
        }
        let col = |name: &str| names.iter().position(|n| n == name);
        let t = col("_time").ok_or_else(|| {
            bad(
                line_no,
                "annotated CSV table without a _time column".to_string(),
            )
        })?;
        let time_text = cells[t].trim().to_string();
        let ns = parse_timestamp(&time_text)
            .map_err(|e| bad(line_no, format!("_time {time_text:?}: {}", e.reason)))?;
        let mut put = |name: &str, value: &str| {
            let k = *index.entry(name.to_string()).or_insert_with(|| {
                channels.push(name.to_string());
                channels.len() - 1
            });
            rows.entry(ns)
                .or_insert_with(|| (time_text.clone(), HashMap::new()))
                .1
                .insert(k, value.trim().to_string());
        };
        match (col("_field"), col("_value")) {
            (Some(f), Some(v)) => put(cells[f].trim(), &cells[v]),
            _ => {
                for (j, name) in names.iter().enumerate() {
                    let string = datatypes.get(j).is_some_and(|d| d == "string");
                    if j != t
                        && !string
                        && !BOOKKEEPING.contains(&name.as_str())
                        && !name.starts_with('_')
                    {
                        put(name, &cells[j]);
                    }
                }
            }
        }
    }
    let mut out = String::from("time");
    for c in &channels {
        out.push(',');
        push_cell(&mut out, c);
    }
    out.push('\n');
    for (ns, (_, values)) in &rows {
        let _ = write!(out, "{ns}");
        for k in 0..channels.len() {
            out.push(',');
            if let Some(v) = values.get(&k) {
                push_cell(&mut out, v);
            }
        }
        out.push('\n');
    }
    Ok(Some(out))
}

/// Splits one CSV line at commas outside `"` quotes, unquoting cells.
fn split(line: &str) -> Vec<String> {
    let mut cells = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                if let Some(s) = cells.last_mut() {
                    s.push('"');
                }
            }
            '"' => quoted = !quoted,
            ',' if !quoted => cells.push(String::new()),
            c => {
                if let Some(s) = cells.last_mut() {
                    s.push(c);
                }
            }
        }
    }
    cells
}

fn push_cell(out: &mut String, cell: &str) {
    if cell.contains([',', '"', '\n']) {
        out.push('"');
        out.push_str(&cell.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(cell);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::log::{LoadOptions, parse_csv};

    const LONG: &str = "#group,false,false,true,true,false,false,true,true,true
#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,double,string,string,string
#default,_result,,,,,,,,
,result,table,_start,_stop,_time,_value,_field,_measurement,asset
,,0,2026-01-01T00:00:00Z,2026-01-02T00:00:00Z,2026-01-01T00:00:00Z,1.5,Current,frames,pump-7
,,0,2026-01-01T00:00:00Z,2026-01-02T00:00:00Z,2026-01-01T00:00:01Z,1.6,Current,frames,pump-7

#group,false,false,true,true,false,false,true,true,true
#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,double,string,string,string
#default,_result,,,,,,,,
,result,table,_start,_stop,_time,_value,_field,_measurement,asset
,,1,2026-01-01T00:00:00Z,2026-01-02T00:00:00Z,2026-01-01T00:00:01Z,20.5,Temperature,frames,pump-7
,,1,2026-01-01T00:00:00Z,2026-01-02T00:00:00Z,2026-01-01T00:00:00Z,20.0,Temperature,frames,pump-7
";

    #[test]
    fn long_tables_pivot_fields_into_channels() {
        let t = parse_csv(LONG, Path::new("export.csv"), &LoadOptions::default()).unwrap();
        assert_eq!(t.columns, ["Current", "Temperature"]);
        assert_eq!(
            t.timestamps,
            [1_767_225_600_000_000_000, 1_767_225_601_000_000_000]
        );
        assert_eq!(t.values, [vec![1.5, 20.0], vec![1.6, 20.5]]);
    }

    #[test]
    fn pivoted_tables_keep_numeric_columns_without_tags() {
        let text = "#datatype,string,long,dateTime:RFC3339,string,double,double
,result,table,_time,asset,Current,Temperature
,_result,0,2026-01-01T00:00:00Z,pump-7,1.5,20
,_result,0,2026-01-01T00:00:01Z,pump-7,1.6,20.5
";
        let t = parse_csv(text, Path::new("export.csv"), &LoadOptions::default()).unwrap();
        assert_eq!(t.columns, ["Current", "Temperature"]);
        assert_eq!(t.values[1], [1.6, 20.5]);
    }

    #[test]
    fn plain_csv_is_not_annotated() {
        assert!(
            annotated_to_wide("time,a\n1,2\n", Path::new("x.csv"))
                .unwrap()
                .is_none()
        );
    }
}
