//! Readiness: whether the daemon is doing its job, as opposed to merely
//! alive (docs/durability.md §5). `/healthz` (liveness, for the watchdog)
//! only asks whether the pipeline's loops beat; `/readyz`, the status page
//! and systemd's `STATUS=` line ask this module, which reads the metrics:
//! degraded while the journal cannot write, while the database refuses
//! writes (401/403/404...), while the broker keeps dropping
//! the connection or is not connected, once database writes have failed
//! for longer than `metrics.degraded_after_s`, or once intake has waited
//! on a full queue that long.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::ops::metrics::Metrics;

/// Why the daemon is not ready; empty when it is.
///
/// `now_s` is the Unix time; `after` is how long a failing sink or a
/// waiting intake is tolerated.
pub fn degraded(metrics: &Metrics, now_s: u64, after: Duration) -> Vec<String> {
    let mut why = Vec::new();
    if metrics.journal_stalled.load(Relaxed) == 1 {
        why.push(
            "the intake journal cannot write: messages are not acknowledged and intake waits"
                .into(),
        );
    }
    if metrics.mqtt_flapping.load(Relaxed) == 1 {
        why.push(format!(
            "the broker keeps dropping the connection ({} drops so far)",
            metrics.mqtt_disconnects.load(Relaxed)
        ));
    } else if metrics.mqtt_connected.load(Relaxed) == 0 {
        why.push("not connected to the MQTT broker".into());
    }
    if let Some(refusal) = metrics.sink_refusal() {
        // Data is kept and retried, but only an operator can fix this.
        why.push(format!(
            "the database refuses writes ({refusal}); batches are kept and retried"
        ));
    }
    let lasting = |since: u64| since > 0 && now_s.saturating_sub(since) >= after.as_secs();
    let failing = metrics.sink_failing_since_unix_s.load(Relaxed);
    if lasting(failing) {
        why.push(format!(
            "database writes have failed for {} s",
            now_s.saturating_sub(failing)
        ));
    }
    let waiting = metrics.intake_waiting_since_unix_s.load(Relaxed);
    if lasting(waiting) {
        why.push(format!(
            "intake has waited on a full scoring queue for {} s",
            now_s.saturating_sub(waiting)
        ));
    }
    why
}

/// A reason without its figures (`for N s`, `(N drops so far)`), to tell
/// a change of state from a change of numbers.
pub fn reason_kind(reason: &str) -> &str {
    let cut = [" for ", " ("]
        .iter()
        .filter_map(|m| reason.find(m))
        .min()
        .unwrap_or(reason.len());
    &reason[..cut]
}

/// The one-line summary for systemd's `STATUS=`.
pub fn status_line(why: &[String], assets: u64) -> String {
    if why.is_empty() {
        format!("scoring; {assets} asset(s)")
    } else {
        format!("degraded: {}", why.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_condition_degrades_and_recovery_clears_it() {
        let m = Metrics::default();
        let after = Duration::from_secs(60);
        m.mqtt_connected.store(1, Relaxed);
        assert!(degraded(&m, 1_000, after).is_empty());
        assert_eq!(status_line(&[], 3), "scoring; 3 asset(s)");

        m.journal_stalled.store(1, Relaxed);
        m.mqtt_flapping.store(1, Relaxed);
        m.mqtt_disconnects.store(7, Relaxed);
        // A sink failing for less than the limit is tolerated.
        m.sink_failing_since_unix_s.store(990, Relaxed);
        m.intake_waiting_since_unix_s.store(900, Relaxed);
        let why = degraded(&m, 1_000, after);
        assert_eq!(why.len(), 3, "{why:?}");
        assert!(why[0].contains("journal"));
        assert!(why[1].contains("7 drops"));
        assert!(why[2].contains("100 s"));
        assert_eq!(
            reason_kind(&why[1]),
            "the broker keeps dropping the connection"
        );
        assert_eq!(
            reason_kind(&why[2]),
            "intake has waited on a full scoring queue"
        );
        assert!(status_line(&why, 3).starts_with("degraded: the intake journal"));
        assert_eq!(degraded(&m, 1_050, after).len(), 4);

        m.journal_stalled.store(0, Relaxed);
        m.mqtt_flapping.store(0, Relaxed);
        m.mqtt_connected.store(0, Relaxed);
        m.sink_failing_since_unix_s.store(0, Relaxed);
        m.intake_waiting_since_unix_s.store(0, Relaxed);
        assert_eq!(
            degraded(&m, 1_050, after),
            vec!["not connected to the MQTT broker".to_string()]
        );
    }
}
