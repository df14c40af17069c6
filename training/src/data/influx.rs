//! Normal-operation history straight from InfluxDB, through InfluxQL on
//! the v1 `/query` API (InfluxDB 1.x; 2.x through its v1 compatibility
//! API; 3.x): one `SELECT` of a measurement (optionally one asset's tags
//! and a time range), streamed in chunks (`chunked=true`) with a progress
//! line, into the same [`LogTable`] a CSV log becomes. Fields are the
//! channels, and series told apart by a tag (one per channel) are pivoted
//! into channels; string fields are left out. The aligner then puts
//! the rows on the data's sample period like any log's. A blocking client
//! (ureq): the trainer has no async runtime.

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::path::PathBuf;
use std::time::Duration;

use anomalyd::core::log::LogTable;
use anomalyd::core::timestamp::parse_timestamp;
use serde::Deserialize;

/// Rows per chunk the server streams.
const CHUNK_ROWS: usize = 10_000;

/// One measurement to read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InfluxSource {
    /// `http://host:8086` (a path prefix is kept).
    pub url: String,
    /// Database (1.x) or bucket (2.x v1 compatibility, 3.x).
    pub database: String,
    pub measurement: String,
    /// Tag filters, e.g. `asset=pump-7`.
    pub tags: Vec<(String, String)>,
    /// `START..END` (RFC 3339 or epoch), END exclusive; either may be empty.
    pub range: Option<(String, String)>,
    /// Fields to read, in model order; `None` reads every field.
    pub channels: Option<Vec<String>>,
    /// `INFLUX_USERNAME`/`INFLUX_PASSWORD` (basic auth) or `INFLUX_TOKEN`.
    pub auth: Option<InfluxAuth>,
}

/// How the reader logs in.
#[derive(Debug, Clone, PartialEq)]
pub enum InfluxAuth {
    Basic { username: String, password: String },
    Token(String),
}

impl InfluxAuth {
    /// From `INFLUX_TOKEN`, else `INFLUX_USERNAME` and `INFLUX_PASSWORD`.
    pub fn from_env() -> Option<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if let Some(token) = var("INFLUX_TOKEN") {
            return Some(Self::Token(token));
        }
        Some(Self::Basic {
            username: var("INFLUX_USERNAME")?,
            password: var("INFLUX_PASSWORD").unwrap_or_default(),
        })
    }
}

impl InfluxSource {
    /// How it is named in messages, metadata and the report.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{}/{}/{}",
            self.url.trim_end_matches('/'),
            self.database,
            self.measurement
        );
        for (k, v) in &self.tags {
            s.push_str(&format!(",{k}={v}"));
        }
        if let Some((a, b)) = &self.range {
            s.push_str(&format!("[{a}..{b}]"));
        }
        s
    }

    /// The InfluxQL statement.
    ///
    /// # Errors
    /// A range bound that is not a timestamp.
    pub fn query(&self) -> Result<String, String> {
        let fields = match &self.channels {
            Some(list) => list.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", "),
            None => "*".to_string(),
        };
        let mut conds: Vec<String> = self
            .tags
            .iter()
            .map(|(k, v)| {
                format!(
                    "{} = '{}'",
                    ident(k),
                    v.replace('\\', "\\\\").replace('\'', "\\'")
                )
            })
            .collect();
        if let Some((start, end)) = &self.range {
            for (bound, op) in [(start, ">="), (end, "<")] {
                if bound.is_empty() {
                    continue;
                }
                let ns = parse_timestamp(bound)
                    .map_err(|e| format!("--range bound {bound:?}: {}", e.reason))?;
                conds.push(format!("time {op} {ns}"));
            }
        }
        let mut q = format!("SELECT {fields} FROM {}", ident(&self.measurement));
        if !conds.is_empty() {
            q.push_str(" WHERE ");
            q.push_str(&conds.join(" AND "));
        }
        // One series per tag set: series that differ by a tag (one per
        // channel) are pivoted into channels.
        q.push_str(" GROUP BY *");
        Ok(q)
    }
}

/// A double-quoted InfluxQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

