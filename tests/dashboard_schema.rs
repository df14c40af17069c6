//! What the daemon writes and exports, as the dashboards may name it: the
//! measurements, tags and fields of the InfluxDB output (checked against
//! what the sink really formats), the `/metrics` names and labels, and the
//! checks a Flux, InfluxQL or PromQL query must pass.

use std::collections::{BTreeMap, BTreeSet};

use anomalyd::core::synth::PUMP_CHANNELS;
use anomalyd::core::{AlertEvent, AlertKind, DetectorSettings};
use anomalyd::ops::Metrics;
use anomalyd::pipeline::{AssetBinding, Output as PipelineOutput, ScoreRecord};
use anomalyd::sinks::influx::{Measurements, format_output};

/// What the daemon writes: measurement -> (tags, fields). A field ending in
/// `*` is a family (`err_<channel>`).
fn schema() -> BTreeMap<&'static str, (Vec<&'static str>, Vec<&'static str>)> {
    BTreeMap::from([
        (
            "anomaly_score",
            (
                vec!["asset", "model"],
                vec!["score", "threshold", "anomalous", "probability", "err_*"],
            ),
        ),
        (
            "anomaly_alert",
            (
                vec!["asset", "model", "state", "top_channel"],
                vec![
                    "score",
                    "peak",
                    "threshold",
                    "duration_s",
                    "top1_error",
                    "top2_error",
                    "top3_error",
                ],
            ),
        ),
    ])
}

/// (measurement, tag keys, field keys) of one line of line protocol without
/// escaped characters.
fn parse_line(line: &str) -> (String, BTreeSet<String>, BTreeSet<String>) {
    let mut parts = line.split(' ');
    let series = parts.next().unwrap();
    let fields = parts.next().unwrap();
    let mut s = series.split(',');
    let measurement = s.next().unwrap().to_string();
    let tags = s
        .map(|kv| kv.split('=').next().unwrap().to_string())
        .collect();
    let fields = fields
        .split(',')
        .map(|kv| kv.split('=').next().unwrap().to_string())
        .collect();
    (measurement, tags, fields)
}

/// The schema above is what `format_output` really produces.
#[test]
fn dashboard_schema_matches_the_sink_output() {
    let binding = std::sync::Arc::new(AssetBinding {
        asset: "pump-001".into(),
        model: "pump".into(),
        detector: DetectorSettings {
            threshold: 0.1,
            raise_after: 3,
            clear_after: 5,
            clear_ratio: 0.8,
            adapt: Default::default(),
        },
        channels: PUMP_CHANNELS
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .into(),
    });
    let m = Measurements {
        score: "anomaly_score".into(),
        alert: "anomaly_alert".into(),
        host: None,
        record: "anomalyd_frames".into(),
    };
    let mut buf = String::new();
    format_output(
        &PipelineOutput::Score(ScoreRecord {
            binding: binding.clone(),
            ts: 1_767_225_600_000_000_000,
            score: 0.2,
            threshold: 0.1,
            anomalous: true,
            probability: 0.99,
            channel_error: vec![0.1; PUMP_CHANNELS.len()],
        }),
        &m,
        &mut buf,
    );
    format_output(
        &PipelineOutput::Alert {
            binding,
            event: AlertEvent {
                kind: AlertKind::Raised,
                start_ts: 1_767_225_600_000_000_000,
                ts: 1_767_225_603_000_000_000,
                score: 0.2,
                peak: 0.3,
                threshold: 0.1,
                top_channels: vec![
                    ("vibration_1".into(), 0.5),
                    ("current".into(), 0.2),
                    ("pressure".into(), 0.1),
                ],
            },
        },
        &m,
        &mut buf,
    );
    let schema = schema();
    for line in buf.lines() {
        let (measurement, tags, fields) = parse_line(line);
        let (want_tags, want_fields) = &schema[measurement.as_str()];
        assert_eq!(
            tags,
            want_tags.iter().map(|t| t.to_string()).collect(),
            "{line}"
        );
        let want: BTreeSet<String> = want_fields
            .iter()
            .flat_map(|f| match f.strip_suffix('*') {
                Some(prefix) => PUMP_CHANNELS
                    .iter()
                    .map(|c| format!("{prefix}{c}"))
                    .collect(),
                None => vec![f.to_string()],
            })
            .collect();
        assert_eq!(fields, want, "{line}");
    }
}

