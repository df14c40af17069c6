//! When the journal is committed (written, synced, then acknowledged): at
//! most once per `sync_interval`, but at once when `sync_after` messages
//! wait for their acknowledgement, before the broker's in-flight window
//! (mosquitto's `max_inflight_messages`, 20 by default) stops delivery.
//! Disk syncs per second are thus at most `1 / sync_interval` plus
//! `messages per second / sync_max_pending` (docs/low-rate.md §1).
//!
//! Holding acknowledgements back costs nothing in latency: the messages
//! are decoded and scored at once; only their PUBACKs wait, and an
//! unacknowledged message is redelivered after a crash, so at-least-once
//! holds however long they wait.

use std::time::Duration;

use tokio::time::Instant;

/// Decides when the source commits the journal.
#[derive(Debug, Clone)]
pub(super) struct SyncPacer {
    interval: Duration,
    after: usize,
    /// When the first message still waiting arrived.
    waiting_since: Option<Instant>,
    /// A commit was made since [`Self::take_committed`] last asked.
    fresh_commit: bool,
}

impl SyncPacer {
    /// `after` is clamped to at least 1.
    pub(super) fn new(interval: Duration, after: usize) -> Self {
        Self {
            interval,
            after: after.max(1),
            waiting_since: None,
            fresh_commit: false,
        }
    }

    /// A message now waits for its acknowledgement; `pending` counts the
    /// waiting ones, this one included.
    pub(super) fn note(&mut self, pending: usize, now: Instant) {
        if pending > 0 && self.waiting_since.is_none() {
            self.waiting_since = Some(now);
        }
    }

    /// Whether to commit now: enough messages wait, or the oldest has
    /// waited a whole interval.
    pub(super) fn due(&self, pending: usize, now: Instant) -> bool {
        pending >= self.after || self.deadline(pending).is_some_and(|d| d <= now)
    }

    /// When the waiting messages must be committed at the latest; `None`
    /// when none wait.
    pub(super) fn deadline(&self, pending: usize) -> Option<Instant> {
        self.waiting_since
            .filter(|_| pending > 0)
            .map(|t| t + self.interval)
    }

    /// The waiting messages were committed.
    pub(super) fn committed(&mut self) {
        self.waiting_since = None;
        self.fresh_commit = true;
    }

    /// The waiting messages were dropped (a reconnect: the broker
    /// redelivers them).
    pub(super) fn dropped(&mut self) {
        self.waiting_since = None;
    }

    /// Whether a commit was made since the last call: its acknowledgements
    /// go out once its sync is done, so the source does not sleep now
    /// (intake_pace.rs).
    pub(super) fn take_committed(&mut self) -> bool {
        std::mem::take(&mut self.fresh_commit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trickle_commits_once_per_interval() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut p = SyncPacer::new(ms(1000), 16);
        assert!(!p.due(0, t0));
        assert_eq!(p.deadline(0), None);
        p.note(1, t0);
        // Later messages do not push the deadline back.
        p.note(2, t0 + ms(400));
        assert!(!p.due(2, t0 + ms(999)));
        assert_eq!(p.deadline(2), Some(t0 + ms(1000)));
        assert!(p.due(2, t0 + ms(1000)));
        p.committed();
        assert!(p.take_committed());
        assert!(!p.take_committed());
        assert_eq!(p.deadline(0), None);
        p.note(1, t0 + ms(1500));
        assert_eq!(p.deadline(1), Some(t0 + ms(2500)));
    }

    #[test]
    fn a_full_in_flight_window_commits_at_once() {
        let t0 = Instant::now();
        let mut p = SyncPacer::new(Duration::from_secs(3600), 16);
        p.note(1, t0);
        assert!(!p.due(15, t0));
        assert!(p.due(16, t0));
        // Zero is clamped: every message commits at once.
        let p = SyncPacer::new(Duration::from_secs(1), 0);
        assert!(p.due(1, t0));
    }
}
