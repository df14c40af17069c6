//! Calibration on the validation windows: the scores exactly as the exported
//! graph computes them, the alert threshold, the fitted error distribution
//! and the detector defaults stored in the model.
//!
//! Score (docs/architecture.md §4/§5, `ScoreDefinition` in `anomalyd::core::contract`):
//! `channel_error[c]` is `mean_t (x[c,t] - r[c,t])^2` ([`ChannelError::Mse`])
//! or the square of the mean residual over the window's last frames
//! ([`ChannelError::RecentBias`]) or the mean squared residual over them
//! ([`ChannelError::RecentMse`]); `score` is their weighted mean or
//! weighted maximum ([`Aggregation`]). The threshold is calibrated on the
//! scores as the detector sees them: smoothed by the detector's moving
//! average ([`smooth`]), either to a target false-alarm rate ([`target`],
//! the default) or as a quantile times a factor
//! ([`quantile_factor_threshold`]).

pub mod target;

use anomalyd::core::Smoother;
use anomalyd::core::contract::{DetectorDefaults, ErrorDistribution, ThresholdSpec};

use crate::model::network::{Aggregation, ChannelError};
use serde::Serialize;
use statrs::distribution::{Continuous, ContinuousCDF, Gamma, LogNormal};

/// `metadata.threshold.method` of a quantile-times-factor threshold.
pub const THRESHOLD_METHOD: &str = "quantile*factor";

/// Below this many validation windows the threshold is a guess: warn.
pub const FEW_VALIDATION_WINDOWS: usize = 10;

/// How the trainer chooses the alert threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ThresholdRule {
    /// Calibrated so that the detector flags this share of normal rows
    /// ([`target`]).
    TargetFar(f64),
    /// A quantile of the smoothed validation scores times a factor.
    QuantileFactor { quantile: f64, factor: f64 },
}

/// Bad calibration settings.
#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    #[error("no validation scores to calibrate on")]
    NoScores,
    #[error("{name} must be {expected}, got {value}")]
    Invalid {
        name: &'static str,
        expected: &'static str,
        value: String,
    },
}

/// How the per-channel errors are weighted in the score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChannelWeighting {
    /// Every channel weighs 1.
    #[default]
    Uniform,
    /// Each channel weighs 1 / (its mean validation error), so a channel the
    /// model reconstructs well counts as much as one it reconstructs badly.
    InverseValidationError,
}

/// Per-window, per-channel errors, `[n, C]` flat, as the graph computes
/// them. (`x` and `r` hold whole windows `[n, C, T]`; the layout makes the
/// error of channel `c` in window `w` the `(w * C + c)`-th chunk of `T`
/// values.)
pub fn channel_errors(x: &[f32], r: &[f32], window: usize, kind: ChannelError) -> Vec<f32> {
    x.chunks_exact(window)
        .zip(r.chunks_exact(window))
        .map(|(xs, rs)| {
            let d = xs
                .iter()
                .zip(rs)
                .map(|(a, b)| f64::from(*a) - f64::from(*b));
            match kind {
                ChannelError::Mse => (d.map(|v| v * v).sum::<f64>() / window as f64) as f32,
                ChannelError::RecentBias { frames } => {
                    let k = frames.clamp(1, window);
                    let mean = d.skip(window - k).sum::<f64>() / k as f64;
                    (mean * mean) as f32
                }
                ChannelError::RecentMse { frames } => {
                    let k = frames.clamp(1, window);
                    (d.skip(window - k).map(|v| v * v).sum::<f64>() / k as f64) as f32
                }
            }
        })
        .collect()
}

