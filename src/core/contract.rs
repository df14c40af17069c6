//! The model file contract: the JSON document stored in the ONNX file's
//! `metadata_props` under key [`METADATA_KEY`]. The trainer writes it, the
//! daemon reads and validates it; both use this one type so they cannot drift.

use serde::{Deserialize, Serialize};

/// Key of the metadata entry in the ONNX `metadata_props`.
pub const METADATA_KEY: &str = "anomalyd";
/// Version of the JSON layout below. Bump on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;
/// Name of the graph input.
pub const INPUT_WINDOW: &str = "window";
/// Name of the reconstruction output `[batch, C, T]`.
pub const OUTPUT_RECONSTRUCTION: &str = "reconstruction";
/// Name of the per-window score output `[batch]`.
pub const OUTPUT_SCORE: &str = "score";
/// Name of the per-channel error output `[batch, C]`.
pub const OUTPUT_CHANNEL_ERROR: &str = "channel_error";

/// Errors found while reading or checking model metadata.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("model metadata is not valid JSON for schema {SCHEMA_VERSION}: {0}")]
    Json(#[from] serde_json::Error),
    #[error(
        "model metadata schema_version {found} is not supported (this build reads {SCHEMA_VERSION})"
    )]
    Schema { found: u32 },
    #[error("model metadata is inconsistent: {0}")]
    Invalid(String),
}

/// Everything the daemon needs to use a model, stored inside the model file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelMetadata {
    pub schema_version: u32,
    /// Model name, written as the `model` tag of every output point.
    pub name: String,
    /// Model version (free text, e.g. `2026-11-27.1`); logged on load and reload.
    pub version: String,
    /// Channel names in the graph's input order.
    pub channels: Vec<String>,
    /// Frame period of the aligner, in milliseconds.
    pub sample_period_ms: u64,
    /// Window length T in frames.
    pub window: usize,
    /// Frames between two scored windows.
    pub stride: usize,
    /// Network architecture, for humans (`conv` or `dense`).
    pub arch: String,
    /// Written as `normalizer` (the key other tools read, e.g. the reference
    /// Python stack); `normaliser` is accepted from older files.
    #[serde(rename = "normalizer", alias = "normaliser")]
    pub normaliser: NormaliserParams,
    pub score: ScoreDefinition,
    pub threshold: ThresholdSpec,
    pub error_distribution: ErrorDistribution,
    pub detector: DetectorDefaults,
    pub training: TrainingSummary,
}

/// Per-channel z-score parameters, fitted on the training rows only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormaliserParams {
    pub mean: Vec<f32>,
    /// Standard deviations; a channel that was constant in training is stored
    /// with std 1.0 and listed in `constant_channels`.
    pub std: Vec<f32>,
    #[serde(default)]
    pub constant_channels: Vec<String>,
    /// Smallest and largest finite value per channel in the training rows,
    /// for the `out_of_range` alarm; empty in files written before they
    /// were recorded (those still load).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub min: Vec<f32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub max: Vec<f32>,
}

/// How the graph turns a reconstruction into the `score` output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreDefinition {
    /// `<aggregation>_<error>`, written by the trainer, for humans and tools
    /// (the daemon reads the graph's outputs, whatever the kind). With `x`
    /// the window (centered channels minus their window mean) and `r` its
    /// reconstruction, `channel_error[c]` is, by error:
    /// `mse`: `mean_t (x[c,t] - r[c,t])^2`;
    /// `recent_bias`: `(mean over the last recent_frames t of x[c,t] - r[c,t])^2`;
    /// `recent_mse`: `mean over the last recent_frames t of (x[c,t] - r[c,t])^2`;
    /// and `score`, by aggregation:
    /// `weighted`: `sum_c w[c] * channel_error[c] / sum_c w[c]`;
    /// `weighted_max`: `max_c w[c] * channel_error[c]`
    /// (`w` = `channel_weights`). Files written before the other kinds
    /// existed all say `weighted_mse`.
    pub kind: String,
    pub channel_weights: Vec<f32>,
    /// `recent_bias`, `recent_mse`: how many of the window's last frames
    /// they average.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recent_frames: Option<usize>,
    /// Channels the graph centers (subtracts their mean over the window)
    /// before the network and the error: they score on their shape within
    /// the window, not their level.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub centered_channels: Vec<String>,
}

