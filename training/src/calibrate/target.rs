//! The threshold for a target false-alarm rate (docs/far-calibration.md):
//! the share of normal rows the detector flags is bounded by the tail of
//! an *alarm statistic* of the held-out validation scores, and that tail is
//! estimated by a peaks-over-threshold fit (generalised Pareto, as in SPOT,
//! Siffer et al. 2017) where the target lies beyond the data.
//!
//! The detector (`anomalyd::core::Detector`) stays in alarm only while one
//! of its last `clear_after` smoothed scores is at or above `threshold x
//! clear_ratio`: otherwise it would have cleared. So with `m_t` the largest
//! smoothed score over the last `clear_after` windows,
//! `P(alarm) <= P(m >= clear_ratio x threshold)`; the threshold is the
//! `1 - target` quantile of `m` divided by `clear_ratio` (§2). The check is
//! the daemon's own detector replayed over the same windows (§3).

use std::sync::Arc;

use anomalyd::core::contract::DetectorDefaults;
use anomalyd::core::{Detector, DetectorSettings};
use serde::Serialize;

use super::{CalibrateError, quantile};

/// `metadata.threshold.method` of a threshold calibrated to a target FAR.
pub const TARGET_FAR_METHOD: &str = "target-far";

/// The trainer's default target: 1 % of normal rows flagged.
pub const DEFAULT_TARGET_FAR: f64 = 0.01;

/// The tail is fitted to the alarm statistics above this quantile of them.
pub const TAIL_LEVEL: f64 = 0.8;

/// Fewest exceedances a tail fit takes; below, the largest value is used.
pub const MIN_EXCEEDANCES: usize = 5;

/// The generalised Pareto shape is kept in [-0.5, 0.5]: the range where
/// the probability-weighted-moment fit is valid, and no wilder
/// extrapolation than a tail that heavy from a few dozen values.
pub const SHAPE_LIMIT: f64 = 0.5;

/// A generalised Pareto fit of the values above `u`:
/// `P(X > z) = (exceedances / n) (1 + shape (z - u) / scale)^(-1 / shape)`
/// for `z >= u` (the exponential tail for shape 0).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TailFit {
    pub u: f64,
    pub scale: f64,
    pub shape: f64,
    pub exceedances: usize,
    pub n: usize,
}

impl TailFit {
    /// Fits the values of `sorted` (ascending) above their `level` quantile
    /// by probability-weighted moments (Hosking & Wallis 1987), the shape
    /// clamped to ±[`SHAPE_LIMIT`]. `None` with fewer than
    /// [`MIN_EXCEEDANCES`] values above, or no spread among them.
    pub fn fit(sorted: &[f64], level: f64) -> Option<Self> {
        let u = quantile(sorted, level);
        let y: Vec<f64> = sorted.iter().filter(|v| **v > u).map(|v| v - u).collect();
        let k = y.len();
        if k < MIN_EXCEEDANCES || !u.is_finite() {
            return None;
        }
        // a0 = E[Y], a1 = E[Y (1 - F(Y))], with the plotting position
        // (k - i) / (k - 1) for the i-th smallest (1-based) of k.
        let a0 = y.iter().sum::<f64>() / k as f64;
        let a1 = y
            .iter()
            .enumerate()
            .map(|(i, v)| v * (k - 1 - i) as f64 / (k - 1) as f64)
            .sum::<f64>()
            / k as f64;
        let d = a0 - 2.0 * a1;
        if !(a0 > 0.0 && d > 0.0) {
            return None;
        }
        let shape = (2.0 - a0 / d).clamp(-SHAPE_LIMIT, SHAPE_LIMIT);
        // Scale from the mean for the clamped shape: E[Y] = scale / (1 - shape).
        let scale = a0 * (1.0 - shape);
        (scale > 0.0 && scale.is_finite()).then_some(Self {
            u,
            scale,
            shape,
            exceedances: k,
            n: sorted.len(),
        })
    }

    /// `P(X > z)` under the fit (for `z` below `u`, the share above `u`).
    pub fn exceedance(&self, z: f64) -> f64 {
        let p_u = self.exceedances as f64 / self.n as f64;
        let y = (z - self.u).max(0.0);
        if self.shape.abs() < 1e-9 {
            return p_u * (-y / self.scale).exp();
        }
        let base = 1.0 + self.shape * y / self.scale;
        if base <= 0.0 {
            0.0
        } else {
            p_u * base.powf(-1.0 / self.shape)
        }
    }

    /// The `z` with `P(X > z) = alpha`, for `alpha` below the share above `u`.
    pub fn quantile_above(&self, alpha: f64) -> f64 {
        let r = alpha * self.n as f64 / self.exceedances as f64;
        if self.shape.abs() < 1e-9 {
            self.u - self.scale * r.ln()
        } else {
            self.u + self.scale / self.shape * (r.powf(-self.shape) - 1.0)
        }
    }
}

/// How the `1 - target` quantile of the alarm statistic was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum QuantileSource {
    /// Inside the data: the split-conformal order statistic.
    Conformal,
    /// Beyond the data: the generalised Pareto tail.
    TailFit,
    /// Beyond the data and too few values for a tail: the largest value.
    Largest,
}