/// Per-window scores from per-channel errors `[n, C]` and weights `[C]`:
/// the weighted mean (`sum w e / sum w`) or the weighted maximum
/// (`max w e`).
pub fn scores(channel_error: &[f32], weights: &[f32], aggregation: Aggregation) -> Vec<f32> {
    let total: f64 = weights.iter().map(|w| f64::from(*w)).sum();
    channel_error
        .chunks_exact(weights.len())
        .map(|e| {
            let weighted = e
                .iter()
                .zip(weights)
                .map(|(e, w)| f64::from(*e) * f64::from(*w));
            match aggregation {
                Aggregation::Mean => (weighted.sum::<f64>() / total) as f32,
                Aggregation::Max => weighted.fold(f64::MIN, f64::max) as f32,
            }
        })
        .collect()
}

/// The detector's moving average ([`Smoother`], the same code) applied to
/// consecutive windows: `s = alpha * score + (1 - alpha) * s`, restarted
/// at each new source (input file) so no average spans two files.
/// `alpha = 1` returns the scores unchanged.
pub fn smooth(scores: &[f32], sources: &[usize], alpha: f32) -> Vec<f32> {
    let mut smoother = Smoother::new(alpha);
    let mut current = None;
    scores
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let source = sources.get(i).copied().unwrap_or(0);
            if current != Some(source) {
                smoother.reset();
                current = Some(source);
            }
            smoother.push(s)
        })
        .collect()
}

/// Channel weights for the score, normalised to a mean of 1 (uniform is all 1).
///
/// For [`ChannelWeighting::InverseValidationError`] each channel's mean error
/// is floored at 1e-3 of the mean over channels, so a channel the model
/// reconstructs perfectly (e.g. a constant one) cannot take all the weight.
pub fn channel_weights(kind: ChannelWeighting, channel_error: &[f32], channels: usize) -> Vec<f32> {
    match kind {
        ChannelWeighting::Uniform => vec![1.0; channels],
        ChannelWeighting::InverseValidationError => {
            let n = (channel_error.len() / channels.max(1)).max(1);
            let mut mean = vec![0.0f64; channels];
            for e in channel_error.chunks_exact(channels) {
                for (m, v) in mean.iter_mut().zip(e) {
                    *m += f64::from(*v) / n as f64;
                }
            }
            let overall = mean.iter().sum::<f64>() / channels as f64;
            let floor = (overall * 1e-3).max(f64::MIN_POSITIVE);
            let inv: Vec<f64> = mean.iter().map(|m| 1.0 / m.max(floor)).collect();
            let sum: f64 = inv.iter().sum();
            inv.iter()
                .map(|w| (w * channels as f64 / sum) as f32)
                .collect()
        }
    }
}

/// Linear-interpolation quantile (type 7) of sorted data.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Goodness of fit of one candidate distribution.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FitQuality {
    pub distribution: ErrorDistribution,
    /// Kolmogorov-Smirnov statistic (smaller is better).
    pub ks: f64,
    pub log_likelihood: f64,
}

/// The calibration result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    pub threshold: ThresholdSpec,
    /// How the target false-alarm rate was met (`target-far` only).
    pub far: Option<target::FarCalibration>,
    pub distribution: ErrorDistribution,
    /// Every candidate that could be fitted; the chosen one has the smallest KS.
    pub candidates: Vec<FitQuality>,
    pub windows: usize,
    pub score_min: f64,
    pub score_median: f64,
    pub score_max: f64,
    /// Fraction of validation windows above the threshold.
    pub above_threshold: f64,
    pub warnings: Vec<String>,
}

/// The threshold `quantile(scores, q) * factor` (0 scores: 1e-9, with a
/// warning).
///
/// # Errors
/// No finite scores, `q` outside (0, 1], or `factor` not positive.
pub fn quantile_factor_threshold(
    scores: &[f32],
    q: f64,
    factor: f64,
) -> Result<(ThresholdSpec, Option<String>), CalibrateError> {
    if !(q > 0.0 && q <= 1.0) {
        return Err(CalibrateError::Invalid {
            name: "--threshold-quantile",
            expected: "in (0, 1]",
            value: q.to_string(),
        });
    }
    if !(factor.is_finite() && factor > 0.0) {
        return Err(CalibrateError::Invalid {
            name: "--threshold-factor",
            expected: "a positive number",
            value: factor.to_string(),
        });
    }
    let s = finite_sorted(scores)?;
    let mut warning = None;
    let mut value = quantile(&s, q) * factor;
    if value.is_nan() || value <= 0.0 {
        warning = Some(
            "every validation score is 0 (perfect reconstruction); threshold set to 1e-9".into(),
        );
        value = 1e-9;
    }
    Ok((
        ThresholdSpec {
            value: value as f32,
            method: THRESHOLD_METHOD.into(),
            quantile: q,
            factor,
            target_far: None,
        },
        warning,
    ))
}