/// The alert threshold on the score and how it was chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdSpec {
    pub value: f32,
    /// `quantile*factor` (a quantile of the smoothed validation scores
    /// times a factor) or `target-far` (docs/far-calibration.md §2).
    pub method: String,
    pub quantile: f64,
    pub factor: f64,
    /// `target-far`: the share of normal rows the detector is meant to
    /// flag, which the threshold was calibrated to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_far: Option<f64>,
}

/// Distribution fitted to the validation scores (with `statrs`), used to turn
/// a score into an anomaly probability (the fitted CDF at the score).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "snake_case", deny_unknown_fields)]
pub enum ErrorDistribution {
    /// Gamma with shape and rate.
    Gamma { shape: f64, rate: f64 },
    /// Log-normal with location and scale of `ln(score)`.
    LogNormal { location: f64, scale: f64 },
}

/// Alert state machine defaults; config may override them per asset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorDefaults {
    pub raise_after: u32,
    pub clear_after: u32,
    pub clear_ratio: f32,
    /// Weight of the newest window in the exponentially weighted moving
    /// average of the score that the detector compares with the threshold
    /// (1 = no smoothing, the default for files that predate the field).
    #[serde(default = "no_smoothing")]
    pub smoothing: f32,
}

fn no_smoothing() -> f32 {
    1.0
}

/// Provenance of the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingSummary {
    pub rows: usize,
    pub train_windows: usize,
    pub validation_windows: usize,
    pub epochs_run: usize,
    pub best_epoch: usize,
    pub train_loss: Vec<f32>,
    pub validation_loss: Vec<f32>,
    pub seed: u64,
    /// SHA-256 of the training values (hex).
    pub data_fingerprint: String,
    /// RFC 3339 creation time.
    pub created: String,
    pub trainer_version: String,
    /// Every hyper-parameter the trainer used, by name.
    pub hyperparameters: serde_json::Map<String, serde_json::Value>,
}

impl ModelMetadata {
    /// Parses the metadata JSON and checks it for internal consistency.
    ///
    /// # Errors
    /// Malformed JSON, an unsupported schema version, or inconsistent fields.
    pub fn from_json(text: &str) -> Result<Self, MetadataError> {
        // Look at the version first so an old daemon says "schema" rather
        // than "unknown field" for a newer file.
        #[derive(Deserialize)]
        struct Probe {
            schema_version: u32,
        }
        let probe: Probe = serde_json::from_str(text)?;
        if probe.schema_version != SCHEMA_VERSION {
            return Err(MetadataError::Schema {
                found: probe.schema_version,
            });
        }
        let meta: Self = serde_json::from_str(text)?;
        meta.validate()?;
        Ok(meta)
    }

