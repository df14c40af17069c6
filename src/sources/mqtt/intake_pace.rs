//! Paced reading of the broker at low rates (docs/low-rate.md §4).
//!
//! At a few hundred messages per second spread evenly, each message
//! arrives alone, and waiting for it in `epoll_wait` wakes the source's
//! thread once per message: the context switch costs more than the
//! message's decoding, windowing and journaling together. So once the
//! source has read what the broker had ready, and that was only a few
//! messages, its thread sleeps for one pace tick instead of waiting on the
//! socket: messages arriving meanwhile queue in the socket, nobody is woken
//! for them, and the next read takes them all at once.
//!
//! - The source runs on a thread of its own (docs/architecture.md §7), so
//!   the sleep holds up nothing but its own session.
//! - A tick is half of `runtime.max_wait_ms` (50 ms by default), and
//!   the source hands windows to scoring a tick earlier than it did, so a
//!   window still reaches the scoring thread within `max_wait_ms` of its
//!   message reaching the socket.
//! - When a read found [`PACE_BELOW`] messages or more, the source does not
//!   sleep: at that rate each wake-up already serves several messages, and
//!   a broker that lets few messages wait for their acknowledgement
//!   (mosquitto's `max_inflight_messages` is 20 by default) must not be
//!   held up by our sleeping.
//! - When nothing came since the last sleep the source waits on the socket
//!   as before: an idle daemon is not woken by ticks.

use std::time::Duration;

use tokio::time::Instant;

/// Reads of this many messages or more are not followed by a sleep.
pub(super) const PACE_BELOW: usize = 16;

/// A `runtime.max_wait_ms` below this turns pacing off (ticks under 2 ms
/// would save nothing).
const MIN_MAX_WAIT: Duration = Duration::from_millis(8);

/// Counts what the source read since it last slept and decides whether it
/// sleeps now.
#[derive(Debug)]
pub(super) struct IntakePace {
    tick: Duration,
    read: usize,
    /// Acknowledgements were handed to the ack task since the last rest.
    acking: bool,
}

impl IntakePace {
    /// Pacing for a micro-batching wait of `max_wait` (off below 8 ms).
    pub(super) fn new(max_wait: Duration) -> Self {
        let tick = if max_wait >= MIN_MAX_WAIT {
            max_wait / 2
        } else {
            Duration::ZERO
        };
        Self {
            tick,
            read: 0,
            acking: false,
        }
    }

    /// How long a message may sit in the socket before it is read: the
    /// source hands windows to scoring this much before `max_wait`.
    pub(super) fn tick(&self) -> Duration {
        self.tick
    }

    /// A message was read.
    pub(super) fn read(&mut self) {
        self.read += 1;
    }

    /// The journal was committed since the last rest.
    pub(super) fn acking(&mut self) {
        self.acking = true;
    }

    /// Whether the source should ask [`Self::rest`] once the broker has
    /// nothing more ready: something was read since the last rest.
    pub(super) fn after_reads(&self) -> bool {
        self.read > 0
    }

    /// The broker has nothing more ready at `now`: how long to sleep, if
    /// at all; never past `due`, when gathered windows are due at scoring.
    /// Not after a commit: its acknowledgements go out as soon as its sync
    /// is done, so the broker's window of unacknowledged messages keeps
    /// moving.
    pub(super) fn rest(&mut self, now: Instant, due: Option<Instant>) -> Option<Duration> {
        let read = std::mem::take(&mut self.read);
        let acking = std::mem::take(&mut self.acking);
        if read == 0 || read >= PACE_BELOW || acking || self.tick.is_zero() {
            return None;
        }
        let until = due.map_or(now + self.tick, |d| d.min(now + self.tick));
        Some(until.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn a_trickle_sleeps_half_of_max_wait_but_not_past_due_windows() {
        let now = Instant::now();
        let mut p = IntakePace::new(MS(100));
        assert_eq!(p.tick(), MS(50));
        // Idle: nothing to rest after, so the source waits on the socket.
        assert!(!p.after_reads());
        p.read();
        p.read();
        assert!(p.after_reads());
        assert_eq!(p.rest(now, None), Some(MS(50)));
        assert!(!p.after_reads());
        assert_eq!(p.rest(now, None), None);
        p.read();
        assert_eq!(p.rest(now, Some(now + MS(20))), Some(MS(20)));
        p.read();
        assert_eq!(p.rest(now, Some(now + MS(80))), Some(MS(50)));
        p.read();
        assert_eq!(p.rest(now + MS(5), Some(now)), Some(Duration::ZERO));
    }

    #[test]
    fn a_busy_read_a_commit_or_a_short_max_wait_does_not_sleep() {
        let now = Instant::now();
        let mut p = IntakePace::new(MS(100));
        for _ in 0..PACE_BELOW {
            p.read();
        }
        assert_eq!(p.rest(now, None), None);
        p.read();
        assert_eq!(p.rest(now, None), Some(MS(50)));
        p.read();
        p.acking();
        assert_eq!(p.rest(now, None), None);
        p.read();
        assert_eq!(p.rest(now, None), Some(MS(50)));
        let mut fast = IntakePace::new(MS(5));
        assert_eq!(fast.tick(), Duration::ZERO);
        fast.read();
        assert_eq!(fast.rest(now, None), None);
    }
}
