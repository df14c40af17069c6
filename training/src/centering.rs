//! Window centering: which channels the model sees and scores by their
//! shape within each window rather than by their level.
//!
//! Slow process variables (temperatures, levels) wander: their level after a
//! few minutes of training data is no guide to their level an hour later,
//! and an autoencoder that scores levels calls every such drift an anomaly.
//! For a centered channel the exported graph subtracts the channel's mean
//! over the window before the network and before the error, so the model
//! reconstructs, and scores, how the channel moves within the window; a
//! level shift in it no longer counts, a change in its dynamics still does.
//!
//! `auto` centers a channel whose level wanders: its *level ratio* on the
//! training windows (normalised), the standard deviation of its per-window
//! means over the mean of its within-window standard deviations, is above
//! `--centering-ratio`. A noisy channel around a steady level has a ratio
//! near `1/sqrt(T)`; one whose level moves more between windows than it
//! varies within one has a ratio above 1.
//!
//! A wandering level is still worth scoring when training saw its whole
//! range, as in a long log that covers every operating point. When the
//! validation part (the last, held-out windows of each input) spans at
//! least [`MIN_VALIDATION_SPANS`] windows, it decides: a wandering channel is
//! centered only if its *drift*, the share of validation windows whose mean
//! lies outside the range of the training windows' means, is above
//! `--centering-drift`. A shorter validation part says too little about
//! where the level goes next, and the level ratio alone decides.

use serde::Serialize;

use crate::data::WindowSet;

/// Default of `--centering-ratio`: center channels whose level moves more
/// between windows than the channel varies within one.
pub const DEFAULT_RATIO: f64 = 1.0;

/// Default of `--centering-drift`: with a long enough validation part,
/// center a wandering channel only if its level has left the training range
/// in most validation windows.
pub const DEFAULT_DRIFT: f64 = 0.5;

/// The drift test needs a validation part at least this many windows long
/// (`MIN_VALIDATION_SPANS * T` validation windows at stride 1).
pub const MIN_VALIDATION_SPANS: usize = 10;

/// Which channels to center.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Centering {
    /// Channels whose level wanders (level ratio above `--centering-ratio`)
    /// and, given a long validation part, has drifted out of the training
    /// range there (drift above `--centering-drift`).
    #[default]
    Auto,
    /// None: every channel is scored on its level too.
    None,
    /// Every channel.
    All,
}

/// Per-channel level ratio of `windows` (`[n, C, T]`, channel-major): the
/// population standard deviation of the window means over the mean
/// within-window standard deviation. A channel constant within every window
/// gets `f64::INFINITY` if its level moves, 0 if it does not.
pub fn level_ratios(windows: &WindowSet, channels: usize, window: usize) -> Vec<f64> {
    let n = windows.len();
    let mut ratios = Vec::with_capacity(channels);
    if n == 0 || channels == 0 || window == 0 {
        return vec![0.0; channels];
    }
    for c in 0..channels {
        let mut means = Vec::with_capacity(n);
        let mut within = 0.0f64;
        for w in windows.data.chunks_exact(channels * window) {
            let xs = &w[c * window..(c + 1) * window];
            let mean = xs.iter().map(|v| f64::from(*v)).sum::<f64>() / window as f64;
            let var = xs
                .iter()
                .map(|v| (f64::from(*v) - mean).powi(2))
                .sum::<f64>()
                / window as f64;
            means.push(mean);
            within += var.sqrt() / n as f64;
        }
        let grand = means.iter().sum::<f64>() / n as f64;
        let between = (means.iter().map(|m| (m - grand).powi(2)).sum::<f64>() / n as f64).sqrt();
        ratios.push(if within > 0.0 {
            between / within
        } else if between > 0.0 {
            f64::INFINITY
        } else {
            0.0
        });
    }
    ratios
}

/// Per-channel drift: the share of `validation` windows whose mean lies
/// outside the `[min, max]` of the `train` windows' means; `None` when the
/// validation part is shorter than [`MIN_VALIDATION_SPANS`] windows' span
/// or either set is empty.
pub fn drifts(
    train: &WindowSet,
    validation: &WindowSet,
    channels: usize,
    window: usize,
) -> Option<Vec<f64>> {
    if train.is_empty()
        || validation.len() < MIN_VALIDATION_SPANS * window
        || channels == 0
        || window == 0
    {
        return None;
    }
    let means = |set: &WindowSet, c: usize| -> Vec<f64> {
        set.data
            .chunks_exact(channels * window)
            .map(|w| {
                w[c * window..(c + 1) * window]
                    .iter()
                    .map(|v| f64::from(*v))
                    .sum::<f64>()
                    / window as f64
            })
            .collect()
    };
    Some(
        (0..channels)
            .map(|c| {
                let (lo, hi) = means(train, c)
                    .into_iter()
                    .fold((f64::MAX, f64::MIN), |(lo, hi), m| (lo.min(m), hi.max(m)));
                let val = means(validation, c);
                val.iter().filter(|m| **m < lo || **m > hi).count() as f64 / val.len() as f64
            })
            .collect(),
    )
}

