//! Poison messages (docs/durability.md §3): a message over
//! `mqtt.max_packet_size` is dropped on purpose, never left to stall the
//! session. It is acknowledged like any other (the broker would otherwise
//! redeliver it first after every reconnect), counted as `oversize`,
//! logged once per topic with its size, and kept in the bounded
//! dead-letter file when there is a state directory.

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;

use super::ratelimit::RateLimitedLog;
use crate::core::reading::DropReason;
use crate::ops::metrics::Metrics;
use crate::state::DeadLetters;

/// Topics remembered for the once-per-topic log; past this, oversize
/// messages share the rate-limited log line.
const TOPICS_LOGGED: usize = 1024;

/// Drops oversize messages on purpose.
#[derive(Debug)]
pub(super) struct OversizePolicy {
    limit: usize,
    logged: HashSet<String>,
    dead_letters: Option<DeadLetters>,
}

impl OversizePolicy {
    pub(super) fn new(limit: usize, dead_letters: Option<DeadLetters>) -> Self {
        Self {
            limit,
            logged: HashSet::new(),
            dead_letters,
        }
    }

    /// Whether `payload` is over the limit; if so it has been counted,
    /// logged and dead-lettered, and the caller only acknowledges it.
    pub(super) fn reject(
        &mut self,
        recv_ns: i64,
        topic: &str,
        payload: &[u8],
        metrics: &Metrics,
        log: &mut RateLimitedLog,
    ) -> bool {
        if payload.len() <= self.limit {
            return false;
        }
        metrics.count_drop(DropReason::Oversize, 1);
        let kept = match self.dead_letters.as_mut() {
            Some(d) => match d.keep(recv_ns, topic, payload) {
                Ok(true) => {
                    metrics.dead_letters.fetch_add(1, Relaxed);
                    "kept in the dead-letter file"
                }
                Ok(false) => "too large for the dead-letter file",
                Err(e) => {
                    tracing::warn!(error = %e, "cannot write the dead-letter file");
                    "not kept (dead-letter file not writable)"
                }
            },
            None => "not kept (no state directory)",
        };
        let message = || {
            format!(
                "message on {topic:?} has {} bytes, more than mqtt.max_packet_size ({}): dropped and acknowledged, {kept}",
                payload.len(),
                self.limit
            )
        };
        if self.logged.contains(topic) {
            return true;
        }
        if self.logged.len() < TOPICS_LOGGED {
            tracing::warn!(reason = DropReason::Oversize.as_str(), "{}", message());
            self.logged.insert(topic.to_string());
        } else {
            log.warn(DropReason::Oversize, message);
        }
        true
    }
}