/// Metric series names (histograms with `_bucket`/`_sum`/`_count`) and
/// label names that `/metrics` exposes.
fn prometheus_names() -> (BTreeSet<String>, BTreeSet<String>) {
    let m = Metrics::default();
    m.set_models(vec![("pump".into(), "1".into(), "cpu".into())]);
    let text = m.render();
    let mut names = BTreeSet::new();
    let mut labels = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (name, kind) = (it.next().unwrap(), it.next().unwrap());
            if kind == "histogram" {
                for s in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{s}"));
                }
            } else {
                names.insert(name.to_string());
            }
        } else if !line.starts_with('#')
            && let Some((_, rest)) = line.split_once('{')
        {
            for kv in rest.split('}').next().unwrap().split(',') {
                labels.insert(kv.split('=').next().unwrap().to_string());
            }
        }
    }
    (names, labels)
}

/// Identifiers made of `[A-Za-z0-9_]` starting at each match of `prefix`.
pub fn idents_after<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        let after = &rest[i + prefix.len()..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        // Skip matches inside a longer identifier (e.g. "expr." for "r.").
        let before_ok = rest[..i]
            .chars()
            .last()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        if before_ok && end > 0 {
            out.push(&after[..end]);
        }
        rest = &after[end..];
    }
    out
}

/// Strings in double quotes following each match of `prefix` up to `]`.
fn quoted_list_after(text: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        let after = &rest[i + prefix.len()..];
        let end = after.find(']').unwrap_or(after.len());
        out.extend(after[..end].split('"').skip(1).step_by(2).map(String::from));
        rest = &after[end..];
    }
    out
}

/// What a query may name: the allowed names for fields, tags and columns.
pub struct Names {
    schema: BTreeMap<&'static str, (Vec<&'static str>, Vec<&'static str>)>,
    metrics: BTreeSet<String>,
    labels: BTreeSet<String>,
}

impl Names {
    pub fn new() -> Self {
        let (metrics, labels) = prometheus_names();
        Names {
            schema: schema(),
            metrics,
            labels,
        }
    }

    fn field_ok(&self, measurement: &str, field: &str) -> bool {
        if measurement == "prometheus" {
            return self.metrics.contains(field);
        }
        self.schema[measurement]
            .1
            .iter()
            .any(|f| match f.strip_suffix('*') {
                Some(prefix) => field.starts_with(prefix) && field.len() > prefix.len(),
                None => *f == field,
            })
    }

    /// A field regex is accepted in the simple form `^prefix`, when that
    /// prefix starts a field of the measurement.
    fn field_regex_ok(&self, measurement: &str, re: &str) -> bool {
        let Some(prefix) = re.strip_prefix('^') else {
            return false;
        };
        prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
            && self.schema[measurement]
                .1
                .iter()
                .any(|f| f.starts_with(prefix) || prefix.starts_with(f.trim_end_matches('*')))
    }

    fn tag_ok(&self, measurement: &str, tag: &str) -> bool {
        if measurement == "prometheus" {
            // Telegraf's inputs.prometheus adds `url` (and `host`).
            return self.labels.contains(tag) || tag == "url" || tag == "host";
        }
        self.schema[measurement].0.contains(&tag)
    }

    fn column_ok(&self, measurements: &[String], col: &str) -> bool {
        const META: [&str; 7] = [
            "_time",
            "_value",
            "_field",
            "_measurement",
            "_start",
            "_stop",
            "text",
        ];
        META.contains(&col)
            || measurements
                .iter()
                .any(|m| self.tag_ok(m, col) || self.field_ok(m, col))
    }

