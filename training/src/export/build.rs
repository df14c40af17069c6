//! [`build_model`]: the export plan, then the graph fragments in order
//! (centering, the network walk, the reconstruction, the score head), then
//! the model proto with the metadata.

use anomalyd::core::contract::{
    INPUT_WINDOW, METADATA_KEY, ModelMetadata, OUTPUT_CHANNEL_ERROR, OUTPUT_RECONSTRUCTION,
    OUTPUT_SCORE,
};
use sha2::{Digest, Sha256};

use crate::model::network::NetworkSpec;

use super::graph::{DimSpec, GraphBuilder, dim, value_info};
use super::onnx_proto as onnx;
use super::plan::plan;
use super::{BATCH_DIM, ExportError, IR_VERSION, OPSET_VERSION, PRODUCER_NAME, head, layers};

/// Builds the ONNX model for `spec`, with `metadata` stored under
/// [`METADATA_KEY`]. Deterministic: the same inputs encode to the same bytes.
///
/// # Errors
/// [`ExportError::Network`] or [`ExportError::Layer`] (naming the layer)
/// when the layers do not chain from `[C, T]` back to `[C, T]` or weights
/// have the wrong length; [`ExportError::Metadata`] when the metadata is
/// invalid or disagrees with the network (channel count, window, channel
/// weights).
pub fn build_model(
    spec: &NetworkSpec,
    metadata: &ModelMetadata,
) -> Result<onnx::ModelProto, ExportError> {
    let steps = plan(spec)?;
    check_metadata(spec, metadata)?;
    let (c, t) = (dim(spec.channels), dim(spec.window));
    let mut g = GraphBuilder::default();
    let network_input = head::center_input(&mut g, &spec.centered, c);
    let (last, rank4) = layers::emit_layers(&mut g, &steps, &network_input);
    layers::emit_reconstruction(&mut g, &steps, &last, rank4, (c, t));
    head::emit_score(&mut g, spec, &network_input, (c, t));
    Ok(model_proto(g, spec, metadata))
}

/// The metadata is valid and describes this network: channel count,
/// window, score kind and channel weights.
fn check_metadata(spec: &NetworkSpec, metadata: &ModelMetadata) -> Result<(), ExportError> {
    metadata
        .validate()
        .map_err(|e| ExportError::Metadata(e.to_string()))?;
    if metadata.num_channels() != spec.channels {
        return Err(ExportError::Metadata(format!(
            "metadata lists {} channels, the network has {}",
            metadata.num_channels(),
            spec.channels
        )));
    }
    if metadata.window != spec.window {
        return Err(ExportError::Metadata(format!(
            "metadata window is {}, the network's is {}",
            metadata.window, spec.window
        )));
    }
    let kind = crate::model::network::score_kind(spec.channel_error, spec.aggregation);
    if metadata.score.kind != kind {
        return Err(ExportError::Metadata(format!(
            "metadata score kind {:?} differs from the network's {kind:?}",
            metadata.score.kind
        )));
    }
    if metadata.score.channel_weights != spec.channel_weights {
        return Err(ExportError::Metadata(format!(
            "metadata channel weights {:?} differ from the network's {:?}",
            metadata.score.channel_weights, spec.channel_weights
        )));
    }
    Ok(())
}

/// The graph's inputs and outputs around the built nodes, and the model
/// with its version, producer and metadata.
fn model_proto(g: GraphBuilder, spec: &NetworkSpec, metadata: &ModelMetadata) -> onnx::ModelProto {
    let (c, t) = (dim(spec.channels), dim(spec.window));
    let batch = || DimSpec::Param(BATCH_DIM);
    let graph = onnx::GraphProto {
        node: g.nodes,
        name: Some(format!("anomalyd_{}", metadata.arch)),
        initializer: g.inits,
        doc_string: Some(format!(
            "{} autoencoder over {} channels x {} frames",
            metadata.arch, spec.channels, spec.window
        )),
        input: vec![value_info(
            INPUT_WINDOW,
            &[batch(), DimSpec::Value(c), DimSpec::Value(t)],
        )],
        output: vec![
            value_info(
                OUTPUT_RECONSTRUCTION,
                &[batch(), DimSpec::Value(c), DimSpec::Value(t)],
            ),
            value_info(OUTPUT_SCORE, &[batch()]),
            value_info(OUTPUT_CHANNEL_ERROR, &[batch(), DimSpec::Value(c)]),
        ],
        ..Default::default()
    };
    onnx::ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![onnx::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET_VERSION),
        }],
        producer_name: Some(PRODUCER_NAME.to_owned()),
        producer_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        domain: Some("anomalyd".to_owned()),
        model_version: Some(model_version(&metadata.version)),
        doc_string: Some(format!(
            "anomalyd model {:?} version {:?}: window [batch, C, T] -> reconstruction, score, channel_error; metadata JSON under key {METADATA_KEY:?}",
            metadata.name, metadata.version
        )),
        graph: Some(graph),
        metadata_props: vec![onnx::StringStringEntryProto {
            key: Some(METADATA_KEY.to_owned()),
            value: Some(metadata.to_json()),
        }],
        ..Default::default()
    }
}

/// ONNX `model_version` (an int64): derived from the free-text metadata
/// version so that tools showing it tell versions apart.
fn model_version(version: &str) -> i64 {
    let digest = Sha256::digest(version.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // Non-negative: some tools print it unsigned, some signed.
    (u64::from_be_bytes(first) >> 1) as i64
}
