//! Loading the configured models (with their pins and channel checks) at
//! start-up, on `check-config` and on reload, and describing them for the
//! metrics and the status page.

use std::path::Path;

use super::DaemonError;
use crate::config::{Config, Settings};
use crate::model::{LoadedModel, RuntimeOptions};
use crate::pipeline::{ModelSlot, NamedModel};

/// Checks the model file's SHA-256 against the pinned value, if any.
fn check_pin(path: &Path, expected: Option<&str>) -> Result<(), String> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let actual = crate::model::file_digest(path)
        .map_err(|e| format!("cannot read: {e}"))?
        .sha256;
    if actual.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(format!(
            "SHA-256 is {actual}, config pins {expected}: refusing the file"
        ))
    }
}

/// Loads and validates every configured model.
///
/// # Errors
/// The first model that fails to load, pin-check or validate.
pub fn load_models(cfg: &Config) -> Result<Vec<NamedModel>, DaemonError> {
    let opts = RuntimeOptions {
        library_path: cfg.runtime.library_path.clone(),
        execution_provider: cfg.runtime.execution_provider,
        intra_threads: cfg.runtime.intra_threads,
    };
    let mut out = Vec::new();
    for mc in &cfg.models {
        let err = |message: String| DaemonError::Model {
            name: mc.name.clone(),
            path: mc.path.clone(),
            message,
        };
        check_pin(&mc.path, mc.sha256.as_deref()).map_err(err)?;
        let model = LoadedModel::load(&mc.path, &opts).map_err(|e| err(e.to_string()))?;
        if let Some(expected) = &mc.channels {
            let missing: Vec<&String> = expected
                .iter()
                .filter(|c| !model.metadata.channels.contains(c))
                .collect();
            if !missing.is_empty() {
                return Err(err(format!(
                    "the config names channel(s) {missing:?} that the model lacks (it has {:?})",
                    model.metadata.channels
                )));
            }
        }
        tracing::info!(
            model = %mc.name,
            version = %model.metadata.version,
            provider = %model.provider,
            channels = model.metadata.channels.len(),
            window = model.metadata.window,
            threshold = model.metadata.threshold.value,
            "model loaded"
        );
        out.push(NamedModel {
            name: mc.name.as_str().into(),
            model,
        });
    }
    Ok(out)
}

pub(super) fn slots_of(models: &[NamedModel]) -> Vec<ModelSlot> {
    models
        .iter()
        .map(|m| ModelSlot::new(&m.name, m.model.metadata.clone()))
        .collect()
}

pub(super) fn model_status(models: &[NamedModel]) -> Vec<crate::ops::status::ModelStatus> {
    models
        .iter()
        .map(|m| crate::ops::status::ModelStatus {
            name: m.name.to_string(),
            version: m.model.metadata.version.clone(),
            provider: m.model.provider.to_string(),
            channels: m.model.metadata.channels.clone(),
            window: m.model.metadata.window,
        })
        .collect()
}

pub(super) fn model_info(models: &[NamedModel]) -> Vec<(String, String, String)> {
    models
        .iter()
        .map(|m| {
            (
                m.name.to_string(),
                m.model.metadata.version.clone(),
                m.model.provider.to_string(),
            )
        })
        .collect()
}

/// Reads the config again and loads its models, off the async runtime.
/// Nothing changes unless both succeed.
pub(super) async fn reload_config(
    path: &Path,
    current: &Config,
) -> Result<(Settings, Vec<NamedModel>), DaemonError> {
    let new = Config::load(path)?;
    if new.config.runtime.library_path != current.runtime.library_path {
        tracing::warn!("runtime.library_path changed: it takes effect at the next restart");
    }
    let c = new.config.clone();
    let models = tokio::task::spawn_blocking(move || load_models(&c))
        .await
        .map_err(|e| DaemonError::Thread(std::io::Error::other(e.to_string())))??;
    Ok((new, models))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_mismatch_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("m.onnx");
        std::fs::write(&f, b"abc").unwrap();
        // sha256("abc")
        let good = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert!(check_pin(&f, Some(good)).is_ok());
        assert!(check_pin(&f, None).is_ok());
        let err = check_pin(&f, Some(&"0".repeat(64))).unwrap_err();
        assert!(err.contains("refusing") && err.contains(good), "{err}");
    }
}
