//! Loading sensor logs into a [`LogTable`]: CSV exported from a historian
//! (`,` `;` or tab delimited, one timestamp column, one column per channel)
//! and InfluxDB line protocol. The trainer and `replay` both read logs here,
//! so both see the same rows.
//!
//! Parsing works on text and has no I/O; only [`load_log`] touches the file
//! system. Every error names the file and, where there is one, the line and
//! the column.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::core::timestamp::parse_timestamp;

/// Column names that hold labels rather than sensor values (compared
/// case-insensitively). They are loaded like any numeric column but left out
/// of [`LogTable::default_channels`].
pub const LABEL_COLUMNS: &[&str] = &["anomaly", "changepoint", "label"];

/// Name given to the timestamp of a line-protocol log.
pub const LINE_PROTOCOL_TIME: &str = "time";

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

// ---------------------------------------------------------------------------
// CSV
// ---------------------------------------------------------------------------

/// Parses CSV text (see [`load_log`] for the options). A header row is
/// required; the delimiter (`,`, `;` or tab) is the most frequent one in the
/// header; CRLF line ends, a UTF-8 byte-order mark, `"`-quoted fields with
/// `""` escapes, blank lines and a trailing delimiter on every line are
/// accepted. With `;` or tab delimiters a decimal comma (`0,25`) is read as
/// a decimal point.
///
/// A column is numeric when its first non-empty cell in the kept rows is a
/// number (`nan` and `inf` count: the aligner counts them later); other
/// columns are listed in [`LogTable::skipped_columns`]. Rows outside
/// `opts.rows` are split into cells but not checked or converted.
///
/// # Errors
/// [`LoadError::Empty`], [`LoadError::NoHeader`] (first line looks like
/// data, or a column has no name), [`LoadError::DuplicateColumn`],
/// [`LoadError::NoTimestampColumn`], [`LoadError::BadLine`] (a row with the
/// wrong number of cells, an unterminated quote),
/// [`LoadError::BadTimestamp`], [`LoadError::BadCell`] (text in a numeric
/// column), [`LoadError::NoRows`] (nothing kept), [`LoadError::NoColumns`].
pub fn parse_csv(text: &str, source: &Path, opts: &LoadOptions) -> Result<LogTable, LoadError> {
    let path = || source.to_path_buf();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(LoadError::Empty { path: path() });
    }
    let delim = detect_delimiter(text);
    let decimal_comma = delim != b',';
    let mut records = CsvRecords::new(text, delim);
    let mut fields: Vec<Cow<'_, str>> = Vec::new();
    let bad_line = |line: usize, message: String| LoadError::BadLine {
        path: path(),
        line,
        message,
    };

    let header_line = match records.next_record(&mut fields) {
        Ok(Some(line)) => line,
        Ok(None) => return Err(LoadError::Empty { path: path() }),
        Err((line, message)) => return Err(bad_line(line, message)),
    };
    let mut names: Vec<String> = fields.iter().map(|f| f.trim().to_string()).collect();
    // Some exporters end every line with the delimiter.
    let trailing_delimiter = names.len() > 1 && names.last().is_some_and(|n| n.is_empty());
    if trailing_delimiter {
        names.pop();
    }
    let width = names.len();
    check_header(&names, source, header_line)?;

    let ts_col = match &opts.timestamp_column {
        None => 0,
        Some(name) => names
            .iter()
            .position(|n| n == name)
            .or_else(|| names.iter().position(|n| n.eq_ignore_ascii_case(name)))
            .ok_or_else(|| LoadError::NoTimestampColumn {
                path: path(),
                name: name.clone(),
                available: names.clone(),
            })?,
    };
    let candidates: Vec<usize> = (0..width).filter(|&i| i != ts_col).collect();
    let mut kinds = vec![ColumnKind::Unknown; candidates.len()];

    let (lo, hi) = opts
        .rows
        .as_ref()
        .map_or((0, usize::MAX), |r| (r.start, r.end));
    let mut timestamps = Vec::new();
    // Row-major, candidates.len() per row; text columns are dropped at the end.
    let mut cells: Vec<f64> = Vec::new();
    let mut data_row = 0usize;
    loop {
        if data_row >= hi {
            break;
        }
        let line = match records.next_record(&mut fields) {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err((line, message)) => return Err(bad_line(line, message)),
        };
        let row = data_row;
        data_row += 1;
        if row < lo {
            continue;
        }
        let n = fields.len();
        let ok_width =
            n == width || (trailing_delimiter && n == width + 1 && fields[width].trim().is_empty());
        if !ok_width {
            return Err(bad_line(
                line,
                format!("data row {row} has {n} cells but the header has {width} columns"),
            ));
        }
        let ts_text = fields[ts_col].trim();
        let ts = parse_timestamp(ts_text).map_err(|e| LoadError::BadTimestamp {
            path: path(),
            line,
            column: names[ts_col].clone(),
            value: ts_text.to_string(),
            reason: e.reason.to_string(),
        })?;
        timestamps.push(ts);
        for (kind, &col) in kinds.iter_mut().zip(&candidates) {
            let cell = fields[col].trim();
            if cell.is_empty() {
                cells.push(f64::NAN);
                continue;
            }
            let v = match *kind {
                ColumnKind::Text => f64::NAN,
                ColumnKind::Unknown => match parse_number(cell, decimal_comma) {
                    Some(v) => {
                        *kind = ColumnKind::Numeric;
                        v
                    }
                    None => {
                        *kind = ColumnKind::Text;
                        f64::NAN
                    }
                },
                ColumnKind::Numeric => {
                    parse_number(cell, decimal_comma).ok_or_else(|| LoadError::BadCell {
                        path: path(),
                        line,
                        row,
                        column: names[col].clone(),
                        value: cell.to_string(),
                    })?
                }
            };
            cells.push(v);
        }
    }

    if timestamps.is_empty() {
        let detail = if data_row == 0 {
            "the file has a header but no data rows".to_string()
        } else if lo >= hi {
            format!("the row range {lo}..{hi} is empty")
        } else {
            format!("rows {lo}..{hi} lie beyond the file's {data_row} data rows")
        };
        return Err(LoadError::NoRows {
            path: path(),
            detail,
        });
    }
    let keep: Vec<usize> = (0..candidates.len())
        .filter(|&j| kinds[j] == ColumnKind::Numeric)
        .collect();
    let skipped_columns: Vec<String> = (0..candidates.len())
        .filter(|&j| kinds[j] != ColumnKind::Numeric)
        .map(|j| names[candidates[j]].clone())
        .collect();
    if keep.is_empty() {
        return Err(LoadError::NoColumns {
            path: path(),
            skipped: skipped_columns,
        });
    }
    let values = cells
        .chunks_exact(candidates.len())
        .map(|row| keep.iter().map(|&j| row[j]).collect())
        .collect();
    Ok(LogTable {
        source: path(),
        timestamp_column: names[ts_col].clone(),
        columns: keep.iter().map(|&j| names[candidates[j]].clone()).collect(),
        timestamps,
        values,
        first_row: lo,
        skipped_columns,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColumnKind {
    /// No non-empty cell seen yet.
    Unknown,
    Numeric,
    Text,
}

/// Rejects a header with unnamed or repeated columns, or one that is data.
fn check_header(names: &[String], source: &Path, line: usize) -> Result<(), LoadError> {
    if let Some(i) = names.iter().position(|n| n.is_empty()) {
        return Err(LoadError::NoHeader {
            path: source.to_path_buf(),
            line,
            reason: format!("column {} has no name", i + 1),
        });
    }
    // A file without a header starts with a timestamp and numbers.
    if parse_timestamp(&names[0]).is_ok()
        && (names.len() == 1 || names[1..].iter().any(|n| parse_number(n, true).is_some()))
    {
        return Err(LoadError::NoHeader {
            path: source.to_path_buf(),
            line,
            reason: format!(
                "the first line starts with {:?}, which looks like data; the first line must name the columns",
                names[0]
            ),
        });
    }
    let mut seen = std::collections::HashSet::new();
    for n in names {
        if !seen.insert(n.as_str()) {
            return Err(LoadError::DuplicateColumn {
                path: source.to_path_buf(),
                line,
                column: n.clone(),
            });
        }
    }
    Ok(())
}

/// A number as written in a CSV cell; with `decimal_comma`, `1,5` is 1.5.
fn parse_number(cell: &str, decimal_comma: bool) -> Option<f64> {
    if let Ok(v) = cell.parse::<f64>() {
        return Some(v);
    }
    if decimal_comma && cell.bytes().filter(|&b| b == b',').count() == 1 && !cell.contains('.') {
        return cell.replace(',', ".").parse().ok();
    }
    None
}

/// The most frequent of `,` `;` and tab in the first non-blank line, outside
/// quotes; `,` when there is none.
fn detect_delimiter(text: &str) -> u8 {
    let header = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let mut counts = [0usize; 3];
    let mut quoted = false;
    for b in header.bytes() {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => counts[0] += 1,
            b';' if !quoted => counts[1] += 1,
            b'\t' if !quoted => counts[2] += 1,
            _ => {}
        }
    }
    let delims = [b',', b';', b'\t'];
    let mut best = 0;
    for i in 1..3 {
        if counts[i] > counts[best] {
            best = i;
        }
    }
    delims[best]
}

/// Splits CSV text into records (RFC 4180: quoted fields may hold the
/// delimiter, `""` and line breaks), borrowing the text where it can.
struct CsvRecords<'a> {
    text: &'a str,
    pos: usize,
    /// 1-based line number at `pos`.
    line: usize,
    delim: u8,
}

