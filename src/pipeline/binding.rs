//! Asset-to-model binding, the only implementation: which model scores an
//! asset (first matching `[[assets]]` rule, then the default model) and
//! with which detector settings (the model's calibrated defaults, then the
//! rule's overrides). `run`, `replay` and reloads all bind through here.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{AlarmRule, AssetRule, Config, DetectorConfig};
use crate::core::contract::ModelMetadata;
use crate::core::detect::{Adaptation, DetectorSettings};
use crate::core::normalise::Normaliser;
use crate::core::quality::QualitySettings;

/// What the pipeline needs to know about one model.
#[derive(Debug, Clone)]
pub struct ModelSlot {
    pub name: Arc<str>,
    pub meta: Arc<ModelMetadata>,
    pub channels: Arc<[String]>,
    pub(super) normaliser: Normaliser,
    pub(super) channel_index: HashMap<String, usize>,
}

impl ModelSlot {
    pub fn new(name: &str, meta: ModelMetadata) -> Self {
        let channel_index = meta
            .channels
            .iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), i))
            .collect();
        Self {
            name: name.into(),
            normaliser: Normaliser::new(&meta.normaliser),
            channels: meta.channels.clone().into(),
            channel_index,
            meta: Arc::new(meta),
        }
    }
}

/// Which model an asset uses and its detector settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AssetBinding {
    pub asset: Arc<str>,
    pub model: Arc<str>,
    pub detector: DetectorSettings,
    pub channels: Arc<[String]>,
}

/// Resolves asset ids to models (first matching `[[assets]]` rule, then the
/// default model).
#[derive(Debug, Clone, Default)]
pub struct Binder {
    rules: Vec<AssetRule>,
    default_model: Option<String>,
    /// `[detector]`: the threshold adaptation of assets whose rule does not
    /// set it.
    detector: DetectorConfig,
}

impl Binder {
    pub fn from_config(cfg: &Config) -> Self {
        let default_model = cfg
            .default_model
            .clone()
            .or_else(|| (cfg.models.len() == 1).then(|| cfg.models[0].name.clone()));
        Self {
            rules: cfg.assets.clone(),
            default_model,
            detector: cfg.detector.clone(),
        }
    }

    /// Every asset uses `model` with its stored detector defaults.
    pub fn single(model: &str) -> Self {
        Self {
            rules: Vec::new(),
            default_model: Some(model.to_string()),
            detector: DetectorConfig::default(),
        }
    }

    /// Adds a rule in front of the others (e.g. a CLI threshold override).
    pub fn with_rule(mut self, rule: AssetRule) -> Self {
        self.rules.insert(0, rule);
        self
    }

    /// The first `[[assets]]` rule whose pattern matches `asset`.
    pub fn rule_for(&self, asset: &str) -> Option<&AssetRule> {
        self.rules.iter().find(|r| glob_match(&r.pattern, asset))
    }

    /// Name of the model `asset` is bound to: its rule's model, else the
    /// default model.
    pub fn model_for(&self, asset: &str) -> Option<&str> {
        self.rule_for(asset)
            .and_then(|r| r.model.as_deref())
            .or(self.default_model.as_deref())
    }

    pub(super) fn bind(&self, asset: &str, slots: &[ModelSlot]) -> Option<(usize, AssetBinding)> {
        let rule = self.rule_for(asset);
        let model = self.model_for(asset)?;
        let idx = slots.iter().position(|s| &*s.name == model)?;
        let slot = &slots[idx];
        let mut d = DetectorSettings::from_model(slot.meta.threshold.value, &slot.meta.detector);
        if let Some(r) = rule {
            d.threshold = r.threshold.unwrap_or(d.threshold);
            d.raise_after = r.raise_after.unwrap_or(d.raise_after);
            d.clear_after = r.clear_after.unwrap_or(d.clear_after);
            d.clear_ratio = r.clear_ratio.unwrap_or(d.clear_ratio);
        }
        // Opt-in threshold adaptation (docs/far-calibration.md §4), relative
        // to the model's typical normal score.
        let (half_life_h, max_factor) = self.detector.adaptation_for(rule);
        d.adapt = Adaptation {
            half_life_s: half_life_h * 3600.0,
            max_factor,
            reference: slot.meta.error_distribution.mean() as f32,
        };
        Some((
            idx,
            AssetBinding {
                asset: asset.into(),
                model: slot.name.clone(),
                detector: d,
                channels: slot.channels.clone(),
            },
        ))
    }
}

/// Data-quality alarm thresholds per asset: `[alerts]`, then the first
/// matching `[[alerts.rules]]` entry (docs/alerts.md §1).
#[derive(Debug, Clone, Default)]
pub struct QualityRules {
    stale_after_periods: u32,
    stuck_after_periods: u32,
    stuck_tolerance: f64,
    out_of_range_margin: f64,
    rules: Vec<AlarmRule>,
}

