//! When the journal is committed (written, synced, then acknowledged): at
//! most once per `sync_interval`, but at once when `sync_after` messages
//! wait for their acknowledgement, before the broker's in-flight window
//! (mosquitto's `max_inflight_messages`, 20 by default) stops delivery.
//! Disk syncs per second are thus at most `1 / sync_interval` plus
//! `messages per second / sync_max_pending` (docs/low-rate.md §1).
//!
//! A broker with a larger window lets more wait, and MQTT 3.1.1 does not
//! say how many: the pacer learns it (docs/low-rate.md §8). Messages that
//! wait are a lower bound of the window (`room`); once `sync_after` wait,
//! it commits only when a sleep brought fewer than the rate predicts
//! (below), and from then on at four fifths of the most seen waiting.
//! Where the broker did stop at the window, that costs one rest's delay
//! of the acknowledgements, and the pacer does not try again for a
//! minute.
//!
//! A broker may stop short of the room seen: mosquitto 2.0.11 lets a
//! client that acknowledges in batches hold hundreds, as each PUBACK lets
//! up to its window (20) more through, but past those it holds new
//! messages until the next acknowledgement. So once `sync_after` wait, a
//! sleep that brought nothing commits, and so does one of at least half a
//! pace tick that brought fewer than three quarters of what the rate of
//! the last second predicts (20 of the 48 a 240 ms sleep brings at 200
//! messages per second): what the broker holds back waits about a rest,
//! not another long one or the whole interval (up to a second before
//! these rules).
//! A rest without a sleep gives nothing to judge by: then the commit goes
//! a pace tick later at the latest ([`SyncPacer::commit_by`]).
//!
//! The messages read are decoded and scored at once; only their PUBACKs
//! wait, and an unacknowledged message is redelivered after a crash, so
//! at-least-once holds however long they wait. What the broker holds back
//! for want of acknowledgements does wait, which is why the rule above
//! and the interval bound how long.

use std::time::Duration;

use tokio::time::Instant;

/// After a commit found that the broker had stopped delivering short of
/// what was waiting, commits go at the learned room for this long.
const PROBE_BACKOFF: Duration = Duration::from_secs(60);

/// Decides when the source commits the journal.
#[derive(Debug, Clone)]
pub(super) struct SyncPacer {
    interval: Duration,
    after: usize,
    /// When the first message still waiting arrived.
    waiting_since: Option<Instant>,
    /// A commit was made since [`Self::take_committed`] last asked.
    fresh_commit: bool,
    /// The most messages seen waiting at once on this connection: the
    /// broker's in-flight window is at least this.
    room: usize,
    /// Messages waiting when the source last slept and how many the rate
    /// predicted would arrive during the sleep, or `None` when it last
    /// rested without a sleep (nothing to learn from the next read).
    at_rest: Option<(usize, usize)>,
    /// No waiting for more before this (the last try found none).
    probe_after: Option<Instant>,
    /// Commits handed to the sync whose acknowledgements are not yet out.
    syncing: usize,
}

impl SyncPacer {
    /// `after` is clamped to at least 1.
    pub(super) fn new(interval: Duration, after: usize) -> Self {
        Self {
            interval,
            after: after.max(1),
            waiting_since: None,
            fresh_commit: false,
            room: 0,
            at_rest: None,
            probe_after: None,
            syncing: 0,
        }
    }

    /// A message now waits for its acknowledgement; `pending` counts the
    /// waiting ones, this one included.
    pub(super) fn note(&mut self, pending: usize, now: Instant) {
        if pending > 0 && self.waiting_since.is_none() {
            self.waiting_since = Some(now);
        }
    }

    /// How many waiting messages call for a commit: `sync_after`, or four
    /// fifths of the most seen waiting at once.
    fn limit(&self) -> usize {
        self.after.max(self.room - self.room / 5)
    }

    fn probing(&self, now: Instant) -> bool {
        self.probe_after.is_none_or(|t| now >= t)
    }

    /// Whether the last sleep brought fewer messages than the rate
    /// predicted (under three quarters), or none: the broker holds some
    /// back for want of acknowledgements.
    fn held_back(&self, pending: usize) -> bool {
        self.at_rest.is_some_and(|(r, expected)| {
            let brought = pending.saturating_sub(r);
            brought == 0 || brought * 4 < expected * 3
        })
    }