    /// Checks one Flux query; returns the measurements it reads.
    pub fn check_flux(&self, q: &str, what: &str) -> Vec<String> {
        let mut measurements: Vec<String> = Vec::new();
        for (i, _) in q.match_indices("_measurement == \"") {
            let rest = &q[i + "_measurement == \"".len()..];
            measurements.push(rest[..rest.find('"').unwrap()].to_string());
        }
        if q.contains("schema.tagValues") {
            let pred = q
                .split("predicate:")
                .nth(1)
                .expect("tagValues with a predicate");
            assert!(
                pred.contains("_measurement == \""),
                "{what}: tagValues must filter a measurement:\n{q}"
            );
        }
        assert!(
            !measurements.is_empty(),
            "{what}: names no measurement:\n{q}"
        );
        for m in &measurements {
            assert!(
                self.schema.contains_key(m.as_str()) || m == "prometheus",
                "{what}: unknown measurement {m}:\n{q}"
            );
        }
        let fields = q
            .match_indices("_field == \"")
            .map(|(i, p)| {
                let rest = &q[i + p.len()..];
                rest[..rest.find('"').unwrap()].to_string()
            })
            .collect::<Vec<_>>();
        for f in &fields {
            assert!(
                measurements.iter().any(|m| self.field_ok(m, f)),
                "{what}: field {f} is not written to {measurements:?}:\n{q}"
            );
        }
        for (i, p) in q.match_indices("_field =~ /") {
            let rest = &q[i + p.len()..];
            let re = &rest[..rest.find('/').unwrap()];
            assert!(
                measurements.iter().any(|m| self.field_regex_ok(m, re)),
                "{what}: field regex /{re}/ matches no field of {measurements:?}:\n{q}"
            );
        }
        let mut columns: Vec<String> = idents_after(q, "r.")
            .into_iter()
            .map(String::from)
            .collect();
        for (i, p) in q.match_indices("r[\"") {
            let rest = &q[i + p.len()..];
            columns.push(rest[..rest.find('"').unwrap()].to_string());
        }
        for (i, p) in q.match_indices("tag: \"") {
            let rest = &q[i + p.len()..];
            columns.push(rest[..rest.find('"').unwrap()].to_string());
        }
        for key in ["columns: [", "rowKey: [", "columnKey: ["] {
            columns.extend(quoted_list_after(q, key));
        }
        for c in &columns {
            assert!(
                self.column_ok(&measurements, c),
                "{what}: column {c} is neither a tag nor a field of {measurements:?}:\n{q}"
            );
        }
        measurements
    }

    pub fn check_influxql(&self, q: &str, what: &str) {
        let from = q
            .split("FROM \"")
            .nth(1)
            .unwrap_or_else(|| panic!("{what}: no FROM \"measurement\":\n{q}"));
        let m = &from[..from.find('"').unwrap()];
        assert!(
            self.schema.contains_key(m),
            "{what}: unknown measurement {m}:\n{q}"
        );
        // Drop what is not a name: aliases, regex values, string values.
        let mut cleaned = String::new();
        let mut rest = q;
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("AS \"") {
                rest = &r[r.find('"').unwrap() + 1..];
            } else if let Some(r) = rest.strip_prefix("=~ /") {
                rest = &r[r.find('/').unwrap() + 1..];
            } else if let Some(r) = rest.strip_prefix('\'') {
                rest = &r[r.find('\'').unwrap() + 1..];
            } else {
                let c = rest.chars().next().unwrap();
                cleaned.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        let (select, tail) = cleaned
            .split_once(" FROM ")
            .map(|(s, t)| (s.to_string(), t.to_string()))
            .unwrap_or_default();
        for (i, name) in select.split('"').enumerate() {
            if i % 2 == 1 {
                assert!(
                    self.field_ok(m, name) || self.tag_ok(m, name),
                    "{what}: {name} is not written to {m}:\n{q}"
                );
            }
        }
        if let Some((_, rest)) = select.split_once('/') {
            let re = rest.split('/').next().unwrap_or("");
            assert!(
                self.field_regex_ok(m, re),
                "{what}: regex /{re}/ matches no field of {m}:\n{q}"
            );
        }
        for (i, name) in tail.split('"').enumerate() {
            if i % 2 == 1 && name != m {
                assert!(
                    self.tag_ok(m, name) || self.field_ok(m, name),
                    "{what}: {name} is not a tag or field of {m}:\n{q}"
                );
            }
        }
    }

    pub fn check_promql(&self, q: &str, what: &str) {
        let names = idents_after(q, "anomalyd_");
        assert!(!names.is_empty(), "{what}: no anomalyd metric in {q}");
        for n in names {
            let full = format!("anomalyd_{n}");
            assert!(
                self.metrics.contains(&full),
                "{what}: /metrics has no {full}:\n{q}"
            );
        }
        let allowed = |l: &str| self.labels.contains(l) || l == "instance" || l == "job";
        for (i, p) in q.match_indices("by (") {
            let rest = &q[i + p.len()..];
            for l in rest[..rest.find(')').unwrap()].split(',') {
                assert!(allowed(l.trim()), "{what}: unknown label {l} in {q}");
            }
        }
        for (i, p) in q.match_indices('{') {
            let rest = &q[i + p.len()..];
            for kv in rest[..rest.find('}').unwrap()].split(',') {
                let l = kv.split(['=', '!']).next().unwrap().trim();
                assert!(allowed(l), "{what}: unknown label {l} in {q}");
            }
        }
        if let Some(rest) = q.strip_prefix("label_values(") {
            let l = rest.split(',').nth(1).unwrap().trim().trim_end_matches(')');
            assert!(allowed(l), "{what}: unknown label {l}");
        }
    }
}
