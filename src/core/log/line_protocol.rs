//! InfluxDB line protocol logs (`measurement,tags fields timestamp`), as
//! `influx` exports them: lines merge into rows by timestamp and tag set.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use super::{LoadError, LoadOptions, LogTable};
use crate::core::timestamp::parse_timestamp;

/// Name given to the timestamp of a line-protocol log.
pub const LINE_PROTOCOL_TIME: &str = "time";

/// True when the first non-blank, non-comment line has the shape
/// `key[,tags] field=value[ timestamp]`.
pub fn looks_like_line_protocol(text: &str) -> bool {
    let Some(line) = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
    else {
        return false;
    };
    match split_lp_sections(line) {
        Ok((key, fields, _)) => {
            !key.is_empty() && find_unescaped(fields, b'=', false).is_some_and(|i| i > 0)
        }
        Err(_) => false,
    }
}

/// Parses InfluxDB line protocol:
/// `measurement[,tag=v…] field=1.0[,f2=2i,f3=true,f4="s"] timestamp`.
///
/// Escapes (`\,` `\=` `\ ` in names, `\"` `\\` in strings), `#` comments and
/// blank lines are handled. Float, integer (`i`), unsigned (`u`) and boolean
/// fields become numeric columns named by field key, or `measurement.key`
/// when the same key appears in several measurements; string fields are
/// listed in [`LogTable::skipped_columns`]. Lines with the same timestamp and
/// tag set merge into one row (a later value for the same field wins, as in
/// InfluxDB); times with only string fields make no row; rows are sorted by
/// time; `opts.rows` applies to the merged rows. The timestamp unit is detected by magnitude (InfluxDB exports ns).
///
/// # Errors
/// [`LoadError::Empty`] (no data line), [`LoadError::BadLine`] (malformed
/// line, missing timestamp, bad field value, a field that is a string on one
/// line and a number on another), [`LoadError::BadTimestamp`],
/// [`LoadError::NoRows`], [`LoadError::NoColumns`].
pub fn parse_line_protocol(
    text: &str,
    source: &Path,
    opts: &LoadOptions,
) -> Result<LogTable, LoadError> {
    let path = || source.to_path_buf();
    let bad_line = |line: usize, message: String| LoadError::BadLine {
        path: path(),
        line,
        message,
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);

    struct Column {
        measurement: String,
        key: String,
        numeric: bool,
        first_line: usize,
    }
    struct Row {
        ts: i64,
        cells: Vec<(usize, f64)>,
    }
    let mut columns: Vec<Column> = Vec::new();
    let mut column_ids: HashMap<(String, String), usize> = HashMap::new();
    let mut tag_sets: HashMap<String, u32> = HashMap::new();
    let mut rows: Vec<Row> = Vec::new();
    let mut row_ids: HashMap<(i64, u32), usize> = HashMap::new();
    let mut tags: Vec<&str> = Vec::new();

    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, field_set, ts_text) =
            split_lp_sections(line).map_err(|m| bad_line(line_no, m))?;
        let Some(ts_text) = ts_text else {
            return Err(bad_line(
                line_no,
                "no timestamp at the end of the line (a log needs time)".to_string(),
            ));
        };
        let ts = parse_timestamp(ts_text).map_err(|e| LoadError::BadTimestamp {
            path: path(),
            line: line_no,
            column: LINE_PROTOCOL_TIME.to_string(),
            value: ts_text.to_string(),
            reason: e.reason.to_string(),
        })?;

        let mut parts = split_unescaped(key, b',', false);
        let measurement = unescape(parts.next().unwrap_or(""));
        if measurement.is_empty() {
            return Err(bad_line(
                line_no,
                "the measurement name is empty".to_string(),
            ));
        }
        tags.clear();
        for tag in parts {
            if find_unescaped(tag, b'=', false).is_none_or(|p| p == 0 || p + 1 == tag.len()) {
                return Err(bad_line(line_no, format!("tag {tag:?} is not key=value")));
            }
            tags.push(tag);
        }
        // The tag set identifies a series whatever the order tags are written in.
        tags.sort_unstable();
        let tag_key = tags.join(",");
        let next_id = u32::try_from(tag_sets.len()).unwrap_or(u32::MAX);
        let tag_id = *tag_sets.entry(tag_key).or_insert(next_id);

        let row_idx = *row_ids.entry((ts, tag_id)).or_insert_with(|| {
            rows.push(Row {
                ts,
                cells: Vec::new(),
            });
            rows.len() - 1
        });

        let mut any_field = false;
        for field in split_unescaped(field_set, b',', true) {
            let Some(eq) = find_unescaped(field, b'=', false).filter(|&p| p > 0) else {
                return Err(bad_line(
                    line_no,
                    format!("field {field:?} is not key=value"),
                ));
            };
            let name = unescape(&field[..eq]);
            let value_text = &field[eq + 1..];
            let value = parse_lp_value(value_text).ok_or_else(|| {
                bad_line(
                    line_no,
                    format!(
                        "field {name:?}: {value_text:?} is not a float, integer (i/u), boolean or string"
                    ),
                )
            })?;
            any_field = true;
            let numeric = value.is_some();
            let col = match column_ids.get(&(measurement.to_string(), name.to_string())) {
                Some(&c) => c,
                None => {
                    columns.push(Column {
                        measurement: measurement.to_string(),
                        key: name.to_string(),
                        numeric,
                        first_line: line_no,
                    });
                    column_ids.insert(
                        (measurement.to_string(), name.to_string()),
                        columns.len() - 1,
                    );
                    columns.len() - 1
                }
            };
            if columns[col].numeric != numeric {
                let (now, before) = if numeric {
                    ("a number", "a string")
                } else {
                    ("a string", "a number")
                };
                return Err(bad_line(
                    line_no,
                    format!(
                        "field {name:?} is {now} here but {before} on line {}",
                        columns[col].first_line
                    ),
                ));
            }
            if let Some(v) = value {
                rows[row_idx].cells.push((col, v));
            }
        }
        if !any_field {
            return Err(bad_line(line_no, "the line has no fields".to_string()));
        }
    }

    if rows.is_empty() {
        return Err(LoadError::Empty { path: path() });
    }
    // Name columns by key, qualified by measurement where a key is ambiguous.
    let mut measurements_per_key: HashMap<&str, Vec<&str>> = HashMap::new();
    for c in &columns {
        let ms = measurements_per_key.entry(c.key.as_str()).or_default();
        if !ms.contains(&c.measurement.as_str()) {
            ms.push(c.measurement.as_str());
        }
    }
    let names: Vec<String> = columns
        .iter()
        .map(|c| {
            if measurements_per_key[c.key.as_str()].len() > 1 {
                format!("{}.{}", c.measurement, c.key)
            } else {
                c.key.clone()
            }
        })
        .collect();
    let mut dense_index = vec![usize::MAX; columns.len()];
    let mut kept_names = Vec::new();
    let mut skipped_columns = Vec::new();
    for (i, c) in columns.iter().enumerate() {
        if c.numeric {
            dense_index[i] = kept_names.len();
            kept_names.push(names[i].clone());
        } else {
            skipped_columns.push(names[i].clone());
        }
    }
    if kept_names.is_empty() {
        return Err(LoadError::NoColumns {
            path: path(),
            skipped: skipped_columns,
        });
    }

    // A time with only string fields is not a row of sensor values.
    rows.retain(|r| !r.cells.is_empty());
    rows.sort_by_key(|r| r.ts); // stable: ties keep file order
    let total = rows.len();
    let range = opts.rows.clone().unwrap_or(0..total);
    let lo = range.start.min(total);
    let hi = range.end.clamp(lo, total);
    if lo == hi {
        return Err(LoadError::NoRows {
            path: path(),
            detail: format!(
                "rows {}..{} lie beyond the file's {total} rows",
                range.start, range.end
            ),
        });
    }
    let mut timestamps = Vec::with_capacity(hi - lo);
    let mut values = Vec::with_capacity(hi - lo);
    for row in &rows[lo..hi] {
        let mut dense = vec![f64::NAN; kept_names.len()];
        for &(col, v) in &row.cells {
            dense[dense_index[col]] = v;
        }
        timestamps.push(row.ts);
        values.push(dense);
    }
    Ok(LogTable {
        source: path(),
        timestamp_column: LINE_PROTOCOL_TIME.to_string(),
        columns: kept_names,
        timestamps,
        values,
        first_row: lo,
        skipped_columns,
    })
}

