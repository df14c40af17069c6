//! Process-wide counters and gauges, and their Prometheus text rendering
//! (docs/architecture.md §9). Plain atomics: every stage increments them without locks.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crate::core::reading::DropReason;

mod alarms;

use alarms::DropEntry;
pub use alarms::{AlertOutputCounters, AssetDrops};

/// Upper bounds (seconds) of the latency histograms' buckets.
const LATENCY_BUCKETS: [f64; 15] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1,
    0.25, 0.5, 1.0,
];

/// A fixed-bucket histogram. Each observation lands in its one bucket
/// (observed once per window on the scoring thread); the cumulative counts
/// Prometheus expects are summed when rendered.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, seconds: f64) {
        if let Some(b) = LATENCY_BUCKETS.iter().position(|&le| seconds <= le) {
            self.buckets[b].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_ns.fetch_add((seconds * 1e9) as u64, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, le) in self.buckets.iter().zip(LATENCY_BUCKETS) {
            cumulative += b.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}\n{name}_count {count}",
            self.sum_ns.load(Relaxed) as f64 / 1e9
        );
    }
}

/// Every number the daemon exports.
#[derive(Debug, Default)]
pub struct Metrics {
    pub messages_received: AtomicU64,
    pub readings_received: AtomicU64,
    pub readings_used: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
    pub frames: AtomicU64,
    pub frames_imputed_values: AtomicU64,
    pub windows_scored: AtomicU64,
    pub windows_skipped_gap: AtomicU64,
    pub windows_dropped: AtomicU64,
    pub inference_batches: AtomicU64,
    pub inference_errors: AtomicU64,
    pub inference_latency: Histogram,
    /// From a window's cut to its ONNX Runtime call (docs/low-rate.md §3).
    pub window_wait: Histogram,
    pub alerts_raised: AtomicU64,
    pub alerts_cleared: AtomicU64,
    pub points_written: AtomicU64,
    pub points_dropped: AtomicU64,
    pub write_errors: AtomicU64,
    pub write_retries: AtomicU64,
    pub sink_queue_depth: AtomicU64,
    pub spool_points: AtomicU64,
    pub points_dropped_spool_full: AtomicU64,
    pub spool_quarantined: AtomicU64,
    pub last_write_unix_s: AtomicU64,
    pub journal_records: AtomicU64,
    pub journal_replayed: AtomicU64,
    pub journal_damaged: AtomicU64,
    pub journal_errors: AtomicU64,
    pub journal_trimmed: AtomicU64,
    pub journal_bytes: AtomicU64,
    pub journal_syncs: AtomicU64,
    pub acks_sent: AtomicU64,
    pub mqtt_connects: AtomicU64,
    /// 1 while every MQTT session the daemon runs is connected.
    pub mqtt_connected: AtomicU64,
    /// MQTT sessions running (one, or one per owned partition) ...
    pub mqtt_sessions: AtomicU64,
    /// ... and how many of them are connected.
    pub mqtt_sessions_connected: AtomicU64,
    pub assets: AtomicU64,
    /// 1 while intake waits because the journal cannot write.
    pub journal_stalled: AtomicU64,
    pub mqtt_disconnects: AtomicU64,
    /// 1 while the broker drops the connection soon after accepting it.
    pub mqtt_flapping: AtomicU64,
    pub mqtt_backoff_ms: AtomicU64,
    pub dead_letters: AtomicU64,
    /// Windows replayed from confirmed journal segments: scored for their
    /// history, not written again.
    pub windows_rebuilt: AtomicU64,
    /// Partitions this daemon consumes now (docs/scale-out.md).
    pub partitions_owned: AtomicU64,
    /// Handover records left for a partition's next owner.
    pub handovers_published: AtomicU64,
    /// Handover records taken with a partition.
    pub handovers_taken: AtomicU64,
    /// Messages of taken handover records replayed for window history.
    pub handover_messages: AtomicU64,
    /// Unix time the sink's current run of failed writes began; 0 while
    /// writes succeed.
    pub sink_failing_since_unix_s: AtomicU64,
    /// Unix time the source began waiting on a full scoring queue; 0 while
    /// it is not.
    pub intake_waiting_since_unix_s: AtomicU64,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
    /// `provider` label per loaded model: (model, provider).
    providers: Mutex<Vec<(String, String, String)>>,
    /// Data-quality alarms raised and cleared, by alarm (`stale`, `stuck`).
    quality: Mutex<std::collections::BTreeMap<(&'static str, &'static str), u64>>,
    /// Alerts dropped because the outbox was full.
    pub outbox_dropped: AtomicU64,
    /// Counters of each alert output, by name.
    alert_outputs: Mutex<Vec<(String, Arc<AlertOutputCounters>)>>,
    /// Why assets get no scores: drops per asset and reason, with names.
    asset_drops: Mutex<HashMap<(String, &'static str), DropEntry>>,
    /// Points the database refused one by one, moved to the dead-letter file.
    pub points_dead_lettered: AtomicU64,
    /// Why the database refuses every write (401/403/404...), while it does.
    sink_refusal: Mutex<Option<String>>,
    /// `[record]`: frames not recorded because the record queue was full.
    pub frames_not_recorded: AtomicU64,
}

impl Metrics {
    /// A session connected (`true`) or lost its connection.
    pub fn session_connected(&self, up: bool) {
        if up {
            self.mqtt_sessions_connected.fetch_add(1, Relaxed);
        } else {
            let _ = self
                .mqtt_sessions_connected
                .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
        }
        self.refresh_connected();
    }

