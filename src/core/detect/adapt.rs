//! Opt-in slow adaptation of an asset's threshold (docs/far-calibration.md §4):
//! while no alert is open the threshold follows a slow, time-based moving
//! average of the smoothed score, never below the calibrated threshold and
//! never above `max_factor` times it. Off by default.

/// How the threshold may follow the scores of normal operation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adaptation {
    /// Half-life of the baseline in seconds of data (timestamps, not
    /// windows); 0 turns adaptation off.
    pub half_life_s: f64,
    /// The threshold stays at or below `max_factor` x the calibrated one.
    pub max_factor: f32,
    /// The model's typical normal score (the mean of the score distribution
    /// fitted to its validation windows): where the baseline starts, and
    /// the level at which the threshold is the calibrated one.
    pub reference: f32,
}

impl Adaptation {
    /// No adaptation: the calibrated threshold, always.
    pub const OFF: Adaptation = Adaptation {
        half_life_s: 0.0,
        max_factor: 1.0,
        reference: 0.0,
    };

    /// Whether these settings move the threshold at all.
    pub fn is_on(&self) -> bool {
        self.half_life_s.is_finite()
            && self.half_life_s > 0.0
            && self.max_factor.is_finite()
            && self.max_factor > 1.0
            && self.reference.is_finite()
            && self.reference > 0.0
    }
}

impl Default for Adaptation {
    fn default() -> Self {
        Self::OFF
    }
}

/// The slow moving average of the smoothed score and the threshold it gives.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Baseline {
    /// The moving average; `None` until the first update (then it starts
    /// from the reference).
    average: Option<f32>,
    /// End time of the last window seen, frozen or not.
    last_ts: Option<i64>,
}

impl Baseline {
    /// The threshold to compare with: `threshold x clamp(average /
    /// reference, 1, max_factor)`, or `threshold` when adaptation is off.
    pub(super) fn threshold(&self, threshold: f32, a: &Adaptation) -> f32 {
        match self.average {
            Some(b) if a.is_on() => threshold * (b / a.reference).clamp(1.0, a.max_factor.max(1.0)),
            _ => threshold,
        }
    }

    /// Records the window ending at `ts`; moves the average towards `score`
    /// unless `frozen` (an alert is open, or the score is above the
    /// threshold). The weight of a window is `1 -
    /// 2^(-dt / half_life)` for the `dt` since the previous window, so the
    /// half-life is in time whatever the window rate, and the time an alert
    /// was open does not count when it clears.
    pub(super) fn observe(&mut self, ts: i64, score: f32, frozen: bool, a: &Adaptation) {
        let dt_s = self
            .last_ts
            .map_or(0.0, |prev| (ts.saturating_sub(prev)).max(0) as f64 / 1e9);
        self.last_ts = Some(ts);
        if frozen || !a.is_on() || !score.is_finite() {
            return;
        }
        let b = self.average.unwrap_or(a.reference);
        let w = 1.0 - 0.5f64.powf(dt_s / a.half_life_s);
        let next = b + (w as f32) * (score - b);
        // Bounded: outside [reference, max_factor x reference] the threshold
        // no longer moves, so neither does the average (it leaves a bound at
        // once when the scores turn).
        let cap = a.reference * a.max_factor;
        self.average = Some(next.clamp(a.reference, cap.max(a.reference)));
    }
}
