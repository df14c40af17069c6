//! Paced reading of the broker at low rates (docs/low-rate.md §4).
//!
//! At a few hundred messages per second spread evenly, each message
//! arrives alone, and waiting for it in `epoll_wait` wakes the source's
//! thread once per message: the context switch costs more than the
//! message's decoding, windowing and journaling together. So once the
//! source has read what the broker had ready, and that was only a few
//! messages, its thread sleeps instead of waiting on the socket: messages
//! arriving meanwhile queue in the socket, nobody is woken for them, and
//! the next read takes them all at once.
//!
//! - The source runs on a thread of its own (docs/architecture.md §2), so
//!   the sleep holds up nothing but its own session.
//! - A sleep lasts a tick, `runtime.max_wait_ms` less a twenty-fifth
//!   (240 ms by default), or as long as [`PER_SLEEP`] messages take to
//!   arrive at the rate of the last second if that is shorter.
//! - Windows are due at scoring `max_wait_ms` after the source last found
//!   the socket empty before their message was read
//!   ([`IntakePace::handover_at`]): the message reached the socket after
//!   that, so it is scored within `max_wait_ms` of its arrival. Windows
//!   that would fall due during the sleep go to scoring before it, not at
//!   a wake-up of their own: at a low rate each read is due before the
//!   next, and one call scores what one read brought, once per tick.
//! - No sleep after a read of [`PACE_BELOW`] messages or more (without the
//!   journal: with it, the sync pacer keeps what waits within the broker's
//!   window, so a large read does not mean the broker held messages back),
//!   when the sleep would be under [`MIN_SLEEP`] (thousands of messages per
//!   second: each wake-up already serves several, and a sleep would only
//!   add latency), or right after a journal commit (the sync's end wakes the
//!   source to write its acknowledgements; docs/low-rate.md §4 says when
//!   they wait for the next tick instead).
//! - Up to 2,500 messages per second a hand-over to scoring gathers up to
//!   [`SLOW_HANDOVER`] windows, not [`WINDOWS_PER_SEND`], while nothing is
//!   queued for scoring ([`IntakePace::handover_size`]): the scoring thread
//!   is woken once for several calls.
//! - When nothing came since the last rest the source waits on the socket
//!   as before: an idle daemon is not woken by ticks.
//! - A `max_wait_ms` under 8 ms turns pacing off.

use std::time::Duration;

use tokio::time::Instant;

use super::WINDOWS_PER_SEND;

/// Reads of this many messages or more are not followed by a sleep.
pub(super) const PACE_BELOW: u32 = 16;

/// At most about this many messages arrive during one sleep.
const PER_SLEEP: u32 = 50;

/// The rate that sizes the sleeps is counted over this long: a second of
/// reading, not one read, whose span may include time spent waiting on
/// scoring.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// Shorter sleeps save too little to be worth a message's delay.
const MIN_SLEEP: Duration = Duration::from_millis(2);

/// A tick is `max_wait` less a twenty-fifth (240 ms of the default 250):
/// what one read brings is due before the next, so it goes to scoring at
/// the rest after it, and the read's own work fits in the rest.
const TICK_SLACK: u32 = 25;

/// Windows are sent a fiftieth of `max_wait` (5 ms of the default 250)
/// before it ends: the timer's slack and the scoring thread's wake-up fit
/// in it.
const HANDOVER_SLACK: u32 = 50;

/// A `runtime.max_wait_ms` below this turns pacing off.
const MIN_MAX_WAIT: Duration = Duration::from_millis(8);

/// Most windows one hand-over gathers while the source sleeps at least
/// [`SLOW_SLEEP`] between reads (up to 2,500 messages per second) and the
/// scoring thread has nothing queued: it scores them in calls of
/// `runtime.max_batch` back to back, woken once. With hand-overs of
/// [`WINDOWS_PER_SEND`] it was woken 31 times a second at 2,000 windows
/// per second, and each wake-up costs more than a call made at once after
/// another (docs/low-rate.md §3). At higher rates hand-overs stay at
/// [`WINDOWS_PER_SEND`]: there windows gather fast, and waiting for 256
/// raised the median latency at half the maximum load by 6 to 9 ms.
pub(super) const SLOW_HANDOVER: usize = 256;