    /// Whether to commit now: the oldest has waited a whole interval;
    /// `sync_after` wait and a sleep brought fewer than the rate predicts
    /// (the broker stopped short of the room learned, as mosquitto does:
    /// what it holds back would wait another sleep, or the interval); or
    /// the limit waits and the pacer does not wait for more (see the
    /// module's doc).
    pub(super) fn due(&self, pending: usize, now: Instant) -> bool {
        if self.deadline(pending).is_some_and(|d| d <= now) {
            return true;
        }
        if pending >= self.after && self.held_back(pending) {
            return true;
        }
        pending >= self.limit()
            && !(self.probing(now) && self.at_rest.is_some_and(|(r, _)| pending > r))
    }

    /// The source rests without a sleep (it waits on the socket) with
    /// `pending` waiting: with no sleep to judge by, a broker that stopped
    /// would hold what comes next until the interval ends. So once
    /// `sync_after` wait, the commit goes a pace `tick` later at the latest.
    pub(super) fn commit_by(
        &self,
        pending: usize,
        now: Instant,
        tick: Duration,
    ) -> Option<Instant> {
        (pending >= self.after && !tick.is_zero()).then(|| now + tick)
    }

    /// The source rests with `pending` messages waiting, all delivered
    /// without an acknowledgement; it sleeps, and at the rate of the last
    /// second `expected` messages arrive meanwhile (`None`: it waits on
    /// the socket).
    pub(super) fn rested(&mut self, pending: usize, expected: Option<usize>) {
        self.at_rest = expected.map(|e| (pending, e));
        self.room = self.room.max(pending);
    }

    /// When the waiting messages must be committed at the latest; `None`
    /// when none wait.
    pub(super) fn deadline(&self, pending: usize) -> Option<Instant> {
        self.waiting_since
            .filter(|_| pending > 0)
            .map(|t| t + self.interval)
    }

    /// The source commits because [`Self::due`] said so. If that was
    /// because a sleep brought fewer than predicted while more than the
    /// count waited, the broker may have stopped at its window: no waiting
    /// for more for a while. (Commits for other reasons, a segment's
    /// rotation, say, tell nothing of the window.)
    pub(super) fn commit_due(&mut self, pending: usize, now: Instant) {
        let timed_out = self.deadline(pending).is_some_and(|d| d <= now);
        if pending >= self.limit() && self.held_back(pending) && !timed_out && self.probing(now) {
            self.probe_after = Some(now + PROBE_BACKOFF);
        }
    }

    /// The `pending` waiting messages were committed.
    pub(super) fn committed(&mut self, pending: usize) {
        if pending > 0 {
            self.syncing += 1;
        }
        self.room = self.room.max(pending);
        self.at_rest = None;
        self.waiting_since = None;
        self.fresh_commit = true;
    }

    /// The waiting messages were dropped (a reconnect: the broker
    /// redelivers them, and may be another node with another window).
    pub(super) fn dropped(&mut self) {
        self.waiting_since = None;
        self.room = 0;
        self.at_rest = None;
        self.probe_after = None;
        // A sync under way acknowledges nothing on the new connection.
        self.syncing = 0;
    }

