//! What a model file says about itself: its metadata alone (even from a
//! file the daemon refuses), and the full description `anomalyd
//! inspect-model` prints.

use std::path::Path;

use super::check::{FileDigest, file_digest, metadata_of};
use super::runtime::environment;
use super::session::{open_session, read_model_bytes};
use super::{LoadedModel, RuntimeError, RuntimeOptions};
use crate::core::contract::{ErrorDistribution, ModelMetadata};

/// Reads the metadata of a model file (CPU session, no graph checks), e.g.
/// to show what a refused file claims to be.
///
/// # Errors
/// The runtime cannot be loaded, the file cannot be read or parsed, or its
/// metadata is missing or invalid.
pub fn read_metadata(path: &Path) -> Result<ModelMetadata, RuntimeError> {
    let env = environment(None)?;
    let bytes = read_model_bytes(path)?;
    let (session, _) = open_session(&env, path, &bytes, &RuntimeOptions::cpu())?;
    metadata_of(&session, path)
}

/// Human-readable description of a model file for `anomalyd inspect-model`:
/// metadata summary, graph input/outputs, file size and SHA-256.
///
/// # Errors
/// As [`LoadedModel::load`] (a file that does not match its metadata is
/// refused with the mismatch), or the file cannot be read for hashing.
pub fn describe_model(path: &Path, opts: &RuntimeOptions) -> Result<String, RuntimeError> {
    let model = LoadedModel::load(path, opts)?;
    let FileDigest { size, sha256: sha } =
        file_digest(path).map_err(|source| RuntimeError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    let m = &model.metadata;
    let mut s = String::new();
    let mut line = |l: String| {
        s.push_str(&l);
        s.push('\n');
    };
    line(format!("file:        {}", path.display()));
    line(format!("size:        {size} bytes"));
    line(format!("sha256:      {sha}"));
    line(format!(
        "model:       {} version {} ({})",
        m.name, m.version, m.arch
    ));
    line(format!("schema:      {}", m.schema_version));
    line(format!(
        "channels:    {} [{}]",
        m.num_channels(),
        m.channels.join(", ")
    ));
    line(format!(
        "sampling:    period {} ms, window {} frames, stride {} frames",
        m.sample_period_ms, m.window, m.stride
    ));
    line(format!(
        "normaliser:  mean [{}], std [{}]",
        join_f32(&m.normaliser.mean),
        join_f32(&m.normaliser.std)
    ));
    if !m.normaliser.constant_channels.is_empty() {
        line(format!(
            "             constant in training: [{}]",
            m.normaliser.constant_channels.join(", ")
        ));
    }
    line(format!(
        "score:       {}, channel weights [{}]",
        m.score.kind,
        join_f32(&m.score.channel_weights)
    ));
    line(format!(
        "threshold:   {} ({}, quantile {}, factor {}{})",
        m.threshold.value,
        m.threshold.method,
        m.threshold.quantile,
        m.threshold.factor,
        m.threshold
            .target_far
            .map_or_else(String::new, |a| format!(", target FAR {a}"))
    ));
    line(format!(
        "errors:      {}",
        match m.error_distribution {
            ErrorDistribution::Gamma { shape, rate } =>
                format!("gamma(shape {shape}, rate {rate})"),
            ErrorDistribution::LogNormal { location, scale } =>
                format!("log-normal(location {location}, scale {scale})"),
        }
    ));
    line(format!(
        "detector:    raise after {}, clear after {}, clear ratio {}",
        m.detector.raise_after, m.detector.clear_after, m.detector.clear_ratio
    ));
    let tr = &m.training;
    line(format!(
        "training:    {} rows, {} train / {} validation windows, {} epochs (best {}), seed {}",
        tr.rows, tr.train_windows, tr.validation_windows, tr.epochs_run, tr.best_epoch, tr.seed
    ));
    line(format!(
        "             final loss train {} / validation {}",
        tr.train_loss
            .last()
            .map_or_else(|| "-".to_owned(), f32::to_string),
        tr.validation_loss
            .last()
            .map_or_else(|| "-".to_owned(), f32::to_string)
    ));
    line(format!(
        "             created {} by trainer {}, data sha256 {}",
        tr.created, tr.trainer_version, tr.data_fingerprint
    ));
    if !tr.hyperparameters.is_empty() {
        let hp: Vec<String> = tr
            .hyperparameters
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        line(format!("             hyperparameters {}", hp.join(" ")));
    }
    line(format!("provider:    {}", model.provider));
    line("graph:".to_owned());
    s.push_str(&model.describe_io());
    Ok(s)
}

fn join_f32(v: &[f32]) -> String {
    v.iter().map(f32::to_string).collect::<Vec<_>>().join(", ")
}
