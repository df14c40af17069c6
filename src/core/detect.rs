//! The per-asset alert state machine (docs/architecture.md §5): window scores in,
//! the anomalous/normal state and alert events out. No I/O.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::core::contract::DetectorDefaults;

mod adapt;

pub use adapt::Adaptation;
use adapt::Baseline;

/// How many channels an alert names as its top contributors.
pub const TOP_CHANNELS: usize = 3;

/// Thresholds and hysteresis of one asset's detector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorSettings {
    pub threshold: f32,
    /// Consecutive windows above `threshold` before an alert is raised.
    pub raise_after: u32,
    /// Consecutive windows below `threshold * clear_ratio` before it clears.
    pub clear_after: u32,
    pub clear_ratio: f32,
    /// Opt-in slow adaptation of the threshold ([`Adaptation::OFF`]: none).
    pub adapt: Adaptation,
}

impl DetectorSettings {
    /// Settings from the model's stored defaults and threshold.
    pub fn from_model(threshold: f32, d: &DetectorDefaults) -> Self {
        Self {
            threshold,
            raise_after: d.raise_after.max(1),
            clear_after: d.clear_after.max(1),
            clear_ratio: d.clear_ratio,
            adapt: Adaptation::OFF,
        }
    }
}

/// Whether an alert started or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertKind {
    Raised,
    Cleared,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Raised => "raised",
            AlertKind::Cleared => "cleared",
        }
    }
}

/// A state transition of one asset's detector.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertEvent {
    pub kind: AlertKind,
    /// End time of the first window of the episode above the threshold.
    pub start_ts: i64,
    /// End time of the window that caused this transition.
    pub ts: i64,
    /// Score of the window that caused this transition.
    pub score: f32,
    /// Highest score seen in the episode so far.
    pub peak: f32,
    pub threshold: f32,
    /// Channels with the largest mean error over the episode, largest first.
    pub top_channels: Vec<(String, f32)>,
}

impl AlertEvent {
    /// Seconds from the start of the episode to this event.
    pub fn duration_s(&self) -> f64 {
        (self.ts - self.start_ts) as f64 / 1e9
    }
}

/// What the detector concluded from one window.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// State after this window: true while an alert is open.
    pub anomalous: bool,
    /// The score compared with the threshold: the window's score after
    /// smoothing (see [`Detector::set_smoothing`]); the raw score when it
    /// was not finite.
    pub score: f32,
    /// The threshold the score was compared with: the calibrated one, or
    /// where adaptation has moved it.
    pub threshold: f32,
    pub alert: Option<AlertEvent>,
}

#[derive(Debug, Clone)]
struct Episode {
    start_ts: i64,
    peak: f32,
    error_sum: Vec<f64>,
    windows: u64,
}

impl Episode {
    fn new(ts: i64, channels: usize) -> Self {
        Self {
            start_ts: ts,
            peak: f32::MIN,
            error_sum: vec![0.0; channels],
            windows: 0,
        }
    }

    fn add(&mut self, score: f32, channel_error: &[f32]) {
        self.peak = self.peak.max(score);
        for (sum, e) in self.error_sum.iter_mut().zip(channel_error) {
            if e.is_finite() {
                *sum += f64::from(*e);
            }
        }
        self.windows += 1;
    }
}

/// An alert that is open (raised, not yet cleared): what must survive a
/// restart so that the alert is not raised a second time.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OpenAlert {
    pub start_ts: i64,
    pub peak: f32,
}

/// The exponentially weighted moving average of window scores that the
/// threshold is compared with: `s = alpha * score + (1 - alpha) * s`. The
/// detector smooths live scores with it and the trainer smooths validation
/// scores with it before calibrating the threshold, so the threshold is
/// chosen on exactly the numbers it is later compared with.
#[derive(Debug, Clone, Copy)]
pub struct Smoother {
    alpha: f32,
    average: Option<f32>,
}

impl Smoother {
    /// A smoother with weight `alpha` for the newest score; a value outside
    /// (0, 1] turns smoothing off (`alpha = 1`).
    pub fn new(alpha: f32) -> Self {
        let mut s = Self {
            alpha: 1.0,
            average: None,
        };
        s.set_alpha(alpha);
        s
    }

    /// Changes the weight (a model reload) and keeps the average so far.
    pub fn set_alpha(&mut self, alpha: f32) {
        self.alpha = if alpha > 0.0 && alpha <= 1.0 {
            alpha
        } else {
            1.0
        };
    }

    pub fn alpha(&self) -> f32 {
        self.alpha
    }

    /// Forgets the average: the next score starts a new one.
    pub fn reset(&mut self) {
        self.average = None;
    }

    /// Feeds one score and returns the smoothed value. A non-finite score is
    /// returned as it is and leaves the average untouched.
    pub fn push(&mut self, score: f32) -> f32 {
        if !score.is_finite() {
            return score;
        }
        let v = match self.average {
            Some(prev) if self.alpha < 1.0 => self.alpha * score + (1.0 - self.alpha) * prev,
            _ => score,
        };
        if v.is_finite() {
            self.average = Some(v);
        }
        v
    }
}