    /// `batches` commits came back synced and their acknowledgements are
    /// going out: whether none is still syncing, so that the source may
    /// sleep (intake_pace.rs).
    pub(super) fn synced(&mut self, batches: usize) -> bool {
        self.syncing = self.syncing.saturating_sub(batches);
        self.syncing == 0
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
        p.committed(2);
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

    #[test]
    fn a_larger_window_is_learned_by_waiting_while_the_broker_delivers() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut p = SyncPacer::new(ms(1000), 16);
        p.note(1, t);
        // The source slept with 10 waiting, and the next read brought the
        // 25 the rate predicted: past sync_after, but the broker is still
        // delivering.
        p.rested(10, Some(25));
        assert!(!p.due(35, t));
        p.rested(35, Some(25));
        assert!(!p.due(60, t));
        // The interval ends the wait; that is no sign of the window.
        assert!(p.due(60, t + ms(1000)));
        p.commit_due(60, t + ms(1000));
        p.committed(60);
        // Now at four fifths of the 60 seen waiting, once nothing new came.
        p.note(1, t + ms(1000));
        p.rested(40, Some(8));
        assert!(!p.due(47, t + ms(1100)));
        assert!(!p.due(48, t + ms(1100)), "still delivering");
        p.rested(48, Some(8));
        assert!(p.due(48, t + ms(1200)), "nothing came during the sleep");
        // That commit is taken as the window: for a minute, commits go at
        // the limit whatever arrives.
        p.commit_due(48, t + ms(1200));
        p.committed(48);
        p.note(1, t + ms(1300));
        p.rested(10, Some(8));
        assert!(!p.due(47, t + ms(1300)));
        assert!(p.due(48, t + ms(1300)));
        p.commit_due(48, t + ms(1300));
        p.committed(48);
        // A minute later the pacer waits for more again.
        let later = t + ms(61_300);
        p.note(1, later);
        p.rested(10, Some(8));
        assert!(!p.due(48, later));
    }

    #[test]
    fn waiting_on_the_socket_commits_within_a_tick() {
        let t = Instant::now();
        let tick = Duration::from_millis(125);
        let p = SyncPacer::new(Duration::from_secs(1), 16);
        assert_eq!(p.commit_by(16, t, tick), Some(t + tick));
        assert_eq!(p.commit_by(15, t, tick), None);
        // Pacing off: the source never sleeps, counts and the interval rule.
        assert_eq!(p.commit_by(16, t, Duration::ZERO), None);
    }

    #[test]
    fn a_broker_that_stops_short_of_the_room_is_committed_after_one_sleep() {
        let t = Instant::now();
        let mut p = SyncPacer::new(Duration::from_secs(1), 16);
        p.note(1, t);
        p.rested(0, Some(200));
        p.rested(200, Some(200));
        p.committed(200);
        // The room is 200, so the count is 160; this time the broker stops
        // at 120. Without the rule, those 120 and whatever the broker holds
        // back would wait for the interval.
        p.note(1, t);
        p.rested(90, Some(30));
        assert!(!p.due(120, t), "the sleep brought what the rate predicts");
        p.rested(120, Some(30));
        assert!(p.due(120, t), "a sleep brought nothing");
        // Nor need it bring nothing: mosquitto lets 20 through after an
        // acknowledgement, and holds the rest. A 240 ms sleep at 200
        // messages per second should bring 48.
        p.committed(120);
        p.note(1, t);
        p.rested(20, Some(48));
        assert!(p.due(40, t), "20 of 48 came: the broker holds the rest");
        assert!(!p.due(56, t), "36 of 48 came");
        // A sleep with fewer than sync_after waiting does not commit.
        p.committed(40);
        p.note(1, t);
        p.rested(10, Some(30));
        assert!(!p.due(10, t));
    }

    #[test]
    fn the_source_learns_when_no_commit_is_still_syncing() {
        let mut p = SyncPacer::new(Duration::from_secs(1), 16);
        // Nothing waited: no batch went to the sync.
        p.committed(0);
        assert!(p.synced(0));
        p.committed(16);
        p.committed(4);
        // The first batch back; the second still syncs, and its
        // acknowledgements would wait out a sleep.
        assert!(!p.synced(1));
        assert!(p.synced(1));
        // A reconnect: what was syncing acknowledges nothing there.
        p.committed(16);
        p.dropped();
        assert!(p.synced(0));
    }

    #[test]
    fn without_a_sleep_or_after_a_reconnect_sync_after_counts() {
        let t = Instant::now();
        let mut p = SyncPacer::new(Duration::from_secs(1), 16);
        p.note(1, t);
        // The source waits on the socket instead of sleeping: the next
        // check would learn nothing, so the commit goes at once and no
        // back-off follows.
        p.rested(20, None);
        assert!(p.due(20, t));
        p.commit_due(20, t);
        p.committed(20);
        p.note(1, t);
        p.rested(10, Some(10));
        assert!(!p.due(20, t), "still waits for more once the source sleeps");
        // A reconnect (maybe to another node) forgets the window learned.
        p.dropped();
        p.note(1, t);
        assert!(p.due(16, t));
    }
}
