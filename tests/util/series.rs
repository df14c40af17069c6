//! Reading data back: the series VictoriaMetrics exports as JSON lines,
//! with their labels and `(timestamp, value)` points.

use std::collections::BTreeMap;

/// One series read back from VictoriaMetrics' `/api/v1/export`.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// `__name__` and every label.
    pub metric: BTreeMap<String, String>,
    pub values: Vec<f64>,
    /// Milliseconds since the epoch, one per value.
    pub timestamps: Vec<i64>,
}

impl Series {
    /// The metric name, e.g. `anomaly_score_score` (measurement `_` field).
    pub fn name(&self) -> &str {
        self.label("__name__").unwrap_or("")
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.metric.get(key).map(String::as_str)
    }

    /// `(timestamp_ms, value)` pairs sorted by time.
    pub fn points(&self) -> Vec<(i64, f64)> {
        let mut points: Vec<_> = self
            .timestamps
            .iter()
            .copied()
            .zip(self.values.iter().copied())
            .collect();
        points.sort_by_key(|p| p.0);
        points
    }

    pub(super) fn from_json_line(line: &str) -> Series {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("bad export line ({e}): {line}"));
        let metric = v["metric"]
            .as_object()
            .unwrap_or_else(|| panic!("export line without metric: {line}"))
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        let values = v["values"]
            .as_array()
            .unwrap_or_else(|| panic!("export line without values: {line}"))
            .iter()
            .map(|x| match x {
                serde_json::Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
                // Non-finite values come back as strings ("NaN", "Inf").
                serde_json::Value::String(s) => s.parse().unwrap_or(f64::NAN),
                _ => f64::NAN,
            })
            .collect();
        let timestamps = v["timestamps"]
            .as_array()
            .unwrap_or_else(|| panic!("export line without timestamps: {line}"))
            .iter()
            .map(|t| {
                t.as_i64()
                    .unwrap_or_else(|| panic!("bad timestamp in {line}"))
            })
            .collect();
        Series {
            metric,
            values,
            timestamps,
        }
    }
}

/// Total number of points in `series`.
pub fn point_count(series: &[Series]) -> usize {
    series.iter().map(|s| s.values.len()).sum()
}