    /// Serialises to the JSON stored in the model file.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("metadata is always serialisable")
    }

    /// Number of channels C.
    pub fn num_channels(&self) -> usize {
        self.channels.len()
    }

    /// Checks the fields against each other.
    ///
    /// # Errors
    /// Names the first inconsistent field.
    pub fn validate(&self) -> Result<(), MetadataError> {
        let c = self.channels.len();
        let bad = |m: String| Err(MetadataError::Invalid(m));
        if c == 0 {
            return bad("channels is empty".into());
        }
        let mut seen = std::collections::HashSet::new();
        for ch in &self.channels {
            if !seen.insert(ch.as_str()) {
                return bad(format!("channel {ch:?} is listed twice"));
            }
        }
        if self.window < 2 {
            return bad(format!("window is {}, must be at least 2", self.window));
        }
        if self.stride == 0 {
            return bad("stride is 0".into());
        }
        if self.sample_period_ms == 0 {
            return bad("sample_period_ms is 0".into());
        }
        for (name, len) in [
            ("normaliser.mean", self.normaliser.mean.len()),
            ("normaliser.std", self.normaliser.std.len()),
            ("score.channel_weights", self.score.channel_weights.len()),
        ] {
            if len != c {
                return bad(format!("{name} has {len} entries for {c} channels"));
            }
        }
        let n = &self.normaliser;
        if (!n.min.is_empty() || !n.max.is_empty()) && (n.min.len() != c || n.max.len() != c) {
            return bad(format!(
                "normaliser.min/max have {}/{} entries for {c} channels",
                n.min.len(),
                n.max.len()
            ));
        }
        if let Some(i) = self
            .normaliser
            .std
            .iter()
            .position(|s| !s.is_finite() || *s <= 0.0)
        {
            return bad(format!(
                "normaliser.std for channel {:?} is {}",
                self.channels[i], self.normaliser.std[i]
            ));
        }
        if self.normaliser.mean.iter().any(|m| !m.is_finite()) {
            return bad("normaliser.mean holds a non-finite value".into());
        }
        if self
            .score
            .channel_weights
            .iter()
            .any(|w| !w.is_finite() || *w < 0.0)
            || self.score.channel_weights.iter().sum::<f32>() <= 0.0
        {
            return bad("score.channel_weights must be finite, >= 0 and not all 0".into());
        }
        if !self.threshold.value.is_finite() || self.threshold.value <= 0.0 {
            return bad(format!("threshold.value is {}", self.threshold.value));
        }
        if let Some(a) = self.threshold.target_far
            && !(a > 0.0 && a < 1.0)
        {
            return bad(format!("threshold.target_far is {a}, must be in (0, 1)"));
        }
        let d = &self.detector;
        if d.raise_after == 0 || d.clear_after == 0 {
            return bad("detector.raise_after and clear_after must be at least 1".into());
        }
        if !(d.smoothing > 0.0 && d.smoothing <= 1.0) {
            return bad(format!(
                "detector.smoothing is {}, must be in (0, 1]",
                d.smoothing
            ));
        }
        if !(d.clear_ratio > 0.0 && d.clear_ratio <= 1.0) {
            return bad(format!(
                "detector.clear_ratio is {}, must be in (0, 1]",
                d.clear_ratio
            ));
        }
        match self.error_distribution {
            ErrorDistribution::Gamma { shape, rate }
                if !(shape > 0.0 && rate > 0.0 && shape.is_finite() && rate.is_finite()) =>
            {
                bad(format!("gamma distribution shape {shape} rate {rate}"))
            }
            ErrorDistribution::LogNormal { location, scale }
                if !(location.is_finite() && scale > 0.0 && scale.is_finite()) =>
            {
                bad(format!(
                    "log-normal distribution location {location} scale {scale}"
                ))
            }
            _ => Ok(()),
        }
    }
}

impl ErrorDistribution {
    /// Mean of the fitted distribution: the typical score of a normal window.
    pub fn mean(&self) -> f64 {
        match *self {
            ErrorDistribution::Gamma { shape, rate } => shape / rate,
            ErrorDistribution::LogNormal { location, scale } => {
                (location + scale * scale / 2.0).exp()
            }
        }
    }

    /// Probability that a normal window scores at most `score`: the fitted
    /// CDF. Near 1 means the score is unusual for this model.
    pub fn probability(&self, score: f64) -> f64 {
        use statrs::distribution::{ContinuousCDF, Gamma, LogNormal};
        if !score.is_finite() {
            return if score > 0.0 { 1.0 } else { 0.0 };
        }
        if score <= 0.0 {
            return 0.0;
        }
        match *self {
            ErrorDistribution::Gamma { shape, rate } => Gamma::new(shape, rate)
                .map(|d| d.cdf(score))
                .unwrap_or(f64::NAN),
            ErrorDistribution::LogNormal { location, scale } => LogNormal::new(location, scale)
                .map(|d| d.cdf(score))
                .unwrap_or(f64::NAN),
        }
    }
}

