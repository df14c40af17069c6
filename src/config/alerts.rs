//! The `[alerts]` section (docs/alerts.md): data-quality alarm thresholds
//! with per-asset-pattern overrides, and the list of alert outputs (MQTT
//! topics, webhooks), each with its filter. Schema and its validation rules
//! in one place; the rest of the file's schema is in `schema/`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Problem;

/// `[alerts]`: data-quality alarms and where alerts are delivered.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// `stale` after this many sample periods without a reading (wall
    /// clock), per asset and per channel; 0 = off.
    #[serde(default = "default_stale_periods")]
    pub stale_after_periods: u32,
    /// `stuck` after a channel that varied in training holds one value
    /// (within `stuck_tolerance`) for this many sample periods; 0 = off.
    #[serde(default = "default_stuck_periods")]
    pub stuck_after_periods: u32,
    /// Largest change that still counts as the same value (the sensor's
    /// quantisation step), in the channel's unit.
    #[serde(default)]
    pub stuck_tolerance: f64,
    /// `out_of_range`: a channel beyond its training range by more than
    /// this fraction of the range's width, for 3 readings in a row; 0 = off.
    #[serde(default = "default_range_margin")]
    pub out_of_range_margin: f64,
    /// Overrides for assets matching a pattern; the first match wins.
    #[serde(default)]
    pub rules: Vec<AlarmRule>,
    /// Where alert transitions are delivered (besides InfluxDB).
    #[serde(default)]
    pub outputs: Vec<AlertOutputConfig>,
    /// Most undelivered alerts kept in the outbox; beyond it the oldest
    /// are dropped and counted.
    #[serde(default = "default_outbox_max")]
    pub outbox_max_alerts: usize,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            stale_after_periods: default_stale_periods(),
            stuck_after_periods: default_stuck_periods(),
            stuck_tolerance: 0.0,
            out_of_range_margin: default_range_margin(),
            rules: Vec::new(),
            outputs: Vec::new(),
            outbox_max_alerts: default_outbox_max(),
        }
    }
}

/// Data-quality thresholds for assets matching `pattern`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmRule {
    /// Asset id or glob (`*`, `?`).
    pub pattern: String,
    #[serde(default)]
    pub stale_after_periods: Option<u32>,
    #[serde(default)]
    pub stuck_after_periods: Option<u32>,
    #[serde(default)]
    pub stuck_tolerance: Option<f64>,
    #[serde(default)]
    pub out_of_range_margin: Option<f64>,
}

/// What kind of output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertOutputKind {
    Mqtt,
    Webhook,
}

/// One alert output (`[[alerts.outputs]]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertOutputConfig {
    /// Unique; names the output's counters and its place in the outbox.
    pub name: String,
    #[serde(rename = "type")]
    pub kind: AlertOutputKind,
    /// Only assets matching this glob.
    #[serde(default = "default_pattern")]
    pub assets: String,
    /// Only these alarms: `anomaly`, `stale`, `stuck`, `out_of_range`;
    /// empty = all.
    #[serde(default)]
    pub alarms: Vec<String>,
    /// Only these transitions: `raised`, `cleared`; empty = both.
    #[serde(default)]
    pub states: Vec<String>,
    /// MQTT: topic template with `{asset}`, `{model}`, `{alarm}`.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// MQTT: publish retained, so a late subscriber sees each asset's state.
    #[serde(default = "default_true")]
    pub retain: bool,
    /// MQTT: broker host; unset = the input broker (`[mqtt]`, with its
    /// credentials and TLS), over a connection of its own.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    /// MQTT: client id; unset = `<mqtt.client_id>-alerts-<name>`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Webhook: `http://` or `https://` URL (TLS certificates verified).
    #[serde(default)]
    pub url: Option<String>,
    /// Webhook: file holding a bearer token (`Authorization: Bearer ...`).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Webhook: extra CA (PEM) for a private CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Time allowed for one delivery (connect, send, answer).
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Retry backoff after a failed delivery, doubling up to `retry_max_ms`.
    #[serde(default = "default_retry_min")]
    pub retry_min_ms: u64,
    #[serde(default = "default_retry_max")]
    pub retry_max_ms: u64,
}

/// Alarm names a filter may list.
pub const ALARMS: [&str; 4] = ["anomaly", "stale", "stuck", "out_of_range"];
/// Transition names a filter may list.
pub const STATES: [&str; 2] = ["raised", "cleared"];

