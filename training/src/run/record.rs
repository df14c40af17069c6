//! What a run records about itself: `training.created`, the
//! hyperparameters by flag name, and for the report the sample windows and
//! the parameter count.

use anomalyd::core::Normaliser;
use anomalyd::core::timestamp::{format_rfc3339, now_ns};
use serde_json::{Map, Value, json};

use super::preflight::device_name;
use super::{SOURCE_DATE_EPOCH, TrainOptions};
use crate::calibrate::ThresholdRule;
use crate::data::Dataset;
use crate::model::autoencoder::Architecture;
use crate::model::network::{Layer, NetworkSpec};
use crate::report::SampleWindow;

/// `training.created`: `SOURCE_DATE_EPOCH` if set (reproducible files),
/// else the current time.
pub(super) fn created_now() -> String {
    let from_env = std::env::var(SOURCE_DATE_EPOCH)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .map(|s| s.saturating_mul(1_000_000_000));
    let ns = from_env.unwrap_or_else(now_ns);
    // Whole seconds: sub-second noise says nothing about a model.
    format_rfc3339(ns - ns.rem_euclid(1_000_000_000))
}

/// Every setting that shaped the model, by flag name.
pub(super) fn hyperparameters(opts: &TrainOptions, data: &Dataset) -> Map<String, Value> {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    put("arch", json!(opts.arch.name()));
    match &opts.arch {
        Architecture::Conv { filters, kernel } => {
            put("filters", json!(filters));
            put("kernel", json!(kernel));
        }
        Architecture::Dense { hidden, latent } => {
            put("hidden", json!(hidden));
            put("latent", json!(latent));
        }
    }
    put("window", json!(data.window));
    put("stride", json!(data.stride));
    put("epochs", json!(opts.train.epochs));
    put("batch_size", json!(opts.train.batch_size));
    put("learning_rate", json!(opts.train.learning_rate));
    put("optimizer", json!("adam"));
    put("loss", json!("mse"));
    put("patience", json!(opts.train.patience));
    put("dropout", json!(opts.dropout));
    put("weight_decay", short(opts.train.weight_decay));
    put(
        "clip_grad_norm",
        opts.train.clip_grad_norm.map_or(Value::Null, short),
    );
    put("batch_norm", json!(opts.batch_norm));
    put("noise_sigma", json!(opts.train.noise_sigma));
    put("validation_fraction", json!(opts.data.validation_fraction));
    put("centering", json!(opts.centering));
    put("centering_ratio", json!(opts.centering_ratio));
    put("centering_drift", json!(opts.centering_drift));
    match opts.threshold {
        ThresholdRule::TargetFar(a) => {
            put("target_far", json!(a));
            put("calibration_folds", json!(opts.calibration_folds));
            put("threshold_quantile", Value::Null);
            put("threshold_factor", Value::Null);
        }
        ThresholdRule::QuantileFactor { quantile, factor } => {
            put("target_far", Value::Null);
            put("calibration_folds", Value::Null);
            put("threshold_quantile", json!(quantile));
            put("threshold_factor", json!(factor));
        }
    }
    put("channel_weighting", json!(opts.channel_weighting));
    put("score", json!(opts.channel_error.name()));
    put(
        "score_frames",
        opts.channel_error
            .recent_frames()
            .map_or(Value::Null, |f| json!(f)),
    );
    put("score_aggregation", json!(opts.aggregation));
    put("smoothing", short(opts.smoothing));
    put("raise_after", json!(opts.raise_after));
    put("clear_after", json!(opts.clear_after));
    put("clear_ratio", short(opts.clear_ratio));
    put("name", json!(opts.name));
    put("model_version", json!(opts.model_version));
    put(
        "max_imputed_fraction",
        json!(opts.data.max_imputed_fraction),
    );
    put("sample_period_ms", json!(data.sample_period_ms));
    put(
        "sample_period_source",
        json!(if opts.data.sample_period_ms.is_some() {
            "flag"
        } else {
            "median spacing"
        }),
    );
    put(
        "rows",
        match &opts.data.rows {
            Some(r) if r.end == usize::MAX => json!(format!("{}..", r.start)),
            Some(r) => json!(format!("{}..{}", r.start, r.end)),
            None => Value::Null,
        },
    );
    put("timestamp_column", json!(opts.data.timestamp_column));
    put(
        "inputs",
        json!(
            opts.data
                .inputs
                .iter()
                .map(|i| i.describe())
                .collect::<Vec<_>>()
        ),
    );
    put("seed", json!(opts.train.seed));
    put("device", json!(device_name(opts.device)));
    m
}

/// An `f32` flag value as the user typed it (`0.8`, not `0.800000011920929`).
fn short(x: f32) -> Value {
    x.to_string()
        .parse::<f64>()
        .map_or(Value::Null, |v| json!(v))
}

/// The validation windows with the lowest, median and highest score, in
/// engineering units, for `reconstruction.png`.
pub(super) fn sample_windows(data: &Dataset, recon: &[f32], scores: &[f32]) -> Vec<SampleWindow> {
    let per_window = data.channels.len() * data.window;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    let Some(&last) = order.last() else {
        return Vec::new();
    };
    let mut picks = vec![
        ("lowest score", order[0]),
        ("median score", order[order.len() / 2]),
        ("highest score", last),
    ];
    // Fewer than three windows: show each once.
    picks.dedup_by_key(|(_, i)| *i);
    let norm = Normaliser::new(&data.normaliser);
    let mut out: Vec<SampleWindow> = Vec::new();
    for (label, i) in picks {
        let mut original = data.validation.data[i * per_window..(i + 1) * per_window].to_vec();
        let mut reconstruction = recon[i * per_window..(i + 1) * per_window].to_vec();
        norm.invert_window(&mut original, data.window);
        norm.invert_window(&mut reconstruction, data.window);
        out.push(SampleWindow {
            label: label.into(),
            score: scores[i],
            original,
            reconstruction,
        });
    }
    out
}

pub(super) fn spec_parameters(spec: &NetworkSpec) -> usize {
    spec.layers
        .iter()
        .map(|l| match l {
            Layer::Conv1d { weight, bias, .. }
            | Layer::ConvTranspose1d { weight, bias, .. }
            | Layer::Dense { weight, bias, .. } => weight.len() + bias.len(),
            Layer::Relu => 0,
        })
        .sum()
}