/// The threshold calibrated to `target` false alarms ([`target`]) as the
/// model stores it: `quantile` is the level `1 - target` of the alarm
/// statistic, `factor` is `1 / clear_ratio`.
///
/// # Errors
/// As [`target::threshold_for_far`].
pub fn target_far_threshold(
    scores: &[f32],
    sources: &[usize],
    detector: &DetectorDefaults,
    target_far: f64,
) -> Result<(ThresholdSpec, target::FarCalibration), CalibrateError> {
    let far = target::threshold_for_far(scores, sources, detector, target_far)?;
    Ok((
        ThresholdSpec {
            value: far.threshold as f32,
            method: target::TARGET_FAR_METHOD.into(),
            quantile: 1.0 - target_far,
            factor: 1.0 / f64::from(detector.clear_ratio),
            target_far: Some(target_far),
        },
        far,
    ))
}

fn finite_sorted(scores: &[f32]) -> Result<Vec<f64>, CalibrateError> {
    let mut s: Vec<f64> = scores
        .iter()
        .map(|v| f64::from(*v))
        .filter(|v| v.is_finite())
        .collect();
    if s.is_empty() {
        return Err(CalibrateError::NoScores);
    }
    s.sort_by(f64::total_cmp);
    Ok(s)
}

/// The calibration of the smoothed validation `scores` with `threshold`
/// (from [`quantile_factor_threshold`] or [`target_far_threshold`]):
/// the share of them above it, and the error distribution.
///
/// A Gamma (method of moments) and a log-normal (maximum likelihood on
/// `ln score`) are fitted; the one with the smaller Kolmogorov-Smirnov
/// statistic is kept. With fewer than [`FEW_VALIDATION_WINDOWS`] windows a
/// warning is added; with too few distinct scores to fit anything, an
/// exponential (Gamma shape 1) with the scores' mean is used.
///
/// # Errors
/// No finite scores.
pub fn calibrate(
    scores: &[f32],
    threshold: ThresholdSpec,
    far: Option<target::FarCalibration>,
) -> Result<Calibration, CalibrateError> {
    let s = finite_sorted(scores)?;
    let mut warnings = Vec::new();
    if s.len() < FEW_VALIDATION_WINDOWS {
        warnings.push(format!(
            "only {} validation windows: the threshold is a rough guess; train on more rows or raise --validation-fraction",
            s.len()
        ));
    }
    let value = f64::from(threshold.value);

    // Scores are squared errors, hence >= 0; both families need > 0.
    let positive: Vec<f64> = s.iter().copied().filter(|v| *v > 0.0).collect();
    let mut candidates = Vec::new();
    for fitted in [fit_gamma(&positive), fit_log_normal(&positive)]
        .into_iter()
        .flatten()
    {
        candidates.extend(quality(fitted, &positive));
    }
    let distribution = match candidates.iter().min_by(|a, b| a.ks.total_cmp(&b.ks)) {
        Some(best) => best.distribution.clone(),
        None => {
            let mean = s.iter().sum::<f64>() / s.len() as f64;
            warnings.push(
                "too few distinct validation scores to fit an error distribution; using an exponential with their mean".into(),
            );
            ErrorDistribution::Gamma {
                shape: 1.0,
                rate: 1.0 / mean.max(1e-12),
            }
        }
    };
    let above = s.iter().filter(|v| **v > value).count() as f64 / s.len() as f64;
    Ok(Calibration {
        threshold,
        far,
        distribution,
        candidates,
        windows: s.len(),
        score_min: s[0],
        score_median: quantile(&s, 0.5),
        score_max: s[s.len() - 1],
        above_threshold: above,
        warnings,
    })
}