    /// How many sessions run now.
    pub fn set_sessions(&self, n: u64) {
        self.mqtt_sessions.store(n, Relaxed);
        self.refresh_connected();
    }

    fn refresh_connected(&self) {
        let n = self.mqtt_sessions.load(Relaxed);
        let up = self.mqtt_sessions_connected.load(Relaxed);
        self.mqtt_connected
            .store(u64::from(n > 0 && up >= n), Relaxed);
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize].load(Relaxed)
    }

    pub fn count_drop(&self, reason: DropReason, n: u64) {
        self.dropped[reason as usize].fetch_add(n, Relaxed);
    }

    pub fn total_dropped(&self) -> u64 {
        self.dropped.iter().map(|d| d.load(Relaxed)).sum()
    }

    /// Records which execution provider serves each model (and its version).
    pub fn set_models(&self, models: Vec<(String, String, String)>) {
        if let Ok(mut p) = self.providers.lock() {
            *p = models;
        }
    }

    /// Records that the database refuses every write (`Some(why)`) or
    /// accepts writes again (`None`).
    pub fn set_sink_refusal(&self, why: Option<&str>) {
        if let Ok(mut r) = self.sink_refusal.lock() {
            *r = why.map(str::to_string);
        }
    }

    /// Why the database refuses every write, while it does.
    pub fn sink_refusal(&self) -> Option<String> {
        self.sink_refusal.lock().ok().and_then(|r| r.clone())
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut o = String::with_capacity(4096);
        let c = |o: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                o,
                "# HELP anomalyd_{name} {help}\n# TYPE anomalyd_{name} counter\nanomalyd_{name} {}",
                v.load(Relaxed)
            );
        };
        let g = |o: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                o,
                "# HELP anomalyd_{name} {help}\n# TYPE anomalyd_{name} gauge\nanomalyd_{name} {v}"
            );
        };
        c(
            &mut o,
            "messages_received_total",
            "MQTT messages received.",
            &self.messages_received,
        );
        c(
            &mut o,
            "readings_received_total",
            "Channel values decoded from messages.",
            &self.readings_received,
        );
        c(
            &mut o,
            "readings_used_total",
            "Channel values accepted by an aligner.",
            &self.readings_used,
        );
        let _ = writeln!(
            o,
            "# HELP anomalyd_readings_dropped_total Readings or messages not used, by reason.\n# TYPE anomalyd_readings_dropped_total counter"
        );
        for r in DropReason::ALL {
            let _ = writeln!(
                o,
                "anomalyd_readings_dropped_total{{reason=\"{}\"}} {}",
                r.as_str(),
                self.dropped(r)
            );
        }
        c(&mut o, "frames_total", "Aligned frames.", &self.frames);
        c(
            &mut o,
            "imputed_values_total",
            "Frame cells imputed from an older value.",
            &self.frames_imputed_values,
        );
        c(
            &mut o,
            "windows_scored_total",
            "Windows scored by a model.",
            &self.windows_scored,
        );
        c(
            &mut o,
            "windows_skipped_gap_total",
            "Windows not scored: too many imputed values (gap).",
            &self.windows_skipped_gap,
        );
        c(
            &mut o,
            "windows_dropped_total",
            "Windows dropped without a score (model reload, inference error).",
            &self.windows_dropped,
        );
        c(
            &mut o,
            "inference_batches_total",
            "ONNX Runtime calls.",
            &self.inference_batches,
        );
        c(
            &mut o,
            "inference_errors_total",
            "Failed ONNX Runtime calls.",
            &self.inference_errors,
        );
        self.inference_latency.render(
            &mut o,
            "anomalyd_inference_latency_seconds",
            "Time of one ONNX Runtime call (one micro-batch).",
        );
        self.window_wait.render(
            &mut o,
            "anomalyd_window_wait_seconds",
            "Time from a window's cut (its closing message read) to its ONNX Runtime call: the micro-batching wait, at most runtime.max_wait_ms from the message reaching the socket, plus any queue.",
        );
        c(
            &mut o,
            "alerts_raised_total",
            "Alerts raised.",
            &self.alerts_raised,
        );
        c(
            &mut o,
            "alerts_cleared_total",
            "Alerts cleared.",
            &self.alerts_cleared,
        );
        c(
            &mut o,
            "points_written_total",
            "Points accepted by the database.",
            &self.points_written,
        );
        c(
            &mut o,
            "points_dropped_total",
            "Points dropped (shutdown deadline with the database away, dead-letter file full).",
            &self.points_dropped,
        );
        c(
            &mut o,
            "write_errors_total",
            "Failed write attempts.",
            &self.write_errors,
        );
        c(
            &mut o,
            "write_retries_total",
            "Write attempts retried.",
            &self.write_retries,
        );
        c(
            &mut o,
            "points_dead_lettered_total",
            "Points the database refused one by one (400/422), kept in the dead-letter file.",
            &self.points_dead_lettered,
        );
        c(
            &mut o,
            "frames_not_recorded_total",
            "[record]: aligned frames not recorded because the record queue was full.",
            &self.frames_not_recorded,
        );
        g(
            &mut o,
            "sink_refusing",
            "1 while the database refuses every write (401, 403, 404): batches are kept and retried.",
            u64::from(self.sink_refusal().is_some()),
        );
        g(
            &mut o,
            "sink_queue_points",
            "Scores and alerts waiting for the sink to take them.",
            self.sink_queue_depth.load(Relaxed),
        );
        c(
            &mut o,
            "spool_dropped_points_total",
            "Points dropped because the spool was full (oldest first).",
            &self.points_dropped_spool_full,
        );
        c(
            &mut o,
            "spool_quarantined_total",
            "Corrupt spool segments moved to quarantine.",
            &self.spool_quarantined,
        );
        g(
            &mut o,
            "spool_points",
            "Points waiting in the on-disk spool.",
            self.spool_points.load(Relaxed),
        );
        c(
            &mut o,
            "journal_records_total",
            "Messages journaled before they were acknowledged.",
            &self.journal_records,
        );
        c(
            &mut o,
            "journal_replayed_total",
            "Journaled messages replayed through the pipeline at start.",
            &self.journal_replayed,
        );
        c(
            &mut o,
            "journal_damaged_total",
            "Journal records that failed their checksum or were cut short.",
            &self.journal_damaged,
        );
        c(
            &mut o,
            "journal_errors_total",
            "Journal writes or syncs that failed (intake waited; nothing they covered was acknowledged).",
            &self.journal_errors,
        );
        c(
            &mut o,
            "journal_trimmed_segments_total",
            "Journal segments deleted by the size cap before their retention ran out.",
            &self.journal_trimmed,
        );
        c(
            &mut o,
            "journal_syncs_total",
            "fdatasync calls on the intake journal (journal.sync_interval_ms bounds their rate).",
            &self.journal_syncs,
        );
        g(
            &mut o,
            "journal_bytes",
            "Bytes in the intake journal.",
            self.journal_bytes.load(Relaxed),
        );
        c(
            &mut o,
            "mqtt_acks_total",
            "Acknowledgements (PUBACK, PUBREC) of QoS 1/2 messages sent, in batches.",
            &self.acks_sent,
        );
        g(
            &mut o,
            "last_write_timestamp_seconds",
            "Unix time of the last successful write.",
            self.last_write_unix_s.load(Relaxed),
        );
        c(
            &mut o,
            "mqtt_connects_total",
            "Successful MQTT connections.",
            &self.mqtt_connects,
        );
        g(
            &mut o,
            "mqtt_connected",
            "1 while connected to the broker.",
            self.mqtt_connected.load(Relaxed),
        );
        g(
            &mut o,
            "assets",
            "Assets being tracked.",
            self.assets.load(Relaxed),
        );
        g(
            &mut o,
            "journal_stalled",
            "1 while intake waits because the journal cannot write.",
            self.journal_stalled.load(Relaxed),
        );
        c(
            &mut o,
            "mqtt_disconnects_total",
            "MQTT connections lost.",
            &self.mqtt_disconnects,
        );
        g(
            &mut o,
            "mqtt_flapping",
            "1 while the broker drops the connection soon after accepting it.",
            self.mqtt_flapping.load(Relaxed),
        );
        g(
            &mut o,
            "mqtt_reconnect_backoff_ms",
            "Wait before the latest reconnect attempt.",
            self.mqtt_backoff_ms.load(Relaxed),
        );
        c(
            &mut o,
            "dead_letters_total",
            "Oversize messages kept in the dead-letter file.",
            &self.dead_letters,
        );
        c(
            &mut o,
            "windows_rebuilt_total",
            "Windows replayed from confirmed journal segments: scored for history, not written again.",
            &self.windows_rebuilt,
        );
        g(
            &mut o,
            "partitions_owned",
            "Partitions of the fleet this daemon consumes now.",
            self.partitions_owned.load(Relaxed),
        );
        c(
            &mut o,
            "handovers_published_total",
            "Handover records left on the broker for a partition's next owner.",
            &self.handovers_published,
        );
        c(
            &mut o,
            "handovers_taken_total",
            "Handover records taken over with a partition.",
            &self.handovers_taken,
        );
        c(
            &mut o,
            "handover_messages_total",
            "Messages of taken handover records replayed for window history.",
            &self.handover_messages,
        );
        g(
            &mut o,
            "sink_failing_since_seconds",
            "Unix time the current run of failed writes began (0 while writes succeed).",
            self.sink_failing_since_unix_s.load(Relaxed),
        );
        g(
            &mut o,
            "intake_waiting_since_seconds",
            "Unix time the source began waiting on a full scoring queue (0 while it is not).",
            self.intake_waiting_since_unix_s.load(Relaxed),
        );
        c(
            &mut o,
            "reloads_total",
            "Successful reloads (SIGHUP).",
            &self.reloads,
        );
        c(
            &mut o,
            "reload_failures_total",
            "Refused reloads.",
            &self.reload_failures,
        );
        let _ = writeln!(
            o,
            "# HELP anomalyd_model_info Loaded models, their version and execution provider.\n# TYPE anomalyd_model_info gauge"
        );
        if let Ok(p) = self.providers.lock() {
            for (model, version, provider) in p.iter() {
                let _ = writeln!(
                    o,
                    "anomalyd_model_info{{model=\"{}\",version=\"{}\",provider=\"{}\"}} 1",
                    escape_label(model),
                    escape_label(version),
                    escape_label(provider)
                );
            }
        }
        self.render_alerts(&mut o);
        o
    }
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_by_reason_and_histogram() {
        let m = Metrics::default();
        m.count_drop(DropReason::BadPayload, 3);
        m.inference_latency.observe(0.0003);
        m.set_models(vec![("pump".into(), "1\"x".into(), "cpu".into())]);
        let text = m.render();
        assert!(text.contains("anomalyd_readings_dropped_total{reason=\"bad_payload\"} 3"));
        assert!(text.contains("anomalyd_inference_latency_seconds_bucket{le=\"0.0005\"} 1"));
        assert!(text.contains("anomalyd_inference_latency_seconds_bucket{le=\"0.00025\"} 0"));
        assert!(
            text.contains(
                "anomalyd_model_info{model=\"pump\",version=\"1\\\"x\",provider=\"cpu\"} 1"
            )
        );
        assert_eq!(m.total_dropped(), 3);
    }
}
