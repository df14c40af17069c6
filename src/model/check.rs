//! Checks of a model file against the model file contract
//! ([`crate::core::contract`]): its metadata entry, the names, element
//! types and shapes of the graph's input and outputs, and the file's
//! SHA-256, which a config may pin.

use std::io::Read;
use std::path::Path;

use ort::session::Session;
use ort::value::{TensorElementType, ValueType};
use sha2::{Digest, Sha256};

use super::RuntimeError;
use crate::core::contract::{
    INPUT_WINDOW, METADATA_KEY, ModelMetadata, OUTPUT_CHANNEL_ERROR, OUTPUT_RECONSTRUCTION,
    OUTPUT_SCORE,
};

pub(super) fn metadata_of(session: &Session, path: &Path) -> Result<ModelMetadata, RuntimeError> {
    let err = |message: String| RuntimeError::Metadata {
        path: path.to_path_buf(),
        message,
    };
    let meta = session
        .metadata()
        .map_err(|e| err(format!("cannot read model metadata: {e}")))?;
    let json = meta.custom(METADATA_KEY).ok_or_else(|| {
        err(format!(
            "no metadata_props entry {METADATA_KEY:?} (not an anomalyd model?)"
        ))
    })?;
    ModelMetadata::from_json(&json).map_err(|e| err(e.to_string()))
}

/// Checks the graph's input and outputs against the metadata; the message
/// names the first mismatch.
pub(super) fn check_graph(session: &Session, meta: &ModelMetadata) -> Result<(), String> {
    let c = i64::try_from(meta.num_channels()).map_err(|_| "too many channels".to_owned())?;
    let t = i64::try_from(meta.window).map_err(|_| "window too long".to_owned())?;
    let inputs = session.inputs();
    let names: Vec<&str> = inputs.iter().map(|o| o.name()).collect();
    if names != [INPUT_WINDOW] {
        return Err(format!(
            "graph inputs are {names:?}, expected exactly [{INPUT_WINDOW:?}]"
        ));
    }
    check_outlet("input", INPUT_WINDOW, inputs[0].dtype(), &[c, t])?;
    for (name, dims) in [
        (OUTPUT_RECONSTRUCTION, &[c, t][..]),
        (OUTPUT_SCORE, &[][..]),
        (OUTPUT_CHANNEL_ERROR, &[c][..]),
    ] {
        let outlet = session
            .outputs()
            .iter()
            .find(|o| o.name() == name)
            .ok_or_else(|| {
                let have: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
                format!("graph has no output {name:?} (outputs: {have:?})")
            })?;
        check_outlet("output", name, outlet.dtype(), dims)?;
    }
    Ok(())
}

/// Checks one tensor: float32, rank `1 + dims.len()`, a dynamic batch
/// dimension, then exactly `dims` (`[C, T]`, `[]` or `[C]`).
fn check_outlet(kind: &str, name: &str, dtype: &ValueType, dims: &[i64]) -> Result<(), String> {
    let ValueType::Tensor { ty, shape, .. } = dtype else {
        return Err(format!(
            "{kind} {name:?} is {dtype}, expected a float32 tensor"
        ));
    };
    if *ty != TensorElementType::Float32 {
        return Err(format!(
            "{kind} {name:?} has element type {ty}, expected f32"
        ));
    }
    let expected = expected_shape_text(dims);
    if shape.len() != dims.len() + 1 {
        return Err(format!(
            "{kind} {name:?} has shape {dtype}, expected {expected}"
        ));
    }
    if shape[0] >= 0 {
        return Err(format!(
            "{kind} {name:?} has a fixed batch dimension {} (shape {dtype}); it must be dynamic",
            shape[0]
        ));
    }
    for (axis, (&got, &want)) in shape[1..].iter().zip(dims).enumerate() {
        if got != want {
            // Axis 0 after the batch is always the channel axis, axis 1 time.
            let what = if axis == 0 {
                format!("{want} channels")
            } else {
                format!("window length {want}")
            };
            return Err(format!(
                "{kind} {name:?} has shape {dtype}, expected {expected}: dimension {} is {got}, the metadata says {what}",
                axis + 1
            ));
        }
    }
    Ok(())
}

fn expected_shape_text(dims: &[i64]) -> String {
    let mut parts = vec!["batch".to_owned()];
    parts.extend(dims.iter().map(i64::to_string));
    format!("[{}]", parts.join(", "))
}

/// A model file's size and SHA-256: what `anomalyd inspect-model` shows,
/// and what a config's `sha256` pin is compared with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
}

/// Reads `path` once, in blocks, for its [`FileDigest`].
///
/// # Errors
/// The file cannot be opened or read.
pub fn file_digest(path: &Path) -> std::io::Result<FileDigest> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    let sha256 = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(FileDigest { size, sha256 })
}
