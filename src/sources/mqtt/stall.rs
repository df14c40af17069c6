//! Intake waits while the journal cannot write (docs/durability.md §2).
//!
//! A message is acknowledged only once its journal record is durable. When
//! an append, a commit or a sync fails (a full disk), the source stops
//! acknowledging and stops polling the broker: the broker keeps the
//! backlog, as QoS 1 and a persistent session are meant to. It probes the
//! disk with capped backoff; once a probe is written and synced, the
//! source closes the damaged segment, reconnects so that the broker
//! redelivers everything it did not acknowledge, and carries on. One error
//! line when it starts, a warning every [`LOG_EVERY`] while it lasts, one
//! line when it ends.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crate::ops::metrics::Metrics;

/// First wait before probing the disk again; doubles up to [`PROBE_MAX`].
const PROBE_MIN: Duration = Duration::from_millis(100);
const PROBE_MAX: Duration = Duration::from_secs(5);
/// How often a lasting stall is logged again.
const LOG_EVERY: Duration = Duration::from_secs(30);

/// The journal cannot write: intake waits until a probe succeeds.
#[derive(Debug)]
pub(super) struct JournalStall {
    since: Instant,
    delay: Duration,
    retry_at: tokio::time::Instant,
    last_log: Instant,
    probes: u64,
}

impl JournalStall {
    /// Starts a stall after `error`: logged once, visible in the metrics.
    pub(super) fn begin(error: &dyn std::fmt::Display, metrics: &Metrics) -> Self {
        metrics.journal_errors.fetch_add(1, Relaxed);
        metrics.journal_stalled.store(1, Relaxed);
        tracing::error!(
            error = %error,
            "the intake journal cannot write: acknowledgements stop and intake waits (the broker keeps the backlog) until the disk takes writes again"
        );
        let now = Instant::now();
        Self {
            since: now,
            delay: PROBE_MIN,
            retry_at: tokio::time::Instant::now() + PROBE_MIN,
            last_log: now,
            probes: 0,
        }
    }

    /// When to probe the disk next.
    pub(super) fn retry_at(&self) -> tokio::time::Instant {
        self.retry_at
    }

    /// A probe failed: back off, and log now and then.
    pub(super) fn probe_failed(&mut self, error: &dyn std::fmt::Display) {
        self.probes += 1;
        self.delay = (self.delay * 2).min(PROBE_MAX);
        self.retry_at = tokio::time::Instant::now() + self.delay;
        if self.last_log.elapsed() >= LOG_EVERY {
            self.last_log = Instant::now();
            tracing::warn!(
                error = %error,
                waiting_s = self.since.elapsed().as_secs(),
                probes = self.probes,
                "the intake journal still cannot write; intake keeps waiting"
            );
        }
    }

    /// The disk takes writes again.
    pub(super) fn end(self, metrics: &Metrics) {
        metrics.journal_stalled.store(0, Relaxed);
        tracing::info!(
            waited_ms = self.since.elapsed().as_millis() as u64,
            "the intake journal writes again; reconnecting so the broker redelivers what was not acknowledged"
        );
    }
}
