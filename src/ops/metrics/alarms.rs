//! Per-output alert counters, data-quality alarm counts and the drop table
//! behind "why no scores" (docs/alerts.md §4, §7), with their Prometheus lines.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::{Metrics, escape_label};

/// Most (asset, reason) pairs kept in the drop table; later ones are
/// counted in the totals only.
const MAX_DROP_ENTRIES: usize = 1000;
/// Most names (channels) kept per (asset, reason).
const MAX_DROP_NAMES: usize = 16;
/// A pair's drops are logged at most this often.
const DROP_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Default)]
pub(super) struct DropEntry {
    count: u64,
    names: std::collections::BTreeSet<String>,
    logged: Option<std::time::Instant>,
}

/// Readings or windows of one asset that gave no score, for one reason
/// (`unknown_channel`, `late`, `unknown_asset`, `too_many_assets`, `gap`),
/// with the names involved (channels).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AssetDrops {
    pub asset: String,
    pub reason: &'static str,
    pub count: u64,
    pub names: Vec<String>,
}

/// Counters of one alert output (MQTT topic or webhook).
#[derive(Debug, Default)]
pub struct AlertOutputCounters {
    /// Alerts the output confirmed (PUBACK, 2xx).
    pub delivered: AtomicU64,
    /// Failed attempts, retried.
    pub failed: AtomicU64,
    /// Alerts the endpoint refused for good (4xx), skipped.
    pub rejected: AtomicU64,
    /// Alerts the output's filter left out.
    pub filtered: AtomicU64,
    /// Alerts waiting in the outbox for this output.
    pub pending: AtomicU64,
}

impl Metrics {
    /// Counts `n` drops of `asset` for `reason`, naming `name` (a channel)
    /// when there is one. Returns the pair's totals when it is time to log
    /// them: the first time, then at most every 10 s.
    pub fn note_asset_drop(
        &self,
        asset: &str,
        reason: &'static str,
        name: Option<&str>,
        n: u64,
    ) -> Option<AssetDrops> {
        let mut t = self.asset_drops.lock().ok()?;
        let key = (asset.to_string(), reason);
        if !t.contains_key(&key) && t.len() >= MAX_DROP_ENTRIES {
            return None;
        }
        let e = t.entry(key).or_default();
        e.count += n;
        if let Some(name) = name
            && e.names.len() < MAX_DROP_NAMES
            && !e.names.contains(name)
        {
            e.names.insert(name.to_string());
        }
        if e.logged.is_some_and(|at| at.elapsed() < DROP_LOG_EVERY) {
            return None;
        }
        e.logged = Some(std::time::Instant::now());
        Some(AssetDrops {
            asset: asset.to_string(),
            reason,
            count: e.count,
            names: e.names.iter().cloned().collect(),
        })
    }

    /// Every (asset, reason) with drops, sorted.
    pub fn asset_drops(&self) -> Vec<AssetDrops> {
        let Ok(t) = self.asset_drops.lock() else {
            return Vec::new();
        };
        let mut v: Vec<AssetDrops> = t
            .iter()
            .map(|((asset, reason), e)| AssetDrops {
                asset: asset.clone(),
                reason,
                count: e.count,
                names: e.names.iter().cloned().collect(),
            })
            .collect();
        v.sort_by(|a, b| (&a.asset, a.reason).cmp(&(&b.asset, b.reason)));
        v
    }

    /// The counters of the alert output `name` (created on first use).
    pub fn alert_output(&self, name: &str) -> Arc<AlertOutputCounters> {
        let mut v = self
            .alert_outputs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, c)) = v.iter().find(|(n, _)| n == name) {
            return c.clone();
        }
        let c = Arc::new(AlertOutputCounters::default());
        v.push((name.to_string(), c.clone()));
        c
    }

    /// Counts one data-quality alarm transition.
    pub fn count_quality(&self, alarm: &'static str, state: &'static str) {
        if let Ok(mut q) = self.quality.lock() {
            *q.entry((alarm, state)).or_default() += 1;
        }
    }

    pub(super) fn render_alerts(&self, o: &mut String) {
        let _ = writeln!(
            o,
            "# HELP anomalyd_quality_alarms_total Data-quality alarm transitions, by alarm and state.\n# TYPE anomalyd_quality_alarms_total counter"
        );
        if let Ok(q) = self.quality.lock() {
            for ((alarm, state), n) in q.iter() {
                let _ = writeln!(
                    o,
                    "anomalyd_quality_alarms_total{{alarm=\"{alarm}\",state=\"{state}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            o,
            "# HELP anomalyd_alert_outbox_dropped_total Alerts dropped because the outbox was full.\n# TYPE anomalyd_alert_outbox_dropped_total counter\nanomalyd_alert_outbox_dropped_total {}",
            self.outbox_dropped.load(Relaxed)
        );
        let outputs = self
            .alert_outputs
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default();
        for (name, kind, help, pick) in [
            (
                "alert_output_delivered_total",
                "counter",
                "Alerts an output delivered.",
                0,
            ),
            (
                "alert_output_failures_total",
                "counter",
                "Failed alert deliveries, retried.",
                1,
            ),
            (
                "alert_output_rejected_total",
                "counter",
                "Alerts an endpoint refused for good.",
                2,
            ),
            (
                "alert_output_filtered_total",
                "counter",
                "Alerts an output's filter left out.",
                3,
            ),
            (
                "alert_output_pending",
                "gauge",
                "Alerts waiting for an output.",
                4,
            ),
        ] {
            let _ = writeln!(
                o,
                "# HELP anomalyd_{name} {help}\n# TYPE anomalyd_{name} {kind}"
            );
            for (out, c) in &outputs {
                let v = [
                    &c.delivered,
                    &c.failed,
                    &c.rejected,
                    &c.filtered,
                    &c.pending,
                ][pick]
                    .load(Relaxed);
                let _ = writeln!(o, "anomalyd_{name}{{output=\"{}\"}} {v}", escape_label(out));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asset_drops_keep_names_and_log_rate_limited() {
        let m = Metrics::default();
        let first = m.note_asset_drop("pump-1", "unknown_channel", Some("Temp"), 1);
        assert_eq!(first.unwrap().names, ["Temp"]);
        assert!(
            m.note_asset_drop("pump-1", "unknown_channel", Some("rpm"), 1)
                .is_none()
        );
        m.note_asset_drop("pump-1", "gap", None, 2);
        let all = m.asset_drops();
        assert_eq!(all.len(), 2);
        assert_eq!((all[1].reason, all[1].count), ("unknown_channel", 2));
        assert_eq!(all[1].names, ["Temp", "rpm"]);
        m.alert_output("hmi").delivered.fetch_add(2, Relaxed);
        m.count_quality("stale", "raised");
        let text = m.render();
        assert!(text.contains("anomalyd_alert_output_delivered_total{output=\"hmi\"} 2"));
        assert!(text.contains("anomalyd_quality_alarms_total{alarm=\"stale\",state=\"raised\"} 1"));
    }
}