/// One asset's alert state machine.
#[derive(Debug, Clone)]
pub struct Detector {
    settings: DetectorSettings,
    channels: Arc<[String]>,
    anomalous: bool,
    /// Consecutive windows in the direction that would change the state.
    run: u32,
    /// The candidate (while normal) or open (while anomalous) episode.
    episode: Option<Episode>,
    skipped_non_finite: u64,
    /// The moving average the threshold is compared with.
    smoother: Smoother,
    /// The slow average the threshold follows when adaptation is on.
    baseline: Baseline,
}

impl Detector {
    pub fn new(settings: DetectorSettings, channels: Arc<[String]>) -> Self {
        Self {
            settings,
            channels,
            anomalous: false,
            run: 0,
            episode: None,
            skipped_non_finite: 0,
            smoother: Smoother::new(1.0),
            baseline: Baseline::default(),
        }
    }

    /// Compares an exponentially weighted moving average of the scores with
    /// the threshold instead of each window's score: `s = alpha * score +
    /// (1 - alpha) * s` (the model's `detector.smoothing`; 1 = off). A value
    /// outside (0, 1] turns smoothing off. The average so far is kept.
    pub fn set_smoothing(&mut self, alpha: f32) {
        self.smoother.set_alpha(alpha);
    }

    /// The weight of the newest score in the moving average (1 = off).
    pub fn smoothing(&self) -> f32 {
        self.smoother.alpha()
    }

    pub fn settings(&self) -> &DetectorSettings {
        &self.settings
    }

    /// Replaces the thresholds (config reload) keeping the current state.
    pub fn set_settings(&mut self, settings: DetectorSettings) {
        self.settings = settings;
    }

    /// The threshold the next score is compared with: the calibrated one,
    /// or where adaptation has moved it (docs/far-calibration.md §4).
    pub fn threshold(&self) -> f32 {
        self.baseline
            .threshold(self.settings.threshold, &self.settings.adapt)
    }

    pub fn is_anomalous(&self) -> bool {
        self.anomalous
    }

    /// Scores that were NaN or infinite and therefore ignored.
    pub fn skipped_non_finite(&self) -> u64 {
        self.skipped_non_finite
    }

    /// Marks the asset as already in an open alert (restored after a
    /// restart), so the same episode is not raised twice.
    pub fn restore_open_alert(&mut self, start_ts: i64, peak: f32) {
        let mut ep = Episode::new(start_ts, self.channels.len());
        ep.peak = peak;
        self.anomalous = true;
        self.run = 0;
        self.episode = Some(ep);
    }

    /// Start time and peak of the open alert, if any.
    pub fn open_alert(&self) -> Option<(i64, f32)> {
        if self.anomalous {
            self.episode.as_ref().map(|e| (e.start_ts, e.peak))
        } else {
            None
        }
    }

    /// Feeds the score of the window ending at `ts`.
    pub fn observe(&mut self, ts: i64, score: f32, channel_error: &[f32]) -> Decision {
        if !score.is_finite() {
            self.skipped_non_finite += 1;
            return Decision {
                anomalous: self.anomalous,
                score,
                threshold: self.threshold(),
                alert: None,
            };
        }
        let score = self.smoother.push(score);
        let s = self.settings;
        let threshold = self.threshold();
        let channels = self.channels.len();
        let was_anomalous = self.anomalous;
        let alert = if !self.anomalous {
            if score > threshold {
                self.run += 1;
                let ep = self
                    .episode
                    .get_or_insert_with(|| Episode::new(ts, channels));
                ep.add(score, channel_error);
                if self.run >= s.raise_after {
                    self.anomalous = true;
                    self.run = 0;
                    Some(self.event(AlertKind::Raised, ts, score, threshold))
                } else {
                    None
                }
            } else {
                self.run = 0;
                self.episode = None;
                None
            }
        } else {
            if let Some(ep) = self.episode.as_mut() {
                ep.add(score, channel_error);
            }
            if score < threshold * s.clear_ratio {
                self.run += 1;
                if self.run >= s.clear_after {
                    let ev = self.event(AlertKind::Cleared, ts, score, threshold);
                    self.anomalous = false;
                    self.run = 0;
                    self.episode = None;
                    Some(ev)
                } else {
                    None
                }
            } else {
                self.run = 0;
                None
            }
        };
        // Frozen while an alert is open and while the score is above the
        // threshold: a fault's onset does not lift the threshold over it.
        let frozen = was_anomalous || self.anomalous || score > threshold;
        self.baseline.observe(ts, score, frozen, &s.adapt);
        Decision {
            anomalous: self.anomalous,
            score,
            threshold,
            alert,
        }
    }

    fn event(&self, kind: AlertKind, ts: i64, score: f32, threshold: f32) -> AlertEvent {
        let (start_ts, peak, top_channels) = match &self.episode {
            Some(ep) => (ep.start_ts, ep.peak, self.top_channels(ep)),
            None => (ts, score, Vec::new()),
        };
        AlertEvent {
            kind,
            start_ts,
            ts,
            score,
            peak,
            threshold,
            top_channels,
        }
    }

    fn top_channels(&self, ep: &Episode) -> Vec<(String, f32)> {
        let n = ep.windows.max(1) as f64;
        let mut ranked: Vec<(usize, f64)> = ep
            .error_sum
            .iter()
            .enumerate()
            .map(|(i, s)| (i, s / n))
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked
            .into_iter()
            .take(TOP_CHANNELS)
            .filter_map(|(i, e)| self.channels.get(i).map(|c| (c.clone(), e as f32)))
            .collect()
    }
}

#[cfg(test)]
mod tests;