/// Sleeps this long or longer mark a rate at which hand-overs gather
/// [`SLOW_HANDOVER`] windows.
const SLOW_SLEEP: Duration = Duration::from_millis(20);

/// Counts what the source read since it last rested and decides whether,
/// and how long, it sleeps now.
#[derive(Debug)]
pub(super) struct IntakePace {
    tick: Duration,
    /// Messages read since the last rest.
    read: u32,
    /// Messages read since `since`, the start of the current rate window.
    counted: u32,
    since: Option<Instant>,
    /// Messages per second over the last rate window ([`RATE_WINDOW`]).
    rate: Option<f64>,
    /// When the source last found the broker had nothing more ready: what
    /// it reads later reached the socket after this.
    drained: Option<Instant>,
    /// How long gathered windows may wait: `max_wait` less
    /// [`HANDOVER_SLACK`].
    wait: Duration,
    /// Acknowledgements wait for journal commits (sync_pacer.rs).
    journaled: bool,
    /// Acknowledgements were written since the last rest: those of every
    /// commit under way, or without a journal those of what was read.
    acked: bool,
}

impl IntakePace {
    /// Pacing for a micro-batching wait of `max_wait` (a tick of half of
    /// it; off below [`MIN_MAX_WAIT`]); `journaled` when acknowledgements
    /// wait for journal commits.
    pub(super) fn new(max_wait: Duration, journaled: bool) -> Self {
        Self {
            tick: if max_wait < MIN_MAX_WAIT {
                Duration::ZERO
            } else {
                max_wait - max_wait / TICK_SLACK
            },
            read: 0,
            counted: 0,
            since: None,
            rate: None,
            drained: None,
            wait: max_wait - max_wait / HANDOVER_SLACK,
            journaled,
            acked: false,
        }
    }

    /// When windows first gathered at `now` are due at scoring, for a
    /// micro-batching wait of `max_wait` from their messages reaching the
    /// socket: those messages arrived after the source last found it
    /// empty, and at most a tick before `now` (a sleep is never longer).
    /// After a tick's sleep that is 5 ms (a fiftieth of 250) after the
    /// read, before the next sleep ends: the read's windows go at its rest.
    /// [`HANDOVER_SLACK`] of the wait is left for the hand-over itself.
    pub(super) fn handover_at(&self, now: Instant) -> Instant {
        let arrived = now.checked_sub(self.tick).unwrap_or(now);
        self.drained.map_or(arrived, |d| d.max(arrived)) + self.wait
    }

    /// How many gathered windows go to scoring at once, before the first
    /// falls due: [`SLOW_HANDOVER`] at a rate whose sleeps last
    /// [`SLOW_SLEEP`] or more while `scoring_idle` (nothing queued for the
    /// scoring thread, so the queue stays bounded), else
    /// [`WINDOWS_PER_SEND`].
    pub(super) fn handover_size(&self, scoring_idle: bool) -> usize {
        let slow = self.paced_sleep().is_some_and(|s| s >= SLOW_SLEEP);
        if slow && scoring_idle {
            SLOW_HANDOVER
        } else {
            WINDOWS_PER_SEND
        }
    }

    /// A message was read.
    pub(super) fn read(&mut self) {
        self.read = self.read.saturating_add(1);
        self.counted = self.counted.saturating_add(1);
    }

    /// How long a sleep lasts at most; zero with pacing off.
    pub(super) fn tick(&self) -> Duration {
        self.tick
    }

    /// How many messages arrive during `sleep` at the rate of the last
    /// second (none known: 0), for the sync pacer to tell whether the
    /// broker held some back. A sleep under half a tick predicts none: what
    /// the broker holds back then waits one more short sleep at most, and
    /// judging short sleeps by their count committed at nearly every one
    /// (docs/low-rate.md §8).
    pub(super) fn expected(&self, sleep: Duration) -> usize {
        if sleep < self.tick / 2 {
            return 0;
        }
        (self.rate.unwrap_or(0.0) * sleep.as_secs_f64()).round() as usize
    }

    /// Whether the source should ask [`Self::rest`] once the broker has
    /// nothing more ready: something was read since the last rest.
    pub(super) fn after_reads(&self) -> bool {
        self.read > 0 || self.acked
    }