#[derive(Debug, Deserialize)]
struct Chunk {
    #[serde(default)]
    results: Vec<StatementResult>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct StatementResult {
    #[serde(default)]
    series: Vec<Series>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Series {
    #[serde(default)]
    tags: BTreeMap<String, String>,
    columns: Vec<String>,
    #[serde(default)]
    values: Vec<Vec<serde_json::Value>>,
}

/// Reads the measurement into a table, calling `progress(rows)` after
/// each chunk.
///
/// # Errors
/// The server cannot be reached or answers with an error, or the
/// measurement has no numeric field in the range.
pub fn read_influx(
    src: &InfluxSource,
    mut progress: impl FnMut(usize),
) -> Result<LogTable, String> {
    let q = src.query()?;
    let url = format!("{}/query", src.url.trim_end_matches('/'));
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10))
        .timeout_read(Duration::from_secs(300))
        .build();
    let mut req = agent
        .get(&url)
        .query("db", &src.database)
        .query("q", &q)
        .query("epoch", "ns")
        .query("chunked", "true")
        .query("chunk_size", &CHUNK_ROWS.to_string());
    match &src.auth {
        Some(InfluxAuth::Token(t)) => req = req.set("Authorization", &format!("Token {t}")),
        Some(InfluxAuth::Basic { username, password }) => {
            req = req.query("u", username).query("p", password);
        }
        None => {}
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            let body = r.into_string().unwrap_or_default();
            return Err(format!("{url}: HTTP {code}: {}", body.trim()));
        }
        Err(e) => return Err(format!("{url}: {e}")),
    };
    let mut table = Table::default();
    for line in std::io::BufReader::new(resp.into_reader()).lines() {
        let line = line.map_err(|e| format!("{url}: reading the answer: {e}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let chunk: Chunk = serde_json::from_str(&line)
            .map_err(|e| format!("{url}: an answer chunk is not InfluxDB JSON ({e})"))?;
        if let Some(e) = chunk.error {
            return Err(format!("{url}: {e}"));
        }
        for r in chunk.results {
            if let Some(e) = r.error {
                return Err(format!("{url}: {q}: {e}"));
            }
            for s in r.series {
                table.add(s)?;
            }
        }
        progress(table.rows);
    }
    table.finish(src)
}

/// Series as they arrive (a chunk may continue the previous one).
#[derive(Debug, Default)]
struct Table {
    series: Vec<Series>,
    rows: usize,
}

impl Table {
    fn add(&mut self, s: Series) -> Result<(), String> {
        if s.columns.first().map(String::as_str) != Some("time") {
            return Err(format!("answer without a time column: {:?}", s.columns));
        }
        self.rows += s.values.len();
        match self
            .series
            .iter_mut()
            .find(|t| t.tags == s.tags && t.columns == s.columns)
        {
            Some(t) => t.values.extend(s.values),
            None => self.series.push(s),
        }
        Ok(())
    }

    /// Pivots the series into one row per timestamp: each numeric field of
    /// each series is a channel, named by the field when there is one
    /// series, by the tag values that tell the series apart when each has
    /// one field (`GROUP BY channel`), by both otherwise.
    fn finish(self, src: &InfluxSource) -> Result<LogTable, String> {
        let varying: Vec<&String> = self
            .series
            .first()
            .map(|f| {
                f.tags
                    .keys()
                    .filter(|k| self.series.iter().any(|s| s.tags.get(*k) != f.tags.get(*k)))
                    .collect()
            })
            .unwrap_or_default();
        let mut columns: Vec<String> = Vec::new();
        let mut skipped: Vec<String> = Vec::new();
        let mut rows: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
        for s in &self.series {
            let fields = s.columns.len() - 1;
            let prefix: Vec<&str> = varying
                .iter()
                .filter_map(|k| s.tags.get(*k).map(String::as_str))
                .collect();
            for j in 1..s.columns.len() {
                let cells = s.values.iter().filter_map(|v| v.get(j));
                let numeric = cells.clone().any(|c| c.is_number() || c.is_boolean());
                let name = match (prefix.is_empty(), fields) {
                    (true, _) => s.columns[j].clone(),
                    (false, 1) => prefix.join("."),
                    (false, _) => format!("{}.{}", prefix.join("."), s.columns[j]),
                };
                if !numeric || cells.clone().any(serde_json::Value::is_string) {
                    if !skipped.contains(&name) {
                        skipped.push(name);
                    }
                    continue;
                }
                let k = columns.iter().position(|c| *c == name).unwrap_or_else(|| {
                    columns.push(name);
                    columns.len() - 1
                });
                for v in &s.values {
                    let ts = v
                        .first()
                        .and_then(serde_json::Value::as_i64)
                        .ok_or("a row without an epoch-ns time")?;
                    let x = match v.get(j) {
                        Some(serde_json::Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
                        Some(serde_json::Value::Bool(b)) => f64::from(u8::from(*b)),
                        _ => f64::NAN,
                    };
                    let row = rows.entry(ts).or_default();
                    if row.len() <= k {
                        row.resize(k + 1, f64::NAN);
                    }
                    row[k] = x;
                }
            }
        }
        if rows.is_empty() {
            return Err(format!("{}: no rows ({})", src.describe(), src.query()?));
        }
        if columns.is_empty() {
            return Err(format!("{}: no numeric field", src.describe()));
        }
        let width = columns.len();
        let (timestamps, values) = rows
            .into_iter()
            .map(|(ts, mut r)| {
                r.resize(width, f64::NAN);
                (ts, r)
            })
            .unzip();
        Ok(LogTable {
            source: PathBuf::from(src.describe()),
            timestamp_column: "time".into(),
            columns,
            timestamps,
            values,
            first_row: 0,
            skipped_columns: skipped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_quotes_names_and_filters_tags_and_time() {
        let src = InfluxSource {
            measurement: "anomalyd frames".into(),
            tags: vec![("asset".into(), "pump-7".into())],
            range: Some(("2026-01-01T00:00:00Z".into(), String::new())),
            channels: Some(vec!["Current".into(), "Temp\"C".into()]),
            ..InfluxSource::default()
        };
        assert_eq!(
            src.query().unwrap(),
            "SELECT \"Current\", \"Temp\\\"C\" FROM \"anomalyd frames\" WHERE \"asset\" = 'pump-7' AND time >= 1767225600000000000 GROUP BY *"
        );
        let bad = InfluxSource {
            range: Some(("yesterday".into(), String::new())),
            ..src
        };
        assert!(bad.query().unwrap_err().contains("yesterday"));
    }

    fn series(json: serde_json::Value) -> Series {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn string_fields_are_not_channels() {
        let mut t = Table::default();
        t.add(series(serde_json::json!({
            "tags": {"asset": "p"},
            "columns": ["time", "a", "note", "b"],
            "values": [[1, 1.5, "x", null], [2, 2.5, "y", 3]]
        })))
        .unwrap();
        let table = t.finish(&InfluxSource::default()).unwrap();
        assert_eq!(table.columns, ["a", "b"]);
        assert_eq!(table.timestamps, [1, 2]);
        assert!(table.values[0][1].is_nan());
        assert_eq!(table.values[1], [2.5, 3.0]);
        assert_eq!(table.skipped_columns, ["note"]);
    }

    #[test]
    fn series_per_channel_are_pivoted_and_chunks_merged() {
        let mut t = Table::default();
        for (ch, rows) in [
            ("flow", serde_json::json!([[1, 1.0], [2, 2.0]])),
            ("temp", serde_json::json!([[2, 20.0]])),
            ("flow", serde_json::json!([[3, 3.0]])),
        ] {
            t.add(series(serde_json::json!({
                "tags": {"asset": "p", "channel": ch},
                "columns": ["time", "value"],
                "values": rows
            })))
            .unwrap();
        }
        let table = t.finish(&InfluxSource::default()).unwrap();
        assert_eq!(table.columns, ["flow", "temp"]);
        assert_eq!(table.timestamps, [1, 2, 3]);
        assert!(table.values[0][1].is_nan());
        assert_eq!(table.values[1], [2.0, 20.0]);
        assert_eq!(table.values[2][0], 3.0);
    }
}
