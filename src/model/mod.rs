//! ONNX Runtime: loads the shared library once per process, opens a model
//! file as a session, checks the file against the model file contract
//! ([`crate::core::contract`]: names, element types and shapes of the graph's
//! input and outputs, and the metadata JSON), and scores batches of windows.
//!
//! One thread owns a [`LoadedModel`] (the daemon's inference thread, the
//! trainer's parity check, `anomalyd inspect-model`): ONNX Runtime's `run`
//! needs `&mut` access to the session.

mod check;
mod inspect;
mod runtime;
mod session;
mod telemetry;

use std::path::PathBuf;

pub use self::check::{FileDigest, file_digest};
pub use self::inspect::{describe_model, read_metadata};
pub use self::runtime::{ActiveProvider, DEV_LIBRARY_FILE, RuntimeOptions, init_runtime};
pub use self::session::{BatchOutput, LoadedModel};
pub use self::telemetry::opt_out_of_telemetry;
pub use crate::core::execution_provider::ExecutionProvider;

/// Errors of the runtime wrapper. Each carries the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot load the ONNX Runtime library; tried {}", format_tried(.tried))]
    Library {
        /// Every candidate path with the reason it was not used.
        tried: Vec<(PathBuf, String)>,
    },
    #[error("cannot start ONNX Runtime (library {library}): {message}")]
    Environment { library: PathBuf, message: String },
    #[error("cannot read model file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model file {path} is not a valid ONNX model: {message}")]
    Load { path: PathBuf, message: String },
    #[error("model file {path}: {message}")]
    Provider { path: PathBuf, message: String },
    #[error("model file {path} has unusable anomalyd metadata: {message}")]
    Metadata { path: PathBuf, message: String },
    #[error("model file {path} does not match its metadata: {message}")]
    Graph { path: PathBuf, message: String },
    #[error("model {path}: bad input batch: {message}")]
    Input { path: PathBuf, message: String },
    #[error("model {path}: inference failed: {message}")]
    Run { path: PathBuf, message: String },
}

fn format_tried(tried: &[(PathBuf, String)]) -> String {
    if tried.is_empty() {
        return "no candidate paths".to_owned();
    }
    tried
        .iter()
        .map(|(p, why)| format!("{} ({why})", p.display()))
        .collect::<Vec<_>>()
        .join("; ")
}
