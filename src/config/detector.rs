//! `[detector]`: fleet-wide defaults of the detector's opt-in threshold
//! adaptation, and the check of those keys and of their `[[assets]]`
//! overrides (docs/far-calibration.md §4). Off by default.

use serde::{Deserialize, Serialize};

use super::{AssetRule, Problem};

/// `[detector]`: threshold adaptation for every asset unless its
/// `[[assets]]` rule says otherwise.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorConfig {
    /// Half-life, in hours of data, of the slow moving average of the
    /// smoothed score that the threshold follows while no alert is open;
    /// 0 = off (the calibrated threshold, always).
    #[serde(default)]
    pub adapt_half_life_h: f64,
    /// The adapted threshold stays at or below this many times the
    /// calibrated one.
    #[serde(default = "default_max_factor")]
    pub adapt_max_factor: f32,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            adapt_half_life_h: 0.0,
            adapt_max_factor: default_max_factor(),
        }
    }
}

fn default_max_factor() -> f32 {
    2.0
}

impl DetectorConfig {
    /// Half-life (hours) and cap for an asset: its rule's, else these.
    pub fn adaptation_for(&self, rule: Option<&AssetRule>) -> (f64, f32) {
        (
            rule.and_then(|r| r.adapt_half_life_h)
                .unwrap_or(self.adapt_half_life_h),
            rule.and_then(|r| r.adapt_max_factor)
                .unwrap_or(self.adapt_max_factor),
        )
    }

    pub(super) fn check(&self, assets: &[AssetRule], p: &mut Vec<Problem>) {
        let mut bad = |key: String, message: String| p.push(Problem { key, message });
        let half_life = |key: String, v: f64, bad: &mut dyn FnMut(String, String)| {
            if !(v.is_finite() && v >= 0.0) {
                bad(key, "must be >= 0 (0 = off)".into());
            }
        };
        let factor = |key: String, v: f32, bad: &mut dyn FnMut(String, String)| {
            if !(v.is_finite() && v >= 1.0) {
                bad(key, "must be >= 1".into());
            }
        };
        half_life(
            "detector.adapt_half_life_h".into(),
            self.adapt_half_life_h,
            &mut bad,
        );
        factor(
            "detector.adapt_max_factor".into(),
            self.adapt_max_factor,
            &mut bad,
        );
        for (i, r) in assets.iter().enumerate() {
            if let Some(v) = r.adapt_half_life_h {
                half_life(format!("assets[{i}].adapt_half_life_h"), v, &mut bad);
            }
            if let Some(v) = r.adapt_max_factor {
                factor(format!("assets[{i}].adapt_max_factor"), v, &mut bad);
            }
        }
    }
}