    /// Acknowledgements were written (those of every commit under way, or
    /// without a journal those of what was read): the source may rest, and
    /// sleep, without reading first and after a large read. What the
    /// broker sends for them waits in the socket for the next tick instead
    /// of waking the source for a read of its own (docs/low-rate.md §4).
    pub(super) fn acked(&mut self) {
        self.acked = true;
    }

    /// The broker has nothing more ready at `now`: how long to sleep, if
    /// at all; not when the journal was `committed` since the last rest,
    /// unless the acknowledgements of every commit have gone out since
    /// ([`Self::acked`]). Windows due before the sleep ends go to scoring
    /// before it.
    pub(super) fn rest(&mut self, now: Instant, committed: bool) -> Option<Duration> {
        let read = std::mem::take(&mut self.read);
        let acked = std::mem::take(&mut self.acked);
        self.drained = Some(now);
        let since = *self.since.get_or_insert(now);
        if now - since >= RATE_WINDOW {
            self.rate = Some(f64::from(self.counted) / (now - since).as_secs_f64());
            self.counted = 0;
            self.since = Some(now);
        }
        // Once the acknowledgements are out (every commit's, or a read's
        // without a journal), nothing waits for them and the broker sends
        // what it held back meanwhile.
        if (committed || read == 0 || (read >= PACE_BELOW && !self.journaled)) && !acked {
            return None;
        }
        let sleep = self.paced_sleep()?;
        (sleep >= MIN_SLEEP).then_some(sleep)
    }