/// Detector defaults, checked as the daemon will check them.
///
/// # Errors
/// `raise_after` or `clear_after` 0, `clear_ratio` or `smoothing` outside
/// (0, 1].
pub fn detector_defaults(
    raise_after: u32,
    clear_after: u32,
    clear_ratio: f32,
    smoothing: f32,
) -> Result<DetectorDefaults, CalibrateError> {
    if !(smoothing > 0.0 && smoothing <= 1.0) {
        return Err(CalibrateError::Invalid {
            name: "--smoothing",
            expected: "in (0, 1]",
            value: smoothing.to_string(),
        });
    }
    if raise_after == 0 || clear_after == 0 {
        return Err(CalibrateError::Invalid {
            name: "--raise-after/--clear-after",
            expected: "at least 1",
            value: format!("{raise_after}/{clear_after}"),
        });
    }
    if !(clear_ratio > 0.0 && clear_ratio <= 1.0) {
        return Err(CalibrateError::Invalid {
            name: "--clear-ratio",
            expected: "in (0, 1]",
            value: clear_ratio.to_string(),
        });
    }
    Ok(DetectorDefaults {
        raise_after,
        clear_after,
        clear_ratio,
        smoothing,
    })
}

fn mean_var(v: &[f64]) -> Option<(f64, f64)> {
    if v.len() < 2 {
        return None;
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    (var > 0.0 && var.is_finite() && mean > 0.0).then_some((mean, var))
}

/// Gamma by the method of moments: shape = mean²/var, rate = mean/var.
fn fit_gamma(v: &[f64]) -> Option<ErrorDistribution> {
    let (mean, var) = mean_var(v)?;
    let shape = mean * mean / var;
    let rate = mean / var;
    Gamma::new(shape, rate)
        .ok()
        .map(|_| ErrorDistribution::Gamma { shape, rate })
}

/// Log-normal by maximum likelihood: mean and population std of `ln x`.
fn fit_log_normal(v: &[f64]) -> Option<ErrorDistribution> {
    let logs: Vec<f64> = v.iter().map(|x| x.ln()).collect();
    let n = logs.len() as f64;
    if logs.len() < 2 {
        return None;
    }
    let location = logs.iter().sum::<f64>() / n;
    let scale = (logs.iter().map(|l| (l - location).powi(2)).sum::<f64>() / n).sqrt();
    (scale > 0.0 && scale.is_finite())
        .then(|| LogNormal::new(location, scale).ok())
        .flatten()
        .map(|_| ErrorDistribution::LogNormal { location, scale })
}

/// KS statistic and log-likelihood of `d` on sorted positive data.
fn quality(d: ErrorDistribution, sorted: &[f64]) -> Option<FitQuality> {
    let at: Vec<(f64, f64)> = match d {
        ErrorDistribution::Gamma { shape, rate } => {
            let g = Gamma::new(shape, rate).ok()?;
            sorted.iter().map(|&x| (g.cdf(x), g.ln_pdf(x))).collect()
        }
        ErrorDistribution::LogNormal { location, scale } => {
            let l = LogNormal::new(location, scale).ok()?;
            sorted.iter().map(|&x| (l.cdf(x), l.ln_pdf(x))).collect()
        }
    };
    let n = sorted.len() as f64;
    let mut ks: f64 = 0.0;
    for (i, (f, _)) in at.iter().enumerate() {
        ks = ks.max(f - i as f64 / n).max((i + 1) as f64 / n - f);
    }
    Some(FitQuality {
        distribution: d,
        ks,
        log_likelihood: at.iter().map(|(_, l)| l).sum(),
    })
}

#[cfg(test)]
mod tests;