impl<'a> CsvRecords<'a> {
    fn new(text: &'a str, delim: u8) -> Self {
        Self {
            text,
            pos: 0,
            line: 1,
            delim,
        }
    }

    /// Reads the next non-blank record into `fields` and returns the line it
    /// starts on; `Ok(None)` at the end. `Err((line, message))` for a
    /// malformed quote.
    fn next_record(
        &mut self,
        fields: &mut Vec<Cow<'a, str>>,
    ) -> Result<Option<usize>, (usize, String)> {
        let bytes = self.text.as_bytes();
        loop {
            if self.pos >= bytes.len() {
                return Ok(None);
            }
            let start_line = self.line;
            fields.clear();
            let mut any_quoted = false;
            loop {
                let (field, quoted) = self.next_field()?;
                any_quoted |= quoted;
                fields.push(field);
                match bytes.get(self.pos) {
                    Some(&b) if b == self.delim => self.pos += 1,
                    Some(b'\n') => {
                        self.pos += 1;
                        self.line += 1;
                        break;
                    }
                    None => break,
                    Some(_) => {
                        return Err((
                            self.line,
                            "text after a closing quote; a quote inside a quoted field is written \"\""
                                .to_string(),
                        ));
                    }
                }
            }
            let blank = !any_quoted && fields.len() == 1 && fields[0].trim().is_empty();
            if !blank {
                return Ok(Some(start_line));
            }
        }
    }