    /// How long a sleep lasts at the rate of the last window: as long as
    /// [`PER_SLEEP`] messages take, at most a tick (zero with pacing off);
    /// none before a rate is known.
    fn paced_sleep(&self) -> Option<Duration> {
        let rate = self.rate?.max(1.0);
        Some(Duration::from_secs_f64(f64::from(PER_SLEEP) / rate).min(self.tick))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    /// Over a second at `per_s` messages per second, read and rested one
    /// by one; returns the clock after it.
    fn settle(p: &mut IntakePace, t: Instant, per_s: u32) -> Instant {
        let mut t = t;
        for _ in 0..=per_s {
            p.read();
            t += Duration::from_secs(1) / per_s;
            p.rest(t, false);
        }
        t
    }

    #[test]
    fn a_trickle_sleeps_a_tick() {
        let mut p = IntakePace::new(MS(100), false);
        assert_eq!(p.tick, MS(96));
        // Idle: nothing to rest after, so the source waits on the socket.
        assert!(!p.after_reads());
        // The first second has no rate to go by.
        let t = Instant::now();
        p.read();
        assert_eq!(p.rest(t, false), None);
        // 200 messages per second: 50 take 250 ms, so a tick (96 ms).
        let t = settle(&mut p, t, 200);
        p.read();
        assert_eq!(p.rest(t, false), Some(MS(96)));
        // Nothing read: wait on the socket.
        assert_eq!(p.rest(t, false), None);
        // 2,000 per second: 25 ms.
        let t = settle(&mut p, t, 2_000);
        p.read();
        let sleep = p.rest(t, false).unwrap();
        assert!(sleep.abs_diff(MS(25)) < MS(1), "{sleep:?}");
    }

    #[test]
    fn hand_overs_gather_more_windows_at_a_low_rate_into_an_idle_scoring_thread() {
        let mut p = IntakePace::new(MS(250), false);
        // No rate known yet.
        assert_eq!(p.handover_size(true), WINDOWS_PER_SEND);
        // 2,000 messages per second: 25 ms sleeps.
        settle(&mut p, Instant::now(), 2_000);
        assert_eq!(p.handover_size(true), SLOW_HANDOVER);
        // Something still queued for scoring: the queue stays bounded.
        assert_eq!(p.handover_size(false), WINDOWS_PER_SEND);
        // 5,000 per second: 10 ms sleeps.
        let mut fast = IntakePace::new(MS(250), false);
        settle(&mut fast, Instant::now(), 5_000);
        assert_eq!(fast.handover_size(true), WINDOWS_PER_SEND);
        // Pacing off (a short max_wait): as before.
        let mut off = IntakePace::new(MS(5), false);
        settle(&mut off, Instant::now(), 200);
        assert_eq!(off.handover_size(true), WINDOWS_PER_SEND);
    }

    #[test]
    fn a_tick_predicts_the_messages_of_the_rate_a_short_sleep_none() {
        let mut p = IntakePace::new(MS(250), true);
        assert_eq!(p.expected(MS(240)), 0, "no rate known yet");
        settle(&mut p, Instant::now(), 200);
        assert_eq!(p.expected(MS(240)), 48);
        assert_eq!(p.expected(MS(120)), 24);
        assert_eq!(p.expected(MS(25)), 0);
    }

    #[test]
    fn windows_are_due_max_wait_after_the_socket_was_last_found_empty() {
        let mut p = IntakePace::new(MS(250), false);
        let t = Instant::now() + MS(1_000);
        // Due 5 ms (a fiftieth) before max_wait is over.
        let wait = MS(245);
        // Nothing drained yet: the message may have waited a tick (240 ms)
        // unread.
        assert_eq!(p.handover_at(t), t - MS(240) + wait);
        // Drained at t, then a tick's sleep: what the next read brings is
        // due max_wait after t, 5 ms after that read, before the next one.
        p.read();
        p.rest(t, false);
        assert_eq!(p.handover_at(t + MS(240)), t + wait);
        // A message read at once, without a sleep: due max_wait after the
        // socket was found empty, shortly before.
        assert_eq!(p.handover_at(t + MS(3)), t + wait);
        // The source stayed busy long after it last drained: never more
        // than a tick is assumed unread.
        assert_eq!(p.handover_at(t + MS(1_000)), t + MS(760) + wait);
        // Pacing off: the full wait from now, less a fiftieth (0 of 5 ms).
        let mut fast = IntakePace::new(MS(5), false);
        fast.read();
        fast.rest(t, false);
        assert_eq!(fast.handover_at(t + MS(1)), t + MS(6) - MS(5) / 50);
    }

    #[test]
    fn once_a_commits_acknowledgements_are_out_the_source_sleeps_without_a_read() {
        let mut p = IntakePace::new(MS(250), true);
        let t = settle(&mut p, Instant::now(), 200);
        // A read, then a commit: the source waits on the socket for the
        // sync's end, which writes the acknowledgements.
        p.read();
        assert_eq!(p.rest(t, true), None);
        assert!(!p.after_reads(), "nothing read since: no rest to ask for");
        p.acked();
        // What the broker sends for them waits for the next tick.
        assert!(p.after_reads());
        assert_eq!(p.rest(t + MS(2), false), Some(MS(240)));
        // The windows read next are due from this rest, when the socket
        // was last found empty.
        p.read();
        assert_eq!(p.handover_at(t + MS(242)), t + MS(2) + MS(245));
        // The acknowledgements of a commit made since the last rest are
        // out too: the sleep does not hold them.
        p.read();
        p.acked();
        assert_eq!(p.rest(t + MS(250), true), Some(MS(240)));
        // Idle after that: the socket wakes the source.
        assert!(!p.after_reads());
    }

    #[test]
    fn a_busy_read_a_fast_rate_a_commit_or_a_short_max_wait_does_not_sleep() {
        let mut p = IntakePace::new(MS(100), false);
        let t = settle(&mut p, Instant::now(), 200);
        for _ in 0..PACE_BELOW {
            p.read();
        }
        assert_eq!(p.rest(t, false), None);
        // Unless the read's acknowledgements were just written together:
        // what the broker held back for them comes during the sleep.
        for _ in 0..PACE_BELOW {
            p.read();
        }
        p.acked();
        assert_eq!(p.rest(t, false), Some(MS(96)));
        // Acknowledgements that wait for the journal: its pacer keeps them
        // within the broker's window, so a large read is no sign of it.
        let mut journaled = IntakePace::new(MS(100), true);
        let tj = settle(&mut journaled, t, 200);
        for _ in 0..PACE_BELOW {
            journaled.read();
        }
        assert_eq!(journaled.rest(tj, false), Some(MS(96)));
        p.read();
        assert_eq!(p.rest(t, true), None);
        p.read();
        assert_eq!(p.rest(t, false), Some(MS(96)));
        // 50,000 per second: 1 ms for 50, too short.
        let t = settle(&mut p, t, 50_000);
        p.read();
        assert_eq!(p.rest(t, false), None);
        let mut fast = IntakePace::new(MS(5), false);
        assert_eq!(fast.tick, Duration::ZERO);
        let t = settle(&mut fast, t, 200);
        fast.read();
        assert_eq!(fast.rest(t, false), None);
    }
}