#[cfg(test)]
pub(crate) fn sample_metadata() -> ModelMetadata {
    ModelMetadata {
        schema_version: SCHEMA_VERSION,
        name: "pump".into(),
        version: "1".into(),
        channels: vec!["a".into(), "b".into()],
        sample_period_ms: 1000,
        window: 8,
        stride: 1,
        arch: "conv".into(),
        normaliser: NormaliserParams {
            mean: vec![1.0, 2.0],
            std: vec![0.5, 1.0],
            constant_channels: vec![],
            min: vec![],
            max: vec![],
        },
        score: ScoreDefinition {
            kind: "weighted_mse".into(),
            channel_weights: vec![1.0, 1.0],
            recent_frames: None,
            centered_channels: vec![],
        },
        threshold: ThresholdSpec {
            value: 0.5,
            method: "quantile*factor".into(),
            quantile: 0.99,
            factor: 1.5,
            target_far: None,
        },
        error_distribution: ErrorDistribution::Gamma {
            shape: 2.0,
            rate: 10.0,
        },
        detector: DetectorDefaults {
            raise_after: 3,
            clear_after: 5,
            clear_ratio: 0.8,
            smoothing: 1.0,
        },
        training: TrainingSummary {
            rows: 100,
            train_windows: 70,
            validation_windows: 20,
            epochs_run: 3,
            best_epoch: 2,
            train_loss: vec![1.0, 0.5, 0.4],
            validation_loss: vec![1.1, 0.6, 0.7],
            seed: 7,
            data_fingerprint: "00".into(),
            created: "2026-11-27T00:00:00Z".into(),
            trainer_version: "0.1.0".into(),
            hyperparameters: serde_json::Map::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json() {
        let m = sample_metadata();
        let back = ModelMetadata::from_json(&m.to_json()).unwrap();
        assert_eq!(m, back);
    }

    #[test]
    fn normalizer_key_is_written_and_both_spellings_read() {
        let m = sample_metadata();
        let json = m.to_json();
        assert!(json.contains("\"normalizer\"") && !json.contains("\"normaliser\""));
        let old = json.replace("\"normalizer\"", "\"normaliser\"");
        assert_eq!(ModelMetadata::from_json(&old).unwrap(), m);
    }

    #[test]
    fn refuses_other_schema_version() {
        let mut m = sample_metadata();
        m.schema_version = 99;
        let err = ModelMetadata::from_json(&serde_json::to_string(&m).unwrap()).unwrap_err();
        assert!(err.to_string().contains("schema_version 99"), "{err}");
    }

    #[test]
    fn files_without_smoothing_recent_frames_or_centering_still_load() {
        let mut v: serde_json::Value = serde_json::to_value(sample_metadata()).unwrap();
        v["detector"].as_object_mut().unwrap().remove("smoothing");
        let m = ModelMetadata::from_json(&v.to_string()).unwrap();
        assert_eq!(m.detector.smoothing, 1.0);
        assert_eq!(m.score.recent_frames, None);
        assert!(m.score.centered_channels.is_empty());
        let mut bad = sample_metadata();
        bad.detector.smoothing = 0.0;
        let err = ModelMetadata::from_json(&bad.to_json()).unwrap_err();
        assert!(err.to_string().contains("detector.smoothing"), "{err}");
    }

    #[test]
    fn target_far_is_written_only_when_set_and_checked() {
        let mut m = sample_metadata();
        assert!(!m.to_json().contains("target_far"));
        m.threshold.method = "target-far".into();
        m.threshold.target_far = Some(0.01);
        let back = ModelMetadata::from_json(&m.to_json()).unwrap();
        assert_eq!(back.threshold.target_far, Some(0.01));
        m.threshold.target_far = Some(1.5);
        let e = ModelMetadata::from_json(&m.to_json()).unwrap_err();
        assert!(e.to_string().contains("threshold.target_far"), "{e}");
    }

    #[test]
    fn refuses_unknown_fields_and_mismatched_lengths() {
        let mut v: serde_json::Value = serde_json::to_value(sample_metadata()).unwrap();
        v["surprise"] = 1.into();
        assert!(ModelMetadata::from_json(&v.to_string()).is_err());

        let mut m = sample_metadata();
        m.normaliser.std.pop();
        let err = ModelMetadata::from_json(&m.to_json()).unwrap_err();
        assert!(
            err.to_string()
                .contains("normaliser.std has 1 entries for 2 channels"),
            "{err}"
        );

        let mut m = sample_metadata();
        m.normaliser.std[1] = 0.0;
        let err = ModelMetadata::from_json(&m.to_json()).unwrap_err();
        assert!(err.to_string().contains("\"b\""), "{err}");
    }

    #[test]
    fn probability_is_the_fitted_cdf() {
        let d = ErrorDistribution::Gamma {
            shape: 1.0,
            rate: 2.0,
        };
        // Gamma(1, rate 2) is Exp(2): CDF(x) = 1 - e^{-2x}.
        let p = d.probability(0.5);
        assert!((p - (1.0 - (-1.0f64).exp())).abs() < 1e-9, "{p}");
        assert_eq!(d.probability(-1.0), 0.0);
        assert_eq!(d.probability(f64::INFINITY), 1.0);
        let ln = ErrorDistribution::LogNormal {
            location: 0.0,
            scale: 1.0,
        };
        assert!((ln.probability(1.0) - 0.5).abs() < 1e-9);
    }
}
