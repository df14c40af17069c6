//! CSV logs as a historian exports them: `,` `;` or tab delimited, quoted
//! fields, a header row, one timestamp column and one column per channel;
//! pandas' `to_csv` (an unnamed index column first) and InfluxDB's
//! annotated CSV (converted by `annotated.rs`) too.

use std::borrow::Cow;
use std::path::Path;

use super::{LoadError, LoadOptions, LogTable};
use crate::core::timestamp::parse_timestamp;

/// Parses CSV text (see [`load_log`](super::load_log) for the options). A header row is
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
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if let Some(wide) = super::annotated::annotated_to_wide(text, source)? {
        return parse_plain_csv(&wide, source, opts);
    }
    parse_plain_csv(text, source, opts)
}

fn parse_plain_csv(text: &str, source: &Path, opts: &LoadOptions) -> Result<LogTable, LoadError> {
    let path = || source.to_path_buf();
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
    // pandas' `to_csv` writes its index first, under an empty name: a
    // DatetimeIndex is the timestamp; a RangeIndex (0, 1, 2, ...) is left
    // out when another column names the time.
    let pandas_index = width > 1 && names[0].is_empty();
    if pandas_index {
        names[0] = PANDAS_INDEX.to_string();
    }
    check_header(&names, source, header_line)?;
    let time_named = names.iter().position(|n| {
        ["time", "timestamp", "datetime", "date", "_time"]
            .iter()
            .any(|t| n.eq_ignore_ascii_case(t))
    });
    let skip_index = pandas_index && (opts.timestamp_column.is_some() || time_named.is_some());

    let ts_col = match &opts.timestamp_column {
        None if skip_index => time_named.unwrap_or(0),
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
    let candidates: Vec<usize> = (0..width)
        .filter(|&i| i != ts_col && !(skip_index && i == 0))
        .collect();
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

/// The name given to pandas' unnamed index column.
pub const PANDAS_INDEX: &str = "(index)";

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
