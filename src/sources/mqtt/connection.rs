//! What the source notes when its broker connection drops: the counters,
//! the flapping flag and the log line with the retry delay.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crate::core::reading::DropReason;
use crate::ops::metrics::Metrics;

use super::STABLE_CONNECTION;

/// Notes a lost connection that the broker accepted at `connected_at`
/// (`None` if it never did); the source retries after `backoff`.
pub(super) fn note_lost(
    e: &rumqttc::ConnectionError,
    metrics: &Metrics,
    connected_at: Option<Instant>,
    backoff: Duration,
) {
    metrics.mqtt_disconnects.fetch_add(1, Relaxed);
    if let rumqttc::ConnectionError::MqttState(rumqttc::StateError::Deserialization(
        rumqttc::Error::PayloadSizeLimitExceeded(size),
    )) = e
    {
        metrics.count_drop(DropReason::Oversize, 1);
        tracing::error!(
            bytes = size,
            "a message larger than the transport limit cannot be read or acknowledged; the broker redelivers it after each reconnect (remove it there, or cap message sizes at the broker)"
        );
    }
    // Dropped soon after the broker accepted us: a flapping connection;
    // the backoff keeps growing.
    let quick = connected_at.is_some_and(|t| t.elapsed() < STABLE_CONNECTION);
    if quick {
        metrics.mqtt_flapping.store(1, Relaxed);
    }
    metrics
        .mqtt_backoff_ms
        .store(backoff.as_millis() as u64, Relaxed);
    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, flapping = quick, "MQTT connection lost; reconnecting");
}