impl AlertsConfig {
    /// Every rule `[alerts]` breaks, with its key path.
    pub(super) fn check(&self, p: &mut Vec<Problem>) {
        let mut bad = |key: String, message: String| p.push(Problem { key, message });
        for (key, v) in [
            ("alerts.stuck_tolerance", self.stuck_tolerance),
            ("alerts.out_of_range_margin", self.out_of_range_margin),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                bad(key.into(), "must be >= 0".into());
            }
        }
        if self.outbox_max_alerts == 0 {
            bad("alerts.outbox_max_alerts".into(), "must be >= 1".into());
        }
        for (i, r) in self.rules.iter().enumerate() {
            if r.pattern.is_empty() {
                bad(format!("alerts.rules[{i}].pattern"), "is empty".into());
            }
            for (key, v) in [
                ("stuck_tolerance", r.stuck_tolerance),
                ("out_of_range_margin", r.out_of_range_margin),
            ] {
                if let Some(v) = v
                    && !(v.is_finite() && v >= 0.0)
                {
                    bad(format!("alerts.rules[{i}].{key}"), "must be >= 0".into());
                }
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, o) in self.outputs.iter().enumerate() {
            let key = |k: &str| format!("alerts.outputs[{i}].{k}");
            if o.name.is_empty()
                || !o
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                bad(
                    key("name"),
                    "must be letters, digits, '-' or '_' (it names a file)".into(),
                );
            }
            if !names.insert(o.name.as_str()) {
                bad(key("name"), format!("{:?} is defined twice", o.name));
            }
            for a in &o.alarms {
                if !ALARMS.contains(&a.as_str()) {
                    bad(key("alarms"), format!("{a:?} is not one of {ALARMS:?}"));
                }
            }
            for s in &o.states {
                if !STATES.contains(&s.as_str()) {
                    bad(key("states"), format!("{s:?} is not one of {STATES:?}"));
                }
            }
            if o.timeout_ms == 0 {
                bad(key("timeout_ms"), "must be >= 1".into());
            }
            if o.retry_min_ms == 0 || o.retry_max_ms < o.retry_min_ms {
                bad(
                    key("retry_max_ms"),
                    "retry_min_ms must be > 0 and <= retry_max_ms".into(),
                );
            }
            let mqtt_only = o.host.is_some() || o.port.is_some() || o.client_id.is_some();
            let webhook_only = o.url.is_some() || o.token_file.is_some() || o.ca_file.is_some();
            match o.kind {
                AlertOutputKind::Mqtt => {
                    if webhook_only {
                        bad(
                            key("type"),
                            "url, token_file and ca_file belong to a webhook".into(),
                        );
                    }
                    if o.topic.is_empty() || o.topic.contains(['+', '#']) {
                        bad(key("topic"), "must be a topic without wildcards".into());
                    }
                    if o.port == Some(0) {
                        bad(key("port"), "must not be 0".into());
                    }
                }
                AlertOutputKind::Webhook => {
                    if mqtt_only {
                        bad(
                            key("type"),
                            "host, port and client_id belong to an MQTT output".into(),
                        );
                    }
                    match &o.url {
                        None => bad(key("url"), "a webhook needs a url".into()),
                        Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => {
                            bad(key("url"), format!("{u:?} is not an http(s) URL"))
                        }
                        Some(_) => {}
                    }
                }
            }
        }
    }

    /// Makes the outputs' file paths absolute against `base`.
    pub(super) fn resolve_relative_paths(&mut self, base: &std::path::Path) {
        for o in &mut self.outputs {
            for p in [&mut o.token_file, &mut o.ca_file].into_iter().flatten() {
                if p.is_relative() && !p.as_os_str().is_empty() {
                    *p = base.join(&*p);
                }
            }
        }
    }
}

fn default_stale_periods() -> u32 {
    10
}
fn default_stuck_periods() -> u32 {
    300
}
fn default_range_margin() -> f64 {
    0.5
}
fn default_outbox_max() -> usize {
    10_000
}
fn default_pattern() -> String {
    "*".into()
}
fn default_topic() -> String {
    "anomalyd/alerts/{asset}".into()
}
fn default_true() -> bool {
    true
}
fn default_timeout() -> u64 {
    5000
}
fn default_retry_min() -> u64 {
    200
}
fn default_retry_max() -> u64 {
    30_000
}