    /// Reads one field starting at `pos`, leaving `pos` on the delimiter,
    /// the `\n` or the end.
    fn next_field(&mut self) -> Result<(Cow<'a, str>, bool), (usize, String)> {
        let bytes = self.text.as_bytes();
        let start = self.pos;
        // Leading spaces before a quote are tolerated.
        let mut q = start;
        while q < bytes.len() && bytes[q] == b' ' {
            q += 1;
        }
        if bytes.get(q) == Some(&b'"') {
            let open_line = self.line;
            let mut i = q + 1;
            let mut escaped = false;
            loop {
                match bytes.get(i) {
                    None => {
                        return Err((open_line, "quoted field is never closed".to_string()));
                    }
                    Some(b'"') if bytes.get(i + 1) == Some(&b'"') => {
                        escaped = true;
                        i += 2;
                    }
                    Some(b'"') => break,
                    Some(b'\n') => {
                        self.line += 1;
                        i += 1;
                    }
                    Some(_) => i += 1,
                }
            }
            let inner = &self.text[q + 1..i];
            self.pos = i + 1;
            // Spaces and a CR after the closing quote are tolerated.
            while matches!(bytes.get(self.pos), Some(b' ' | b'\r')) {
                self.pos += 1;
            }
            let field = if escaped {
                Cow::Owned(inner.replace("\"\"", "\""))
            } else {
                Cow::Borrowed(inner)
            };
            return Ok((field, true));
        }
        let mut end = start;
        while end < bytes.len() && bytes[end] != self.delim && bytes[end] != b'\n' {
            end += 1;
        }
        self.pos = end;
        let mut field = &self.text[start..end];
        if bytes.get(end) != Some(&self.delim) {
            field = field.strip_suffix('\r').unwrap_or(field);
        }
        Ok((Cow::Borrowed(field), false))
    }
}