/// The channels to center, from the mode, the level ratios, the drifts
/// (`None`: validation too short to judge) and their thresholds.
pub fn choose(
    mode: Centering,
    ratios: &[f64],
    drifts: Option<&[f64]>,
    ratio_threshold: f64,
    drift_threshold: f64,
) -> Vec<bool> {
    match mode {
        Centering::None => vec![false; ratios.len()],
        Centering::All => vec![true; ratios.len()],
        Centering::Auto => ratios
            .iter()
            .enumerate()
            .map(|(c, r)| {
                *r > ratio_threshold
                    && drifts.is_none_or(|d| d.get(c).is_some_and(|d| *d > drift_threshold))
            })
            .collect(),
    }
}

/// Subtracts each centered channel's mean over the window, in place, from
/// every window of `data` (`[n, C, T]`), as the exported graph does.
pub fn center_windows(data: &mut [f32], channels: usize, window: usize, centered: &[bool]) {
    if !centered.iter().any(|b| *b) || channels == 0 || window == 0 {
        return;
    }
    for w in data.chunks_exact_mut(channels * window) {
        for (c, xs) in w.chunks_exact_mut(window).enumerate() {
            if centered.get(c).copied().unwrap_or(false) {
                let mean = xs.iter().map(|v| f64::from(*v)).sum::<f64>() / window as f64;
                for v in xs.iter_mut() {
                    *v = (f64::from(*v) - mean) as f32;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(windows: &[Vec<f32>]) -> WindowSet {
        WindowSet {
            data: windows.concat(),
            end_ts: (0..windows.len() as i64).collect(),
            source: vec![0; windows.len()],
        }
    }

    #[test]
    fn level_ratio_separates_drift_from_noise() {
        // 2 channels, T = 4: channel 0 alternates around a steady level,
        // channel 1 is nearly flat within a window but its level climbs.
        let windows: Vec<Vec<f32>> = (0..10)
            .map(|i| {
                let level = i as f32;
                vec![
                    1.0,
                    -1.0,
                    1.0,
                    -1.0, // noise, mean 0, within std 1
                    level,
                    level + 0.1,
                    level,
                    level + 0.1, // drift, within std 0.05
                ]
            })
            .collect();
        let r = level_ratios(&set(&windows), 2, 4);
        assert!(r[0].abs() < 1e-12, "{r:?}");
        // std of 0.05..9.05 in steps of 1 = sqrt(8.25); within std 0.05.
        assert!((r[1] - 8.25f64.sqrt() / 0.05).abs() < 1e-3, "{r:?}");
        // No drift figures (short validation): the ratio decides.
        assert_eq!(
            choose(Centering::Auto, &r, None, 1.0, 0.5),
            vec![false, true]
        );
        assert_eq!(
            choose(Centering::None, &r, None, 1.0, 0.5),
            vec![false, false]
        );
        assert_eq!(choose(Centering::All, &r, None, 1.0, 0.5), vec![true, true]);
        // With them, a wandering level that stayed in range is kept.
        let kept = choose(Centering::Auto, &r, Some(&[0.9, 0.2]), 1.0, 0.5);
        assert_eq!(kept, vec![false, false]);
        let moved = choose(Centering::Auto, &r, Some(&[0.9, 0.8]), 1.0, 0.5);
        assert_eq!(moved, vec![false, true]);
    }

    #[test]
    fn drift_is_the_share_of_validation_windows_outside_the_training_range() {
        // T = 1 so that 10 validation windows are enough to judge.
        let train = set(&[vec![0.0, 5.0], vec![1.0, 6.0], vec![2.0, 7.0]]);
        let val: Vec<Vec<f32>> = (0..10)
            .map(|i| vec![1.0, if i < 7 { 9.0 } else { 6.5 }])
            .collect();
        let d = drifts(&train, &set(&val), 2, 1).unwrap();
        assert_eq!(d, vec![0.0, 0.7]);
        assert_eq!(drifts(&train, &set(&val[..9]), 2, 1), None);
    }

    #[test]
    fn constant_channels_have_defined_ratios() {
        let steady = vec![vec![2.0f32; 4], vec![2.0; 4]];
        assert_eq!(level_ratios(&set(&steady), 1, 4), vec![0.0]);
        let stepping = vec![vec![2.0f32; 4], vec![3.0; 4]];
        assert_eq!(level_ratios(&set(&stepping), 1, 4), vec![f64::INFINITY]);
        assert_eq!(level_ratios(&WindowSet::default(), 2, 4), vec![0.0, 0.0]);
    }

    #[test]
    fn centering_subtracts_the_window_mean_of_chosen_channels_only() {
        let mut data = vec![1.0, 2.0, 3.0, 5.0, 5.0, 8.0];
        center_windows(&mut data, 2, 3, &[false, true]);
        assert_eq!(data, vec![1.0, 2.0, 3.0, -1.0, -1.0, 2.0]);
        // Idempotent: a centered window stays as it is.
        let again = data.clone();
        center_windows(&mut data, 2, 3, &[false, true]);
        assert_eq!(data, again);
    }
}
