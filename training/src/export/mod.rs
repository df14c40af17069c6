//! The ONNX exporter: turns a trained
//! [`NetworkSpec`](crate::model::network::NetworkSpec) plus its
//! [`ModelMetadata`](anomalyd::core::contract::ModelMetadata) into the one
//! model file the daemon loads (docs/architecture.md §4):
//! input `window [batch, C, T]`; outputs `reconstruction [batch, C, T]`,
//! `channel_error [batch, C]` and `score [batch]` computed inside the graph;
//! the metadata JSON in `metadata_props`. Opset 17, IR 8, weights as raw
//! little-endian initializers, written atomically and byte-for-byte
//! deterministically.
//!
//! Convolutions are written as 2-D ones over `[batch, C, 1, L]` (kernel
//! `[1, k]`), which ONNX Runtime runs with its blocked kernels, and each
//! transposed convolution as one stride-1 convolution plus an interleave of
//! its phases (`polyphase`), not as a `ConvTranspose` (GEMM + col2im);
//! a `ConvTranspose` only where no such convolution exists.
//!
//! Also holds [`reference_forward`], a plain-loop forward pass that checks
//! the exported graph independently of any deep-learning library.
//!
//! In the order [`build_model`] goes: `plan` (the layers chain, with the
//! activation between them), `head` (centering the input; later the score
//! head), `layers` (the network walk, with `polyphase` for transposed
//! convolutions), all written through `graph` (the builder); then `write`
//! puts the file in place. `onnx_proto` is generated.

mod build;
mod graph;
mod head;
mod layers;
pub mod onnx_proto;
mod plan;
mod polyphase;
mod reference;
mod write;

use std::path::PathBuf;

pub use build::build_model;
pub use head::normalised_weights;
pub use reference::reference_forward;
pub use write::write_model;

/// ONNX operator set the graph is written for (`ReduceMean` still takes
/// `axes` as an attribute here).
pub const OPSET_VERSION: i64 = 17;
/// ONNX IR version of the file.
pub const IR_VERSION: i64 = 8;
/// `producer_name` of the file.
pub const PRODUCER_NAME: &str = "anomalyd-train";
/// Name of the symbolic batch dimension.
pub const BATCH_DIM: &str = "batch";

/// Why a network could not be exported or a file not written.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("layer {index} ({kind}): {message}")]
    Layer {
        index: usize,
        kind: &'static str,
        message: String,
    },
    #[error("network: {0}")]
    Network(String),
    #[error("metadata does not match the network: {0}")]
    Metadata(String),
    #[error("reference forward pass: {0}")]
    Input(String),
    #[error("cannot write model file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests;
