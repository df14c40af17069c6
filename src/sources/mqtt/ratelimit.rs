//! A rate limit for recurring warnings: a flood of bad messages logs one
//! line per reason and interval, with the count of those it suppressed
//! (each one is still counted in the metrics).

use std::time::{Duration, Instant};

use crate::core::reading::DropReason;

/// Logs a recurring problem at most once per interval, with a count of
/// what was suppressed in between.
#[derive(Debug)]
pub struct RateLimitedLog {
    interval: Duration,
    last: [Option<Instant>; DropReason::ALL.len()],
    suppressed: [u64; DropReason::ALL.len()],
}

impl RateLimitedLog {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: [None; DropReason::ALL.len()],
            suppressed: [0; DropReason::ALL.len()],
        }
    }

    /// Logs `message` for `reason` unless one was logged recently.
    pub fn warn(&mut self, reason: DropReason, message: impl FnOnce() -> String) -> bool {
        let i = reason as usize;
        let now = Instant::now();
        if self.last[i].is_some_and(|t| now.duration_since(t) < self.interval) {
            self.suppressed[i] += 1;
            return false;
        }
        let suppressed = std::mem::take(&mut self.suppressed[i]);
        tracing::warn!(reason = reason.as_str(), suppressed, "{}", message());
        self.last[i] = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limited_log_suppresses_and_counts() {
        let mut l = RateLimitedLog::new(Duration::from_secs(60));
        assert!(l.warn(DropReason::BadPayload, || "a".into()));
        assert!(!l.warn(DropReason::BadPayload, || "b".into()));
        assert!(!l.warn(DropReason::BadPayload, || "c".into()));
        assert_eq!(l.suppressed[DropReason::BadPayload as usize], 2);
        // Another reason is limited separately.
        assert!(l.warn(DropReason::UnknownTopic, || "d".into()));
    }
}