// ---------------------------------------------------------------------------
// InfluxDB line protocol
// ---------------------------------------------------------------------------

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::timestamp::NANOS_PER_SEC;

    const T0: i64 = 1_583_748_873 * NANOS_PER_SEC; // 2020-03-09T10:14:33Z

    fn csv(text: &str) -> Result<LogTable, LoadError> {
        parse_csv(text, Path::new("log.csv"), &LoadOptions::default())
    }

    fn csv_with(text: &str, opts: LoadOptions) -> Result<LogTable, LoadError> {
        parse_csv(text, Path::new("log.csv"), &opts)
    }

    fn lp(text: &str) -> Result<LogTable, LoadError> {
        parse_line_protocol(text, Path::new("log.lp"), &LoadOptions::default())
    }

    #[test]
    fn csv_comma_rfc3339() {
        let t = csv("time,a,b\n2020-03-09T10:14:33Z,1.5,2\n2020-03-09T10:14:34Z,-3,4e2\n").unwrap();
        assert_eq!(t.timestamp_column, "time");
        assert_eq!(t.columns, ["a", "b"]);
        assert_eq!(t.timestamps, [T0, T0 + NANOS_PER_SEC]);
        assert_eq!(t.values, [vec![1.5, 2.0], vec![-3.0, 400.0]]);
        assert_eq!(t.first_row, 0);
        assert_eq!(t.len(), 2);
        assert!(!t.is_empty());
        assert!(t.skipped_columns.is_empty());
        assert_eq!(t.source, Path::new("log.csv"));
    }

    #[test]
    fn csv_semicolon_crlf_and_skab_style_timestamps() {
        let text = "datetime;x;anomaly;changepoint\r\n2020-03-09 10:14:33;0,5;0.0;0.0\r\n\r\n2020-03-09 10:14:34;1.25;1.0;0.0\r\n";
        let t = csv(text).unwrap();
        assert_eq!(t.columns, ["x", "anomaly", "changepoint"]);
        assert_eq!(t.timestamps, [T0, T0 + NANOS_PER_SEC]);
        // Decimal comma with a `;` delimiter.
        assert_eq!(t.values[0], [0.5, 0.0, 0.0]);
        assert_eq!(t.values[1], [1.25, 1.0, 0.0]);
        assert_eq!(t.default_channels(), ["x"]);
    }

    #[test]
    fn csv_tab_delimited_and_bom() {
        let t = csv("\u{feff}ts\tv\n1583748873\t7\n").unwrap();
        assert_eq!(t.columns, ["v"]);
        assert_eq!(t.timestamps, [T0]);
    }

    #[test]
    fn csv_quoted_fields() {
        let text = "\"time\",\"flow, l/min\",status,\"note\"\n\"2020-03-09 10:14:33\",\"1.5\",\"ok, \"\"fine\"\"\",\"two\nlines\"\n2020-03-09 10:14:34,2.5,bad,x\n";
        let t = csv(text).unwrap();
        assert_eq!(t.columns, ["flow, l/min"]);
        assert_eq!(t.values, [vec![1.5], vec![2.5]]);
        assert_eq!(t.skipped_columns, ["status", "note"]);
    }

    #[test]
    fn csv_epoch_units_detected_by_magnitude() {
        for (ts, unit) in [
            ("1583748873", "s"),
            ("1583748873000", "ms"),
            ("1583748873000000", "us"),
            ("1583748873000000000", "ns"),
            ("1583748873.0", "s decimal"),
        ] {
            let t = csv(&format!("t,v\n{ts},1\n")).unwrap();
            assert_eq!(t.timestamps, [T0], "{unit}");
        }
    }

    #[test]
    fn csv_timestamp_column_by_name_or_first() {
        let text = "a,when,b\n1,2020-03-09 10:14:33,2\n";
        let t = csv_with(
            text,
            LoadOptions {
                timestamp_column: Some("when".into()),
                rows: None,
            },
        )
        .unwrap();
        assert_eq!(t.timestamp_column, "when");
        assert_eq!(t.columns, ["a", "b"]);
        assert_eq!(t.values, [vec![1.0, 2.0]]);
        assert_eq!(t.timestamps, [T0]);

        // Case-insensitive fallback.
        let t = csv_with(
            text,
            LoadOptions {
                timestamp_column: Some("WHEN".into()),
                rows: None,
            },
        )
        .unwrap();
        assert_eq!(t.timestamp_column, "when");

        // Without a name the first column is the time (`1` is epoch second
        // 1) and `when` is a text column.
        let t = csv(text).unwrap();
        assert_eq!(t.timestamp_column, "a");
        assert_eq!(t.timestamps, [NANOS_PER_SEC]);
        assert_eq!(t.columns, ["b"]);
        assert_eq!(t.skipped_columns, ["when"]);

        let e = csv_with(
            text,
            LoadOptions {
                timestamp_column: Some("zeit".into()),
                rows: None,
            },
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("log.csv") && msg.contains("\"zeit\"") && msg.contains("a, when, b"),
            "{msg}"
        );
    }

    #[test]
    fn csv_rows_range() {
        let mut text = String::from("t,v\n");
        for i in 0..10 {
            text.push_str(&format!("{},{i}\n", 1_583_748_873 + i));
        }
        let t = csv_with(
            &text,
            LoadOptions {
                timestamp_column: None,
                rows: Some(2..5),
            },
        )
        .unwrap();
        assert_eq!(t.first_row, 2);
        assert_eq!(t.values, [vec![2.0], vec![3.0], vec![4.0]]);
        assert_eq!(t.timestamps[0], T0 + 2 * NANOS_PER_SEC);

        // A range running past the end keeps what there is.
        let t = csv_with(
            &text,
            LoadOptions {
                timestamp_column: None,
                rows: Some(8..100),
            },
        )
        .unwrap();
        assert_eq!(t.len(), 2);

        // Rows outside the range are not checked.
        let broken = format!("{text}oops,not,even,the,right,width\n");
        assert_eq!(
            csv_with(
                &broken,
                LoadOptions {
                    timestamp_column: None,
                    rows: Some(0..10),
                },
            )
            .unwrap()
            .len(),
            10
        );

        let e = csv_with(
            &text,
            LoadOptions {
                timestamp_column: None,
                rows: Some(10..20),
            },
        )
        .unwrap_err();
        assert!(matches!(e, LoadError::NoRows { .. }), "{e}");
        assert!(e.to_string().contains("10 data rows"), "{e}");
    }

    #[test]
    fn csv_empty_cells_nan_and_inf_kept() {
        let t = csv("t,a,b,c\n1,,nan,inf\n2,1,,-inf\n").unwrap();
        assert_eq!(t.columns, ["a", "b", "c"]);
        assert!(t.values[0][0].is_nan() && t.values[0][1].is_nan());
        assert_eq!(t.values[0][2], f64::INFINITY);
        assert_eq!(t.values[1][0], 1.0);
        assert!(t.values[1][1].is_nan());
        assert_eq!(t.values[1][2], f64::NEG_INFINITY);
    }

    #[test]
    fn csv_all_empty_column_is_skipped_and_trailing_delimiter_tolerated() {
        let t = csv("t;a;b;\n1;1;;\n2;2;;\n").unwrap();
        assert_eq!(t.columns, ["a"]);
        assert_eq!(t.skipped_columns, ["b"]);
    }

    #[test]
    fn csv_label_columns_loaded_but_not_default() {
        let t = csv("t,Anomaly,x,LABEL,changepoint\n1,0,1,0,0\n").unwrap();
        assert_eq!(t.columns, ["Anomaly", "x", "LABEL", "changepoint"]);
        assert_eq!(t.default_channels(), ["x"]);
        assert_eq!(t.select(&["x".into(), "Anomaly".into()]).unwrap(), [1, 0]);
        let e = t.select(&["y".into()]).unwrap_err();
        assert!(
            e.to_string().contains("\"y\"")
                && e.to_string().contains("Anomaly, x, LABEL, changepoint"),
            "{e}"
        );
        assert_eq!(t.column_index("x"), Some(1));
        assert_eq!(t.column_index("X"), None);
    }

    #[test]
    fn csv_errors_name_file_line_and_column() {
        let e = csv("t,a\n1,1\n2,1,3\n").unwrap_err();
        assert!(matches!(e, LoadError::BadLine { line: 3, .. }), "{e}");
        assert!(e.to_string().starts_with("log.csv:3: "), "{e}");
        assert!(
            e.to_string().contains("3 cells") && e.to_string().contains("2 columns"),
            "{e}"
        );

        let e = csv("t,a\n1,1\n2,1\n3,oops\n").unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(
                e,
                LoadError::BadCell {
                    line: 4,
                    row: 2,
                    ..
                }
            ),
            "{msg}"
        );
        assert_eq!(
            msg,
            "log.csv:4: data row 2, column \"a\": \"oops\" is not a number"
        );

        let e = csv("t,a\n\n2020-03-09 10:14:33,1\n2020-02-30 10:00:00,1\n").unwrap_err();
        assert!(matches!(e, LoadError::BadTimestamp { line: 4, .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.starts_with("log.csv:4: column \"t\": \"2020-02-30 10:00:00\""),
            "{msg}"
        );

        let e = csv("t,a\n,1\n").unwrap_err();
        assert!(matches!(e, LoadError::BadTimestamp { line: 2, .. }), "{e}");

        let e = csv("t,a\n1,\"unterminated\n").unwrap_err();
        assert!(matches!(e, LoadError::BadLine { line: 2, .. }), "{e}");

        let e = csv("t,a\n1,\"x\"y\n").unwrap_err();
        assert!(matches!(e, LoadError::BadLine { line: 2, .. }), "{e}");

        assert!(matches!(csv("").unwrap_err(), LoadError::Empty { .. }));
        assert!(matches!(
            csv(" \r\n\n").unwrap_err(),
            LoadError::Empty { .. }
        ));
        let e = csv("t,a\n").unwrap_err();
        assert!(matches!(e, LoadError::NoRows { .. }), "{e}");
        assert!(e.to_string().contains("header but no data rows"), "{e}");

        let e = csv("2020-03-09 10:14:33;0.02;0.04\n2020-03-09 10:14:34;0.02;0.04\n").unwrap_err();
        assert!(matches!(e, LoadError::NoHeader { line: 1, .. }), "{e}");
        let e = csv("t,,b\n1,2,3\n").unwrap_err();
        assert!(e.to_string().contains("column 2 has no name"), "{e}");
        let e = csv("t,a,a\n1,2,3\n").unwrap_err();
        assert!(matches!(e, LoadError::DuplicateColumn { .. }), "{e}");
        let e = csv("t,status\n1,ok\n").unwrap_err();
        assert!(matches!(e, LoadError::NoColumns { .. }), "{e}");
        assert!(e.to_string().contains("status"), "{e}");
        let e = csv("t\n1\n").unwrap_err();
        assert!(
            matches!(e, LoadError::NoHeader { .. } | LoadError::NoColumns { .. }),
            "{e}"
        );
    }

    #[test]
    fn csv_never_panics_on_odd_input() {
        for text in [
            "\"",
            "\"\"",
            ",",
            ";;;",
            "\n\n\r\n",
            "a\n\"",
            "t,a\n1,\"",
            "t,a\r",
            "t,a\n1,2\r",
            "é,ü\n1,2\n",
            "t,a\n1,2\n\"\n",
            "\u{feff}",
            "t,\"a\"\"\n",
        ] {
            let _ = csv(text);
            let _ = lp(text);
            let _ = looks_like_line_protocol(text);
        }
    }

    #[test]
    fn line_protocol_tags_types_escapes_and_merge() {
        let text = "\
# exported from InfluxDB
pump,site=a\\ b,asset=p1 current=9.5,rpm=1450i,running=true,state=\"ok, \\\"fine\\\"\" 1583748873000000000
pump,asset=p1,site=a\\ b pressure=4.25,count=7u 1583748873000000000

pump,site=a\\ b,asset=p1 current=9.75,running=F 1583748874000000000
pump,site=a\\ b,asset=p1 fl\\,ow\\=x\\ y=1 1583748872000000000
";
        let t = lp(text).unwrap();
        assert_eq!(t.timestamp_column, "time");
        assert_eq!(
            t.columns,
            [
                "current",
                "rpm",
                "running",
                "pressure",
                "count",
                "fl,ow=x y"
            ]
        );
        assert_eq!(t.skipped_columns, ["state"]);
        // Sorted by time; the two lines at T0 (tags in another order) merged.
        assert_eq!(t.timestamps, [T0 - NANOS_PER_SEC, T0, T0 + NANOS_PER_SEC]);
        let nan = f64::NAN;
        let expect = [
            [nan, nan, nan, nan, nan, 1.0],
            [9.5, 1450.0, 1.0, 4.25, 7.0, nan],
            [9.75, nan, 0.0, nan, nan, nan],
        ];
        for (row, want) in t.values.iter().zip(expect) {
            for (got, want) in row.iter().zip(want) {
                assert!(got == &want || (got.is_nan() && want.is_nan()), "{row:?}");
            }
        }
    }

    #[test]
    fn line_protocol_units_measurements_tag_sets_and_rows() {
        // Seconds timestamps, the same key in two measurements.
        let text = "m1 v=1 1583748873\nm2 v=2,w=3 1583748873\nm1 v=4 1583748874\n";
        let t = lp(text).unwrap();
        assert_eq!(t.columns, ["m1.v", "m2.v", "w"]);
        assert_eq!(t.timestamps, [T0, T0 + NANOS_PER_SEC]);
        assert_eq!(t.values[0], [1.0, 2.0, 3.0]);

        // Different tag sets at the same time are different rows.
        let t = lp("m,a=1 v=1 1583748873000\nm,a=2 v=2 1583748873000\n").unwrap();
        assert_eq!(t.len(), 2);

        let t = parse_line_protocol(
            "m v=1 1\nm v=2 2\nm v=3 3\nm v=4 4\n",
            Path::new("x.lp"),
            &LoadOptions {
                timestamp_column: None,
                rows: Some(1..3),
            },
        )
        .unwrap();
        assert_eq!(t.first_row, 1);
        assert_eq!(t.values, [vec![2.0], vec![3.0]]);
    }

    #[test]
    fn line_protocol_errors_name_line() {
        let e = lp("m v=1 1\nm v=2\n").unwrap_err();
        assert!(matches!(e, LoadError::BadLine { line: 2, .. }), "{e}");
        assert!(
            e.to_string().starts_with("log.lp:2: ") && e.to_string().contains("timestamp"),
            "{e}"
        );
        let e = lp("m v=abc 1\n").unwrap_err();
        assert!(
            e.to_string().contains("\"v\"") && e.to_string().contains("\"abc\""),
            "{e}"
        );
        let e = lp("m v=1 yesterday\n").unwrap_err();
        assert!(matches!(e, LoadError::BadTimestamp { line: 1, .. }), "{e}");
        let e = lp("m v=1 1\nm v=\"x\" 2\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("a string here but a number on line 1"),
            "{e}"
        );
        let e = lp("m,tag v=1 1\n").unwrap_err();
        assert!(matches!(e, LoadError::BadLine { line: 1, .. }), "{e}");
        let e = lp("m v=\"open 1\n").unwrap_err();
        assert!(matches!(e, LoadError::BadLine { line: 1, .. }), "{e}");
        let e = lp("m v=1 1 extra\n").unwrap_err();
        assert!(matches!(e, LoadError::BadLine { line: 1, .. }), "{e}");
        assert!(matches!(
            lp("# only a comment\n").unwrap_err(),
            LoadError::Empty { .. }
        ));
        assert!(matches!(
            lp("m s=\"x\" 1\n").unwrap_err(),
            LoadError::NoColumns { .. }
        ));
        // A time with only string fields makes no row.
        let t = lp("m v=1 1\nm s=\"x\" 2\nm v=3 3\n").unwrap();
        assert_eq!(t.timestamps, [NANOS_PER_SEC, 3 * NANOS_PER_SEC]);
        assert_eq!(t.skipped_columns, ["s"]);
        let e = parse_line_protocol(
            "m v=1 1\n",
            Path::new("x.lp"),
            &LoadOptions {
                timestamp_column: None,
                rows: Some(5..9),
            },
        )
        .unwrap_err();
        assert!(matches!(e, LoadError::NoRows { .. }), "{e}");
    }

    /// SKAB's valve1/0.csv, from `SKAB_DIR` or `../shared/data/skab`.
    /// Skipped with a message when absent, except under `CI=true`.
    fn skab_file(name: &str) -> Option<PathBuf> {
        let dir = std::env::var_os("SKAB_DIR").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/skab"),
            PathBuf::from,
        );
        let path = dir.join(name);
        if path.is_file() {
            return Some(path);
        }
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(
            !ci,
            "SKAB data missing at {} (CI=true requires it)",
            path.display()
        );
        eprintln!(
            "skipping: SKAB data not found at {} (set SKAB_DIR)",
            path.display()
        );
        None
    }

    #[test]
    fn skab_valve1_loads_and_aligns_about_one_frame_per_row() {
        use crate::core::align::{Aligner, AlignerConfig};
        let Some(path) = skab_file("valve1/0.csv") else {
            return;
        };
        let all = load_log(&path, &LoadOptions::default()).unwrap();
        assert_eq!(all.timestamp_column, "datetime");
        assert_eq!(all.len(), 1147);
        let channels = all.default_channels();
        assert_eq!(
            channels,
            [
                "Accelerometer1RMS",
                "Accelerometer2RMS",
                "Current",
                "Pressure",
                "Temperature",
                "Thermocouple",
                "Voltage",
                "Volume Flow RateRMS"
            ]
        );
        assert_eq!(all.columns.len(), 10); // plus anomaly, changepoint
        assert!(all.skipped_columns.is_empty());
        assert_eq!(all.timestamps[0], T0);
        assert_eq!(all.values[0][0], 0.0265878);

        let opts = LoadOptions {
            timestamp_column: Some("datetime".into()),
            rows: Some(0..400),
        };
        let train = load_log(&path, &opts).unwrap();
        assert_eq!(train.len(), 400);
        assert_eq!(train.values[..], all.values[..400]);

        // SKAB rows are 1 s apart except for some 2 s steps; the aligner fills
        // each missing second with the previous row (age 1 s, not imputed).
        let steps = |t: &[i64]| -> (usize, usize) {
            let d: Vec<i64> = t.windows(2).map(|w| w[1] - w[0]).collect();
            let one = d.iter().filter(|&&x| x == NANOS_PER_SEC).count();
            let two = d.iter().filter(|&&x| x == 2 * NANOS_PER_SEC).count();
            assert_eq!(one + two, d.len(), "only 1 s and 2 s steps");
            (one, two)
        };
        let idx = train.select(&channels).unwrap();
        for (table, two_s_steps) in [(&train, 18), (&all, 53)] {
            assert_eq!(steps(&table.timestamps).1, two_s_steps);
            let mut aligner = Aligner::new(idx.len(), AlignerConfig::for_period(NANOS_PER_SEC));
            let mut frames = Vec::new();
            let mut row = Vec::new();
            for (ts, values) in table.timestamps.iter().zip(&table.values) {
                row.clear();
                row.extend(idx.iter().map(|&i| values[i]));
                aligner.push_row(*ts, &row, &mut frames);
            }
            aligner.flush(&mut frames);
            assert_eq!(frames.len(), table.len() + two_s_steps);
            let s = aligner.stats();
            assert_eq!(
                (
                    s.late,
                    s.non_finite,
                    s.imputed_values,
                    s.gaps,
                    s.warmup_frames
                ),
                (0, 0, 0, 0, 0)
            );
            // Every row's timestamp is a frame's, with that row's values.
            let mut f = frames.iter();
            for (ts, values) in table.timestamps.iter().zip(&table.values) {
                let frame = f.find(|fr| fr.ts == *ts).unwrap();
                assert_eq!(frame.values[0], values[idx[0]] as f32);
            }
        }
    }

    #[test]
    fn every_skab_file_loads_with_eight_channels() {
        use crate::core::align::{Aligner, AlignerConfig};
        let Some(first) = skab_file("valve1/0.csv") else {
            return;
        };
        let root = first.parent().and_then(Path::parent).unwrap().to_path_buf();
        let mut files = Vec::new();
        for dir in std::fs::read_dir(&root).unwrap() {
            let dir = dir.unwrap().path();
            if dir.is_dir() {
                for f in std::fs::read_dir(&dir).unwrap() {
                    let f = f.unwrap().path();
                    if f.extension().is_some_and(|e| e == "csv") {
                        files.push(f);
                    }
                }
            }
        }
        files.sort();
        assert!(files.len() >= 20, "{files:?}");
        let (mut rows, mut frames_total, mut gaps) = (0, 0, 0);
        for f in &files {
            let t = load_log(f, &LoadOptions::default()).unwrap();
            let channels = t.default_channels();
            assert_eq!(channels.len(), 8, "{}", f.display());
            let idx = t.select(&channels).unwrap();
            let mut aligner = Aligner::new(8, AlignerConfig::for_period(NANOS_PER_SEC));
            let mut frames = Vec::new();
            for (ts, v) in t.timestamps.iter().zip(&t.values) {
                let row: Vec<f64> = idx.iter().map(|&i| v[i]).collect();
                aligner.push_row(*ts, &row, &mut frames);
            }
            aligner.flush(&mut frames);
            let s = aligner.stats();
            assert_eq!((s.late, s.non_finite), (0, 0), "{}", f.display());
            assert!(frames.len() >= t.len(), "{}", f.display());
            rows += t.len();
            frames_total += frames.len();
            gaps += s.gaps;
        }
        eprintln!(
            "SKAB: {} files, {rows} rows, {frames_total} frames, {gaps} gaps",
            files.len()
        );
    }

    #[test]
    fn load_log_sniffs_the_format() {
        let dir = tempfile::tempdir().unwrap();
        let lp_path = dir.path().join("export.txt");
        std::fs::write(&lp_path, "# c\npump v=1 1583748873000000000\n").unwrap();
        let t = load_log(&lp_path, &LoadOptions::default()).unwrap();
        assert_eq!(t.timestamp_column, "time");
        assert_eq!(t.timestamps, [T0]);

        let csv_path = dir.path().join("log.dat");
        std::fs::write(&csv_path, "time,Volume Flow,x\n1583748873,1,2\n").unwrap();
        let t = load_log(&csv_path, &LoadOptions::default()).unwrap();
        assert_eq!(t.columns, ["Volume Flow", "x"]);

        // The extension wins over the content.
        let forced = dir.path().join("odd.csv");
        std::fs::write(&forced, "m v=1 1\n").unwrap();
        assert!(load_log(&forced, &LoadOptions::default()).is_err());

        // Latin-1 bytes do not stop a load.
        let latin = dir.path().join("latin.csv");
        std::fs::write(&latin, b"t,temp \xb0C\n1,2\n").unwrap();
        let t = load_log(&latin, &LoadOptions::default()).unwrap();
        assert_eq!(t.columns.len(), 1);

        let missing = dir.path().join("missing.csv");
        let e = load_log(&missing, &LoadOptions::default()).unwrap_err();
        assert!(matches!(e, LoadError::Io { .. }), "{e}");
        assert!(e.to_string().contains("missing.csv"), "{e}");
    }
}