/// The result of calibrating to a target FAR, for the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FarCalibration {
    pub target_far: f64,
    pub threshold: f64,
    pub source: QuantileSource,
    pub tail: Option<TailFit>,
    /// The bound on the share of normal windows in alarm that the tail
    /// estimate gives at the threshold: the target, unless the largest
    /// value had to stand in.
    pub expected_far: f64,
    /// Share of the calibration windows the daemon's detector, replayed over
    /// them with this threshold, spends in alarm.
    pub observed_far: f64,
    /// Share of calibration windows whose smoothed score is above the threshold.
    pub observed_exceedance: f64,
    pub windows: usize,
}

/// The alarm statistic: per window, the largest smoothed score over it and
/// the `span - 1` windows before it from the same source.
pub fn alarm_statistic(smoothed: &[f32], sources: &[usize], span: usize) -> Vec<f64> {
    let span = span.max(1);
    (0..smoothed.len())
        .map(|i| {
            let source = sources.get(i).copied().unwrap_or(0);
            let from = (i + 1).saturating_sub(span);
            smoothed[from..=i]
                .iter()
                .enumerate()
                .filter(|(k, _)| sources.get(from + k).copied().unwrap_or(0) == source)
                .map(|(_, v)| f64::from(*v))
                // NaN when every score is NaN (f64::max skips NaN).
                .fold(f64::NAN, f64::max)
        })
        .collect()
}

/// The threshold whose expected false-alarm rate is `target` (see the
/// module docs), from the validation windows' raw `scores` (the detector's
/// input), their `sources` and the detector's defaults; the result also
/// says how the daemon's detector fares on these windows.
///
/// # Errors
/// `target` outside (0, 1), or no finite score.
pub fn threshold_for_far(
    scores: &[f32],
    sources: &[usize],
    detector: &DetectorDefaults,
    target: f64,
) -> Result<FarCalibration, CalibrateError> {
    if !(target > 0.0 && target < 1.0) {
        return Err(CalibrateError::Invalid {
            name: "--target-far",
            expected: "in (0, 1)",
            value: target.to_string(),
        });
    }
    let smoothed = super::smooth(scores, sources, detector.smoothing);
    let mut m: Vec<f64> = alarm_statistic(&smoothed, sources, detector.clear_after as usize)
        .into_iter()
        .filter(|v| v.is_finite())
        .collect();
    if m.is_empty() {
        return Err(CalibrateError::NoScores);
    }
    m.sort_by(f64::total_cmp);
    let n = m.len();
    // Split-conformal: the ceil((n + 1)(1 - target))-th smallest of n
    // held-out values is exceeded by a new one with probability <= target.
    let rank = ((n + 1) as f64 * (1.0 - target)).ceil() as usize;
    let tail = TailFit::fit(&m, TAIL_LEVEL);
    let (level, source, expected) = if rank <= n {
        (m[rank.max(1) - 1], QuantileSource::Conformal, target)
    } else if let Some(t) = tail.filter(|t| target < t.exceedances as f64 / n as f64) {
        (t.quantile_above(target), QuantileSource::TailFit, target)
    } else {
        (m[n - 1], QuantileSource::Largest, 1.0 / (n + 1) as f64)
    };
    let ratio = f64::from(detector.clear_ratio);
    let threshold = if level > 0.0 { level / ratio } else { 1e-9 };
    let observed_far = simulate_far(scores, sources, threshold as f32, detector);
    let observed_exceedance = smoothed
        .iter()
        .filter(|s| f64::from(**s) > threshold)
        .count() as f64
        / smoothed.len() as f64;
    Ok(FarCalibration {
        target_far: target,
        threshold,
        source,
        tail,
        expected_far: expected,
        observed_far,
        observed_exceedance,
        windows: n,
    })
}

/// Share of windows the daemon's detector (smoothing, raise and clear
/// rules from `detector`, `threshold`) spends in alarm over `scores`, one
/// fresh detector per source.
pub fn simulate_far(
    scores: &[f32],
    sources: &[usize],
    threshold: f32,
    detector: &DetectorDefaults,
) -> f64 {
    if scores.is_empty() {
        return 0.0;
    }
    let settings = DetectorSettings::from_model(threshold, detector);
    let channels: Arc<[String]> = Arc::from(Vec::new());
    let mut current: Option<(usize, Detector)> = None;
    let mut alarms = 0usize;
    for (i, &s) in scores.iter().enumerate() {
        let source = sources.get(i).copied().unwrap_or(0);
        let d = match &mut current {
            Some((src, d)) if *src == source => d,
            _ => {
                let mut d = Detector::new(settings, channels.clone());
                d.set_smoothing(detector.smoothing);
                &mut current.insert((source, d)).1
            }
        };
        if d.observe(i as i64, s, &[]).anomalous {
            alarms += 1;
        }
    }
    alarms as f64 / scores.len() as f64
}

#[cfg(test)]
mod tests;
