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
//! `auto` decides per channel from the training windows (normalised): the
//! channel's *level ratio* is the standard deviation of its per-window means
//! divided by the mean of its within-window standard deviations. A noisy
//! channel around a steady level has a ratio near `1/sqrt(T)`; a channel
//! whose level wanders more between windows than it varies within one has a
//! ratio above 1 and is centered.

use serde::Serialize;

use crate::data::WindowSet;

/// Default of `--centering-ratio`: center channels whose level moves more
/// between windows than the channel varies within one.
pub const DEFAULT_RATIO: f64 = 1.0;

/// Which channels to center.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Centering {
    /// Channels whose level ratio in the training windows exceeds
    /// `--centering-ratio`.
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

/// The channels to center, from the mode and the level ratios.
pub fn choose(mode: Centering, ratios: &[f64], threshold: f64) -> Vec<bool> {
    match mode {
        Centering::None => vec![false; ratios.len()],
        Centering::All => vec![true; ratios.len()],
        Centering::Auto => ratios.iter().map(|r| *r > threshold).collect(),
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
        assert_eq!(choose(Centering::Auto, &r, 1.0), vec![false, true]);
        assert_eq!(choose(Centering::None, &r, 1.0), vec![false, false]);
        assert_eq!(choose(Centering::All, &r, 1.0), vec![true, true]);
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