impl QualityRules {
    /// The rules `[alerts]` sets. [`Default`] turns every alarm off
    /// (`replay` has no clock to be silent against).
    pub fn from_config(cfg: &Config) -> Self {
        let a = &cfg.alerts;
        Self {
            stale_after_periods: a.stale_after_periods,
            stuck_after_periods: a.stuck_after_periods,
            stuck_tolerance: a.stuck_tolerance,
            out_of_range_margin: a.out_of_range_margin,
            rules: a.rules.clone(),
        }
    }

    /// The thresholds for `asset`, whose model samples every `period_ns`.
    pub fn settings_for(&self, asset: &str, period_ns: i64) -> QualitySettings {
        let rule = self.rules.iter().find(|r| glob_match(&r.pattern, asset));
        let stale = rule
            .and_then(|r| r.stale_after_periods)
            .unwrap_or(self.stale_after_periods);
        let stuck = rule
            .and_then(|r| r.stuck_after_periods)
            .unwrap_or(self.stuck_after_periods);
        QualitySettings {
            stale_after_ns: period_ns.saturating_mul(i64::from(stale)),
            stuck_after_ns: period_ns.saturating_mul(i64::from(stuck)),
            stuck_tolerance: rule
                .and_then(|r| r.stuck_tolerance)
                .unwrap_or(self.stuck_tolerance),
            out_of_range_margin: rule
                .and_then(|r| r.out_of_range_margin)
                .unwrap_or(self.out_of_range_margin),
        }
    }
}

/// Glob match with `*` (any run) and `?` (one character).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{MINIMAL, parse};

    #[test]
    fn one_model_is_the_default() {
        let c = parse(MINIMAL, &[]).unwrap();
        assert_eq!(Binder::from_config(&c).model_for("anything"), Some("pump"));
    }

    #[test]
    fn asset_rules_bind_models_first_match_wins() {
        let text = format!(
            "default_model = \"pump\"\n{MINIMAL}\n[[models]]\nname = \"fan\"\npath = \"f.onnx\"\n\
             [[assets]]\npattern = \"fan-*\"\nmodel = \"fan\"\nthreshold = 2.0\n\
             [[assets]]\npattern = \"*\"\nraise_after = 5\n"
        );
        let c = parse(&text, &[]).unwrap();
        assert_eq!(Binder::from_config(&c).model_for("fan-7"), Some("fan"));
        assert_eq!(Binder::from_config(&c).model_for("pump-1"), Some("pump"));
        assert_eq!(
            Binder::from_config(&c)
                .rule_for("pump-1")
                .unwrap()
                .raise_after,
            Some(5)
        );
        assert_eq!(
            Binder::from_config(&c).rule_for("fan-7").unwrap().threshold,
            Some(2.0)
        );
    }

    #[test]
    fn alarm_rules_scale_with_the_period_and_first_match_wins() {
        let text = format!(
            "{MINIMAL}\n[alerts]\nstale_after_periods = 5\n\
             [[alerts.rules]]\npattern = \"fan-*\"\nstale_after_periods = 0\nstuck_tolerance = 0.5\n"
        );
        let c = parse(&text, &[]).unwrap();
        let q = QualityRules::from_config(&c);
        let pump = q.settings_for("pump-1", 2_000);
        assert_eq!(pump.stale_after_ns, 10_000);
        assert_eq!(pump.stuck_after_ns, 600_000);
        let fan = q.settings_for("fan-1", 2_000);
        assert_eq!((fan.stale_after_ns, fan.stuck_tolerance), (0, 0.5));
        assert_eq!(
            QualityRules::default().settings_for("x", 1),
            QualitySettings::OFF
        );
    }

    #[test]
    fn threshold_adaptation_is_off_unless_configured_and_rules_override_it() {
        let meta = crate::core::contract::sample_metadata();
        let mean = meta.error_distribution.mean() as f32;
        let slots = [ModelSlot::new("pump", meta)];
        let adapt = |text: &str, asset: &str| {
            let c = parse(&format!("{MINIMAL}\n{text}"), &[]).unwrap();
            let (_, b) = Binder::from_config(&c).bind(asset, &slots).unwrap();
            b.detector.adapt
        };
        let off = adapt("", "pump-1");
        assert!(!off.is_on(), "{off:?}");
        let text = "[[assets]]\npattern = \"fan-*\"\nadapt_half_life_h = 0.0\n\
                    [[assets]]\npattern = \"pump-9\"\nadapt_max_factor = 3.0\n\
                    [detector]\nadapt_half_life_h = 0.5\n";
        let fleet = adapt(text, "pump-1");
        assert!(fleet.is_on());
        assert_eq!((fleet.half_life_s, fleet.max_factor), (1800.0, 2.0));
        assert_eq!(fleet.reference, mean);
        assert!(!adapt(text, "fan-1").is_on());
        let nine = adapt(text, "pump-9");
        assert_eq!((nine.half_life_s, nine.max_factor), (1800.0, 3.0));
    }

    #[test]
    fn glob_patterns() {
        assert!(glob_match("pump-*", "pump-12"));
        assert!(glob_match("*", ""));
        assert!(glob_match("p?mp", "pump"));
        assert!(!glob_match("pump-*", "fan-1"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
    }
}