/// A field value: `Some(number)` for numeric and boolean fields, `None` for
/// a string; the outer `None` when it is none of these.
fn parse_lp_value(v: &str) -> Option<Option<f64>> {
    if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
        return Some(None);
    }
    match v {
        "t" | "T" | "true" | "True" | "TRUE" => return Some(Some(1.0)),
        "f" | "F" | "false" | "False" | "FALSE" => return Some(Some(0.0)),
        _ => {}
    }
    if let Some(int) = v.strip_suffix('i') {
        return int.parse::<i64>().ok().map(|x| Some(x as f64));
    }
    if let Some(uint) = v.strip_suffix('u') {
        return uint.parse::<u64>().ok().map(|x| Some(x as f64));
    }
    v.parse::<f64>().ok().map(Some)
}

/// Splits a line into its key (measurement and tags), field set and optional
/// timestamp, at unescaped spaces outside string values.
fn split_lp_sections(line: &str) -> Result<(&str, &str, Option<&str>), String> {
    let key_end = find_unescaped(line, b' ', false).ok_or_else(|| {
        "expected `measurement field=value timestamp`; found no space".to_string()
    })?;
    let key = &line[..key_end];
    let rest = line[key_end..].trim_start_matches(' ');
    let field_end = find_unescaped(rest, b' ', true).unwrap_or(rest.len());
    let fields = &rest[..field_end];
    if fields.is_empty() {
        return Err("the line has no fields".to_string());
    }
    if quote_is_open(fields) {
        return Err("a string field value is never closed".to_string());
    }
    let ts = rest[field_end..].trim();
    if ts.contains(' ') {
        return Err(format!("unexpected text after the timestamp: {ts:?}"));
    }
    Ok((key, fields, (!ts.is_empty()).then_some(ts)))
}

/// True when `s` ends inside a `"…"` string.
fn quote_is_open(s: &str) -> bool {
    let b = s.as_bytes();
    let mut quoted = false;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'"' => quoted = !quoted,
            _ => {}
        }
        i += 1;
    }
    quoted
}

/// Byte index of the first `target` not escaped with `\` (and, with
/// `strings`, not inside a `"…"` string value).
fn find_unescaped(s: &str, target: u8, strings: bool) -> Option<usize> {
    let b = s.as_bytes();
    let mut quoted = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'\\' {
            i += 2;
            continue;
        }
        if strings && c == b'"' {
            quoted = !quoted;
        } else if c == target && !quoted {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Splits at every unescaped `sep` (outside strings when `strings`).
fn split_unescaped(s: &str, sep: u8, strings: bool) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let r = rest?;
        match find_unescaped(r, sep, strings) {
            Some(i) => {
                rest = Some(&r[i + 1..]);
                Some(&r[..i])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// Removes the `\` before `,` `=` and space in a name.
fn unescape(s: &str) -> Cow<'_, str> {
    if !s.contains('\\') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' && matches!(chars.peek(), Some(',' | '=' | ' ')) {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}
