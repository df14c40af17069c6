//! The ONNX exporter: turns a trained [`NetworkSpec`] plus its
//! [`ModelMetadata`] into the one model file the daemon loads (DESIGN §4):
//! input `window [batch, C, T]`; outputs `reconstruction [batch, C, T]`,
//! `channel_error [batch, C]` and `score [batch]` computed inside the graph;
//! the metadata JSON in `metadata_props`. Opset 17, IR 8, weights as raw
//! little-endian initializers, written atomically and byte-for-byte
//! deterministically.
//!
//! Convolutions are written as 2-D ones over `[batch, C, 1, L]` (kernel
//! `[1, k]`), which ONNX Runtime runs with its blocked kernels, and each
//! transposed convolution as one stride-1 convolution plus an interleave of
//! its phases (`Polyphase`), not as a `ConvTranspose` (GEMM + col2im);
//! a `ConvTranspose` only where no such convolution exists.
//!
//! Also holds [`reference_forward`], a plain-loop forward pass that checks
//! the exported graph independently of any deep-learning library.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anomalyd::core::contract::{
    INPUT_WINDOW, METADATA_KEY, ModelMetadata, OUTPUT_CHANNEL_ERROR, OUTPUT_RECONSTRUCTION,
    OUTPUT_SCORE,
};
use prost::Message;
use sha2::{Digest, Sha256};

use crate::network::{Aggregation, ChannelError, Layer, NetworkSpec};
use crate::onnx;
use crate::onnx::attribute_proto::AttributeType;
use crate::onnx::tensor_proto::DataType;
use crate::onnx::tensor_shape_proto::{Dimension, dimension};

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

/// The activation between layers, per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    /// `[channels, len]`.
    Seq { channels: usize, len: usize },
    /// `[features]`.
    Flat { features: usize },
}

impl Act {
    fn size(self) -> usize {
        match self {
            Act::Seq { channels, len } => channels * len,
            Act::Flat { features } => features,
        }
    }
}

/// One validated layer with its input and output activations.
struct Step<'a> {
    index: usize,
    layer: &'a Layer,
    /// A `Flatten` goes before this (first dense layer after a sequence).
    flatten_before: bool,
    input: Act,
    output: Act,
}

fn kind(layer: &Layer) -> &'static str {
    match layer {
        Layer::Conv1d { .. } => "Conv1d",
        Layer::ConvTranspose1d { .. } => "ConvTranspose1d",
        Layer::Dense { .. } => "Dense",
        Layer::Relu => "Relu",
    }
}

/// Checks that the layers chain from `[C, T]` back to `[C, T]` (or `C*T`
/// features) with weights of the right lengths; the error names the layer.
fn plan(spec: &NetworkSpec) -> Result<Vec<Step<'_>>, ExportError> {
    let (c, t) = (spec.channels, spec.window);
    if c == 0 || t == 0 {
        return Err(ExportError::Network(format!(
            "channels {c} and window {t} must both be at least 1"
        )));
    }
    let target = c
        .checked_mul(t)
        .ok_or_else(|| ExportError::Network("channels * window overflows".into()))?;
    if spec.layers.is_empty() {
        return Err(ExportError::Network("the network has no layers".into()));
    }
    check_channel_weights(&spec.channel_weights, c).map_err(ExportError::Network)?;
    if let ChannelError::RecentBias { frames } = spec.channel_error
        && (frames == 0 || frames > t)
    {
        return Err(ExportError::Network(format!(
            "the recent-bias error averages {frames} frames; the window has {t}"
        )));
    }
    if !spec.centered.is_empty() && spec.centered.len() != c {
        return Err(ExportError::Network(format!(
            "{} centering flags for {c} channels",
            spec.centered.len()
        )));
    }

    let mut act = Act::Seq {
        channels: c,
        len: t,
    };
    let mut steps = Vec::with_capacity(spec.layers.len());
    for (index, layer) in spec.layers.iter().enumerate() {
        let err = |message: String| ExportError::Layer {
            index,
            kind: kind(layer),
            message,
        };
        let (output, flatten_before) = step_output(layer, act).map_err(err)?;
        check_weights(layer).map_err(err)?;
        steps.push(Step {
            index,
            layer,
            flatten_before,
            input: act,
            output,
        });
        act = output;
    }
    let last = spec.layers.len() - 1;
    let err = |message: String| ExportError::Layer {
        index: last,
        kind: kind(&spec.layers[last]),
        message,
    };
    match act {
        Act::Seq { channels, len } if channels == c && len == t => {}
        Act::Seq { channels, len } => {
            return Err(err(format!(
                "the network ends with [{channels}, {len}], the reconstruction must be [{c}, {t}]"
            )));
        }
        Act::Flat { features } if features == target => {}
        Act::Flat { features } => {
            return Err(err(format!(
                "the network ends with {features} features, the reconstruction needs channels * window = {target}"
            )));
        }
    }
    Ok(steps)
}

fn check_channel_weights(w: &[f32], c: usize) -> Result<(), String> {
    if w.len() != c {
        return Err(format!("{} channel weights for {c} channels", w.len()));
    }
    if w.iter().any(|x| !x.is_finite() || *x < 0.0) || w.iter().sum::<f32>() <= 0.0 {
        return Err("channel weights must be finite, >= 0 and not all 0".into());
    }
    Ok(())
}

/// Output activation of `layer` on `input`, and whether a flatten is needed.
fn step_output(layer: &Layer, input: Act) -> Result<(Act, bool), String> {
    let seq_input = |in_channels: usize| match input {
        Act::Seq { channels, len } if channels == in_channels => Ok(len),
        Act::Seq { channels, .. } => Err(format!(
            "expects {in_channels} input channels, the previous output has {channels}"
        )),
        Act::Flat { features } => Err(format!(
            "needs a [channels, length] input but follows a dense layer ({features} features)"
        )),
    };
    let positive = |pairs: &[(&str, usize)]| -> Result<(), String> {
        for (name, v) in pairs {
            if *v == 0 {
                return Err(format!("{name} is 0"));
            }
        }
        Ok(())
    };
    match *layer {
        Layer::Conv1d {
            in_channels,
            out_channels,
            kernel,
            stride,
            padding,
            ..
        } => {
            positive(&[
                ("in_channels", in_channels),
                ("out_channels", out_channels),
                ("kernel", kernel),
                ("stride", stride),
            ])?;
            let len = seq_input(in_channels)?;
            let padded = len + 2 * padding;
            if padded < kernel {
                return Err(format!(
                    "kernel {kernel} is longer than the padded input ({len} + 2 * {padding})"
                ));
            }
            let out_len = (padded - kernel) / stride + 1;
            Ok((
                Act::Seq {
                    channels: out_channels,
                    len: out_len,
                },
                false,
            ))
        }
        Layer::ConvTranspose1d {
            in_channels,
            out_channels,
            kernel,
            stride,
            padding,
            output_padding,
            ..
        } => {
            positive(&[
                ("in_channels", in_channels),
                ("out_channels", out_channels),
                ("kernel", kernel),
                ("stride", stride),
            ])?;
            let len = seq_input(in_channels)?;
            if output_padding >= stride {
                return Err(format!(
                    "output_padding {output_padding} must be smaller than stride {stride}"
                ));
            }
            let full = (len - 1) * stride + kernel + output_padding;
            if full <= 2 * padding {
                return Err(format!(
                    "padding {padding} leaves no output (length before padding {full})"
                ));
            }
            Ok((
                Act::Seq {
                    channels: out_channels,
                    len: full - 2 * padding,
                },
                false,
            ))
        }
        Layer::Dense {
            inputs, outputs, ..
        } => {
            positive(&[("inputs", inputs), ("outputs", outputs)])?;
            let (features, flatten) = match input {
                Act::Seq { .. } => (input.size(), true),
                Act::Flat { features } => (features, false),
            };
            if features != inputs {
                return Err(format!(
                    "expects {inputs} inputs, the previous output has {features} values"
                ));
            }
            Ok((Act::Flat { features: outputs }, flatten))
        }
        Layer::Relu => Ok((input, false)),
    }
}

fn check_weights(layer: &Layer) -> Result<(), String> {
    let (weight, wdims, bias, bdim) = match layer {
        Layer::Conv1d {
            in_channels,
            out_channels,
            kernel,
            weight,
            bias,
            ..
        } => (
            weight,
            [*out_channels, *in_channels, *kernel],
            bias,
            *out_channels,
        ),
        Layer::ConvTranspose1d {
            in_channels,
            out_channels,
            kernel,
            weight,
            bias,
            ..
        } => (
            weight,
            [*in_channels, *out_channels, *kernel],
            bias,
            *out_channels,
        ),
        Layer::Dense {
            inputs,
            outputs,
            weight,
            bias,
        } => (weight, [*inputs, *outputs, 1], bias, *outputs),
        Layer::Relu => return Ok(()),
    };
    let expected = wdims
        .iter()
        .try_fold(1usize, |acc, d| acc.checked_mul(*d))
        .ok_or_else(|| "weight size overflows".to_owned())?;
    if weight.len() != expected {
        let shape = match layer {
            Layer::Dense { .. } => format!("[{}, {}]", wdims[0], wdims[1]),
            _ => format!("[{}, {}, {}]", wdims[0], wdims[1], wdims[2]),
        };
        return Err(format!(
            "weight has {} values, shape {shape} needs {expected}",
            weight.len()
        ));
    }
    if bias.len() != bdim {
        return Err(format!("bias has {} values, expected {bdim}", bias.len()));
    }
    if weight.iter().chain(bias).any(|x| !x.is_finite()) {
        return Err("weights hold a non-finite value".into());
    }
    Ok(())
}

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
    let kind = crate::network::score_kind(spec.channel_error, spec.aggregation);
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

    let (c, t) = (dim(spec.channels), dim(spec.window));
    let mut g = GraphBuilder::default();
    // The network's input, and what the reconstruction is compared with:
    // the window, with the centered channels' window means subtracted.
    let network_input = if spec.centered.iter().any(|b| *b) {
        let mask: Vec<f32> = spec
            .centered
            .iter()
            .map(|b| if *b { 1.0 } else { 0.0 })
            .collect();
        g.init_f32("center.mask", &[c, 1], &mask);
        g.node(
            "ReduceMean",
            "center.mean",
            &[INPUT_WINDOW],
            "center.mean",
            vec![attr_ints("axes", vec![2]), attr_int("keepdims", 1)],
        );
        g.node(
            "Mul",
            "center.masked_mean",
            &["center.mean", "center.mask"],
            "center.masked_mean",
            vec![],
        );
        g.node(
            "Sub",
            "center.window",
            &[INPUT_WINDOW, "center.masked_mean"],
            "center.window",
            vec![],
        );
        "center.window".to_owned()
    } else {
        INPUT_WINDOW.to_owned()
    };
    // Convolutions are written as 2-D ones over `[N, C, 1, L]`: ONNX
    // Runtime's blocked (NCHWc) kernels only serve 2-D convolutions. The
    // activation is unsqueezed once, before the first convolution, and
    // squeezed back for the reconstruction.
    let mut current = network_input.clone();
    let mut rank4 = false;
    for step in &steps {
        let i = step.index;
        if step.flatten_before {
            // `[N, C, 1, L]` and `[N, C, L]` flatten to the same `[N, C*L]`.
            let out = format!("layer{i}.flatten");
            g.node(
                "Flatten",
                &out,
                &[&current],
                &out,
                vec![attr_int("axis", 1)],
            );
            current = out;
            rank4 = false;
        }
        if matches!(
            step.layer,
            Layer::Conv1d { .. } | Layer::ConvTranspose1d { .. }
        ) && !rank4
        {
            let axes = format!("layer{i}.unsqueeze.axes");
            let out = format!("layer{i}.unsqueeze");
            g.init_i64(&axes, &[1], &[2]);
            g.node("Unsqueeze", &out, &[&current, &axes], &out, vec![]);
            current = out;
            rank4 = true;
        }
        let out = format!("layer{i}.out");
        let weight = format!("layer{i}.weight");
        let bias = format!("layer{i}.bias");
        match step.layer {
            Layer::Conv1d {
                in_channels,
                out_channels,
                kernel,
                stride,
                padding,
                weight: w,
                bias: b,
            } => {
                g.init_f32(
                    &weight,
                    &[dim(*out_channels), dim(*in_channels), 1, dim(*kernel)],
                    w,
                );
                g.init_f32(&bias, &[dim(*out_channels)], b);
                g.node(
                    "Conv",
                    &format!("layer{i}.conv"),
                    &[&current, &weight, &bias],
                    &out,
                    conv_attrs(*kernel, *stride, [*padding, *padding], None),
                );
            }
            Layer::ConvTranspose1d {
                in_channels,
                out_channels,
                kernel,
                stride,
                padding,
                output_padding,
                weight: w,
                bias: b,
            } => {
                let (ci, co) = (*in_channels, *out_channels);
                let in_len = match step.input {
                    Act::Seq { len, .. } => len,
                    Act::Flat { .. } => 0,
                };
                let out_len = match step.output {
                    Act::Seq { len, .. } => len,
                    Act::Flat { .. } => 0,
                };
                let phases = Polyphase::derive(
                    ci,
                    co,
                    *kernel,
                    *stride,
                    *padding,
                    *output_padding,
                    in_len,
                    w,
                    b,
                )
                .filter(|p| p.out_len == out_len);
                if let Some(p) = phases {
                    p.emit(&mut g, i, &current, &out);
                } else {
                    // Not expressible as one convolution (e.g. it would
                    // need negative pads): a 2-D ConvTranspose.
                    g.init_f32(&weight, &[dim(ci), dim(co), 1, dim(*kernel)], w);
                    g.init_f32(&bias, &[dim(co)], b);
                    g.node(
                        "ConvTranspose",
                        &format!("layer{i}.conv_transpose"),
                        &[&current, &weight, &bias],
                        &out,
                        conv_attrs(
                            *kernel,
                            *stride,
                            [*padding, *padding],
                            Some(*output_padding),
                        ),
                    );
                }
            }
            Layer::Dense {
                inputs,
                outputs,
                weight: w,
                bias: b,
            } => {
                g.init_f32(&weight, &[dim(*inputs), dim(*outputs)], w);
                g.init_f32(&bias, &[dim(*outputs)], b);
                g.node(
                    "Gemm",
                    &format!("layer{i}.gemm"),
                    &[&current, &weight, &bias],
                    &out,
                    vec![
                        attr_float("alpha", 1.0),
                        attr_float("beta", 1.0),
                        attr_int("transA", 0),
                        attr_int("transB", 0),
                    ],
                );
            }
            Layer::Relu => {
                g.node("Relu", &format!("layer{i}.relu"), &[&current], &out, vec![]);
            }
        }
        current = out;
    }
    // The reconstruction: reshape a flat output, squeeze a 2-D convolution's
    // `[N, C, 1, T]`, or rename the last tensor.
    if matches!(steps.last().map(|s| s.output), Some(Act::Flat { .. })) {
        let shape = "reconstruction.shape";
        g.init_i64(shape, &[3], &[-1, c, t]);
        g.node(
            "Reshape",
            "reconstruction.reshape",
            &[&current, shape],
            OUTPUT_RECONSTRUCTION,
            vec![attr_int("allowzero", 0)],
        );
    } else if rank4 {
        let axes = "reconstruction.squeeze.axes";
        g.init_i64(axes, &[1], &[2]);
        g.node(
            "Squeeze",
            "reconstruction.squeeze",
            &[&current, axes],
            OUTPUT_RECONSTRUCTION,
            vec![],
        );
    } else if let Some(last) = g.nodes.last_mut() {
        last.output = vec![OUTPUT_RECONSTRUCTION.to_owned()];
    }
    // channel_error from the residual (network input - reconstruction),
    // score from the weighted channel errors; see ScoreDefinition.
    g.node(
        "Sub",
        "score.diff",
        &[&network_input, OUTPUT_RECONSTRUCTION],
        "score.diff",
        vec![],
    );
    match spec.channel_error {
        ChannelError::Mse => {
            g.node(
                "Mul",
                "score.squared",
                &["score.diff", "score.diff"],
                "score.squared",
                vec![],
            );
            g.node(
                "ReduceMean",
                "score.channel_error",
                &["score.squared"],
                OUTPUT_CHANNEL_ERROR,
                vec![attr_ints("axes", vec![2]), attr_int("keepdims", 0)],
            );
        }
        ChannelError::RecentBias { frames } => {
            g.init_i64("score.recent.starts", &[1], &[t - dim(frames)]);
            g.init_i64("score.recent.ends", &[1], &[t]);
            g.init_i64("score.recent.axes", &[1], &[2]);
            g.node(
                "Slice",
                "score.recent",
                &[
                    "score.diff",
                    "score.recent.starts",
                    "score.recent.ends",
                    "score.recent.axes",
                ],
                "score.recent",
                vec![],
            );
            g.node(
                "ReduceMean",
                "score.bias",
                &["score.recent"],
                "score.bias",
                vec![attr_ints("axes", vec![2]), attr_int("keepdims", 0)],
            );
            g.node(
                "Mul",
                "score.channel_error",
                &["score.bias", "score.bias"],
                OUTPUT_CHANNEL_ERROR,
                vec![],
            );
        }
    }
    match spec.aggregation {
        Aggregation::Mean => {
            let weights = normalised_weights(&spec.channel_weights);
            g.init_f32("score.channel_weights", &[c], &weights);
            g.node(
                "MatMul",
                "score.weighted_mean",
                &[OUTPUT_CHANNEL_ERROR, "score.channel_weights"],
                OUTPUT_SCORE,
                vec![],
            );
        }
        Aggregation::Max => {
            g.init_f32("score.channel_weights", &[c], &spec.channel_weights);
            g.node(
                "Mul",
                "score.weighted",
                &[OUTPUT_CHANNEL_ERROR, "score.channel_weights"],
                "score.weighted",
                vec![],
            );
            g.node(
                "ReduceMax",
                "score.weighted_max",
                &["score.weighted"],
                OUTPUT_SCORE,
                vec![attr_ints("axes", vec![1]), attr_int("keepdims", 0)],
            );
        }
    }

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
    Ok(onnx::ModelProto {
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
    })
}

/// `channel_weights / sum(channel_weights)`, the vector the graph's `score`
/// multiplies `channel_error` with.
pub fn normalised_weights(channel_weights: &[f32]) -> Vec<f32> {
    let sum: f64 = channel_weights.iter().map(|w| f64::from(*w)).sum();
    channel_weights
        .iter()
        .map(|w| (f64::from(*w) / sum) as f32)
        .collect()
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

/// Sizes are validated against real weight vectors, so they fit in i64.
fn dim(v: usize) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[derive(Default)]
struct GraphBuilder {
    nodes: Vec<onnx::NodeProto>,
    inits: Vec<onnx::TensorProto>,
}

impl GraphBuilder {
    fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        output: &str,
        attribute: Vec<onnx::AttributeProto>,
    ) {
        self.nodes.push(onnx::NodeProto {
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: vec![output.to_owned()],
            name: Some(name.to_owned()),
            op_type: Some(op.to_owned()),
            domain: Some(String::new()),
            attribute,
            ..Default::default()
        });
    }

    fn init_f32(&mut self, name: &str, dims: &[i64], data: &[f32]) {
        self.inits.push(onnx::TensorProto {
            dims: dims.to_vec(),
            data_type: Some(DataType::Float as i32),
            name: Some(name.to_owned()),
            raw_data: Some(data.iter().flat_map(|x| x.to_le_bytes()).collect()),
            ..Default::default()
        });
    }

    fn init_i64(&mut self, name: &str, dims: &[i64], data: &[i64]) {
        self.inits.push(onnx::TensorProto {
            dims: dims.to_vec(),
            data_type: Some(DataType::Int64 as i32),
            name: Some(name.to_owned()),
            raw_data: Some(data.iter().flat_map(|x| x.to_le_bytes()).collect()),
            ..Default::default()
        });
    }
}

/// Attributes of a 2-D `Conv` or `ConvTranspose` over `[N, C, 1, L]`:
/// kernel `[1, kernel]`, strides `[1, stride]`, pads `[0, left, 0, right]`.
fn conv_attrs(
    kernel: usize,
    stride: usize,
    [left, right]: [usize; 2],
    output_padding: Option<usize>,
) -> Vec<onnx::AttributeProto> {
    let mut attrs = vec![
        attr_ints("dilations", vec![1, 1]),
        attr_int("group", 1),
        attr_ints("kernel_shape", vec![1, dim(kernel)]),
    ];
    if let Some(op) = output_padding {
        attrs.push(attr_ints("output_padding", vec![0, dim(op)]));
    }
    attrs.push(attr_ints("pads", vec![0, dim(left), 0, dim(right)]));
    attrs.push(attr_ints("strides", vec![1, dim(stride)]));
    attrs
}

/// A 1-D transposed convolution rewritten as one stride-1 convolution with
/// `stride * out_channels` outputs and an interleave (polyphase
/// decomposition): ONNX Runtime runs `ConvTranspose` as GEMM + col2im, a
/// plain `Conv` with its blocked kernels.
///
/// The transposed convolution computes, per output channel,
/// `y[o] = bias + sum over i, j with i*s + j - p = o of x[i] * w[j]`
/// (summed over the input channels; `w[j]` is `weight[ci][co][j]`), for
/// `o < (L-1)*s - 2p + k + op`. Output `o = s*m + r` of phase `r` takes the
/// taps `j = j0 + s*q` with `j0 = (r + p) mod s`, `q = 0, 1, ...` while
/// `j < k`, applied to `x[m + c - q]` with `c = (r + p) div s`: a plain
/// correlation of `x` with those taps reversed. All phases share one kernel
/// spanning the input offsets `lo..=hi` (`lo = min(c + 1 - #taps)`,
/// `hi = max(c)`) with `-lo` frames of left padding; a phase's missing taps
/// are 0. Convolution output channel `r * out_channels + co` holds phase `r`
/// of channel `co`; `Reshape [N, s, Co, M]`, `Transpose [0, 2, 3, 1]`,
/// `Reshape [N, Co, 1, s*M]` interleave the phases, and a `Slice` drops
/// the frames past the output length when `s*M` exceeds it.
#[derive(Debug, Clone, PartialEq)]
struct Polyphase {
    in_channels: usize,
    out_channels: usize,
    stride: usize,
    kernel: usize,
    pads: [usize; 2],
    /// Output frames of the convolution, per phase.
    per_phase: usize,
    /// Output frames of the transposed convolution.
    out_len: usize,
    /// `[stride * out_channels, in_channels, kernel]`, phase-major.
    weight: Vec<f32>,
    /// `[stride * out_channels]`: the bias repeated for each phase.
    bias: Vec<f32>,
}

impl Polyphase {
    /// The decomposition of a transposed convolution over `in_len` frames
    /// (`weight` `[in_channels, out_channels, kernel]`); `None` where it
    /// cannot be expressed as one convolution with non-negative pads.
    #[allow(clippy::too_many_arguments)]
    fn derive(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        output_padding: usize,
        in_len: usize,
        weight: &[f32],
        bias: &[f32],
    ) -> Option<Self> {
        let (ci, co, k, s, p) = (in_channels, out_channels, kernel, stride, padding);
        if ci == 0 || co == 0 || k == 0 || s == 0 || in_len == 0 {
            return None;
        }
        if weight.len() != ci.checked_mul(co)?.checked_mul(k)? || bias.len() != co {
            return None;
        }
        let out_len = (in_len - 1)
            .checked_mul(s)?
            .checked_add(k)?
            .checked_add(output_padding)?
            .checked_sub(p.checked_mul(2)?)
            .filter(|l| *l > 0)?;
        // Per phase: first tap j0, number of taps, input offset c.
        let phases: Vec<(usize, usize, usize)> = (0..s)
            .map(|r| {
                let j0 = (r + p) % s;
                let taps = if j0 < k { (k - j0).div_ceil(s) } else { 0 };
                (j0, taps, (r + p) / s)
            })
            .collect();
        let offsets = phases.iter().filter(|(_, taps, _)| *taps > 0);
        let lo = offsets
            .clone()
            .map(|&(_, taps, c)| isize::try_from(c).ok().map(|c| c + 1 - taps as isize))
            .min()??;
        let hi = isize::try_from(offsets.map(|&(_, _, c)| c).max()?).ok()?;
        let pad_left = usize::try_from(-lo).ok()?;
        let conv_kernel = usize::try_from(hi - lo + 1).ok()?;
        // Conv output frames: in_len + pads - kernel + 1, at least
        // ceil(out_len / s); more (sliced off later) where reaching exactly
        // that would need a negative right pad.
        let needed = out_len.div_ceil(s);
        let pad_right = (needed + conv_kernel - 1).saturating_sub(in_len + pad_left);
        let per_phase = in_len + pad_left + pad_right + 1 - conv_kernel;
        if per_phase < needed {
            return None;
        }

        let mut w = vec![0.0f32; s * co * ci * conv_kernel];
        for (r, &(j0, taps, c)) in phases.iter().enumerate() {
            for q in 0..taps {
                // Input x[m + c - q] sits at kernel position c - q - lo.
                let t = pad_left + c - q;
                let j = j0 + s * q;
                for o in 0..co {
                    for i in 0..ci {
                        w[((r * co + o) * ci + i) * conv_kernel + t] = weight[(i * co + o) * k + j];
                    }
                }
            }
        }
        Some(Self {
            in_channels: ci,
            out_channels: co,
            stride: s,
            kernel: conv_kernel,
            pads: [pad_left, pad_right],
            per_phase,
            out_len,
            weight: w,
            bias: bias.repeat(s),
        })
    }

    /// Adds the convolution and the interleave of layer `index` from
    /// `input` (`[N, Ci, 1, L]`) to `output` (`[N, Co, 1, out_len]`).
    fn emit(&self, g: &mut GraphBuilder, index: usize, input: &str, output: &str) {
        let (s, co, m) = (self.stride, self.out_channels, self.per_phase);
        let weight = format!("layer{index}.weight");
        let bias = format!("layer{index}.bias");
        g.init_f32(
            &weight,
            &[dim(s * co), dim(self.in_channels), 1, dim(self.kernel)],
            &self.weight,
        );
        g.init_f32(&bias, &[dim(s * co)], &self.bias);
        let interleave = s > 1;
        let slice = s * m > self.out_len;
        let phases = if interleave || slice {
            format!("layer{index}.phases")
        } else {
            output.to_owned()
        };
        g.node(
            "Conv",
            &format!("layer{index}.conv"),
            &[input, &weight, &bias],
            &phases,
            conv_attrs(self.kernel, 1, self.pads, None),
        );
        let mut current = phases;
        if interleave {
            // [N, s*Co, 1, M] -> [N, s, Co, M] -> [N, Co, M, s] -> [N, Co, 1, s*M]
            let split_shape = format!("layer{index}.split.shape");
            let split = format!("layer{index}.split");
            g.init_i64(&split_shape, &[4], &[0, dim(s), dim(co), dim(m)]);
            g.node(
                "Reshape",
                &split,
                &[&current, &split_shape],
                &split,
                vec![attr_int("allowzero", 0)],
            );
            let transposed = format!("layer{index}.transpose");
            g.node(
                "Transpose",
                &transposed,
                &[&split],
                &transposed,
                vec![attr_ints("perm", vec![0, 2, 3, 1])],
            );
            let merge_shape = format!("layer{index}.interleave.shape");
            let merged = if slice {
                format!("layer{index}.interleave")
            } else {
                output.to_owned()
            };
            g.init_i64(&merge_shape, &[4], &[0, dim(co), 1, dim(s * m)]);
            g.node(
                "Reshape",
                &format!("layer{index}.interleave"),
                &[&transposed, &merge_shape],
                &merged,
                vec![attr_int("allowzero", 0)],
            );
            current = merged;
        }
        if slice {
            let (starts, ends, axes) = (
                format!("layer{index}.slice.starts"),
                format!("layer{index}.slice.ends"),
                format!("layer{index}.slice.axes"),
            );
            g.init_i64(&starts, &[1], &[0]);
            g.init_i64(&ends, &[1], &[dim(self.out_len)]);
            g.init_i64(&axes, &[1], &[3]);
            g.node(
                "Slice",
                &format!("layer{index}.slice"),
                &[&current, &starts, &ends, &axes],
                output,
                vec![],
            );
        }
    }
}

fn attr_int(name: &str, i: i64) -> onnx::AttributeProto {
    onnx::AttributeProto {
        name: Some(name.to_owned()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(i),
        ..Default::default()
    }
}

fn attr_ints(name: &str, ints: Vec<i64>) -> onnx::AttributeProto {
    onnx::AttributeProto {
        name: Some(name.to_owned()),
        r#type: Some(AttributeType::Ints as i32),
        ints,
        ..Default::default()
    }
}

fn attr_float(name: &str, f: f32) -> onnx::AttributeProto {
    onnx::AttributeProto {
        name: Some(name.to_owned()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(f),
        ..Default::default()
    }
}

enum DimSpec {
    Param(&'static str),
    Value(i64),
}

fn value_info(name: &str, dims: &[DimSpec]) -> onnx::ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                DimSpec::Param(p) => dimension::Value::DimParam((*p).to_owned()),
                DimSpec::Value(v) => dimension::Value::DimValue(*v),
            }),
            ..Default::default()
        })
        .collect();
    onnx::ValueInfoProto {
        name: Some(name.to_owned()),
        r#type: Some(onnx::TypeProto {
            value: Some(onnx::type_proto::Value::TensorType(
                onnx::type_proto::Tensor {
                    elem_type: Some(DataType::Float as i32),
                    shape: Some(onnx::TensorShapeProto { dim }),
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Serialises `model` to `path` atomically: a temporary file in the same
/// folder, fsync, rename over `path`, fsync of the folder. A reader (the
/// daemon reloading on SIGHUP) sees the old file or the new one, never half.
/// Returns the number of bytes written.
///
/// # Errors
/// [`ExportError::Io`] naming `path` when the folder is missing or not
/// writable, the disk is full, or `path` has no file name. The temporary
/// file is removed on failure.
pub fn write_model(path: &Path, model: &onnx::ModelProto) -> Result<u64, ExportError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let io_err = |source: std::io::Error| ExportError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file_name = path.file_name().ok_or_else(|| {
        io_err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the path has no file name",
        ))
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp_name = OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = dir.join(tmp_name);
    let bytes = model.encode_to_vec();
    let written = (|| -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable; not every filesystem can sync a
        // directory, and the file is already complete, so this is best effort.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(e));
    }
    Ok(bytes.len() as u64)
}

/// Plain-loop forward pass of `spec` over `batch` windows (`batch * C * T`
/// values, each window `[C, T]` row-major); returns the reconstruction in the
/// same layout. Accumulates in f64: it is the reference the exported graph
/// (and the trainer's own forward pass) are checked against.
///
/// # Errors
/// The spec is invalid (as [`build_model`]) or `windows` does not hold
/// `batch * C * T` values.
pub fn reference_forward(
    spec: &NetworkSpec,
    windows: &[f32],
    batch: usize,
) -> Result<Vec<f32>, ExportError> {
    let steps = plan(spec)?;
    let per_window = spec.channels * spec.window;
    if batch.checked_mul(per_window) != Some(windows.len()) {
        return Err(ExportError::Input(format!(
            "{} values for {batch} windows of {} x {}",
            windows.len(),
            spec.channels,
            spec.window
        )));
    }
    let mut out = Vec::with_capacity(windows.len());
    for window in windows.chunks_exact(per_window.max(1)) {
        let mut x: Vec<f64> = window.iter().map(|v| f64::from(*v)).collect();
        for (xs, centered) in x.chunks_exact_mut(spec.window).zip(&spec.centered) {
            if *centered {
                let mean = xs.iter().sum::<f64>() / spec.window as f64;
                xs.iter_mut().for_each(|v| *v -= mean);
            }
        }
        for step in &steps {
            x = forward_layer(step, &x);
        }
        out.extend(x.iter().map(|v| *v as f32));
    }
    Ok(out)
}

fn forward_layer(step: &Step<'_>, x: &[f64]) -> Vec<f64> {
    let (in_len, out_len) = match (step.input, step.output) {
        (Act::Seq { len: a, .. }, Act::Seq { len: b, .. }) => (a, b),
        _ => (0, 0),
    };
    match step.layer {
        Layer::Conv1d {
            in_channels,
            out_channels,
            kernel,
            stride,
            padding,
            weight,
            bias,
        } => {
            let (ci, co, k) = (*in_channels, *out_channels, *kernel);
            let mut y = vec![0.0; co * out_len];
            for o in 0..co {
                for t in 0..out_len {
                    let mut acc = f64::from(bias[o]);
                    for i in 0..ci {
                        for kk in 0..k {
                            // Input position t*stride + kk - padding, skipped in the padding.
                            let pos = t * stride + kk;
                            if pos < *padding || pos - padding >= in_len {
                                continue;
                            }
                            acc += f64::from(weight[(o * ci + i) * k + kk])
                                * x[i * in_len + pos - padding];
                        }
                    }
                    y[o * out_len + t] = acc;
                }
            }
            y
        }
        Layer::ConvTranspose1d {
            in_channels,
            out_channels,
            kernel,
            stride,
            padding,
            weight,
            bias,
            ..
        } => {
            let (ci, co, k) = (*in_channels, *out_channels, *kernel);
            let mut y = vec![0.0; co * out_len];
            for o in 0..co {
                y[o * out_len..(o + 1) * out_len].fill(f64::from(bias[o]));
            }
            for i in 0..ci {
                for t in 0..in_len {
                    let v = x[i * in_len + t];
                    for kk in 0..k {
                        // Output position t*stride + kk - padding.
                        let pos = t * stride + kk;
                        if pos < *padding || pos - padding >= out_len {
                            continue;
                        }
                        for o in 0..co {
                            y[o * out_len + pos - padding] +=
                                v * f64::from(weight[(i * co + o) * k + kk]);
                        }
                    }
                }
            }
            y
        }
        Layer::Dense {
            inputs,
            outputs,
            weight,
            bias,
        } => {
            // A flatten of [C, L] row-major is the same memory.
            let mut y: Vec<f64> = bias.iter().map(|b| f64::from(*b)).collect();
            for (i, xi) in x.iter().enumerate().take(*inputs) {
                let row = &weight[i * outputs..(i + 1) * outputs];
                for (yo, w) in y.iter_mut().zip(row) {
                    *yo += xi * f64::from(*w);
                }
            }
            y
        }
        Layer::Relu => x.iter().map(|v| v.max(0.0)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use anomalyd::core::contract::{
        DetectorDefaults, ErrorDistribution, NormaliserParams, SCHEMA_VERSION, ScoreDefinition,
        ThresholdSpec, TrainingSummary,
    };
    use anomalyd::model::{
        ActiveProvider, BatchOutput, ExecutionProvider, LoadedModel, RuntimeError, RuntimeOptions,
        describe_model, read_metadata,
    };

    use super::*;

    /// splitmix64: a seeded, dependency-free generator for test weights.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        /// Uniform in [-scale, scale).
        fn uniform(&mut self, scale: f32) -> f32 {
            let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
            (2.0 * u - 1.0) * scale
        }
        fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
            (0..n).map(|_| self.uniform(scale)).collect()
        }
    }

    const C: usize = 3;
    const T: usize = 16;
    const WEIGHTS: [f32; C] = [1.0, 2.0, 0.5];

    fn conv(rng: &mut Rng, ci: usize, co: usize, k: usize, s: usize, p: usize) -> Layer {
        let scale = 1.0 / ((ci * k) as f32).sqrt();
        Layer::Conv1d {
            in_channels: ci,
            out_channels: co,
            kernel: k,
            stride: s,
            padding: p,
            weight: rng.vec(co * ci * k, scale),
            bias: rng.vec(co, 0.1),
        }
    }

    fn conv_t(
        rng: &mut Rng,
        ci: usize,
        co: usize,
        k: usize,
        s: usize,
        p: usize,
        op: usize,
    ) -> Layer {
        let scale = 1.0 / ((ci * k) as f32).sqrt();
        Layer::ConvTranspose1d {
            in_channels: ci,
            out_channels: co,
            kernel: k,
            stride: s,
            padding: p,
            output_padding: op,
            weight: rng.vec(ci * co * k, scale),
            bias: rng.vec(co, 0.1),
        }
    }

    fn dense(rng: &mut Rng, i: usize, o: usize) -> Layer {
        Layer::Dense {
            inputs: i,
            outputs: o,
            weight: rng.vec(i * o, 1.0 / (i as f32).sqrt()),
            bias: rng.vec(o, 0.1),
        }
    }

    /// 16 -> 8 -> 4 -> 8 -> 16 frames.
    fn conv_spec(seed: u64) -> NetworkSpec {
        let mut r = Rng(seed);
        NetworkSpec {
            channels: C,
            window: T,
            layers: vec![
                conv(&mut r, C, 8, 5, 2, 2),
                Layer::Relu,
                conv(&mut r, 8, 4, 3, 2, 1),
                Layer::Relu,
                conv_t(&mut r, 4, 8, 3, 2, 1, 1),
                Layer::Relu,
                conv_t(&mut r, 8, C, 5, 2, 2, 1),
            ],
            channel_weights: WEIGHTS.to_vec(),
            centered: vec![],
            channel_error: ChannelError::Mse,
            aggregation: Aggregation::Mean,
        }
    }

    fn dense_spec(seed: u64) -> NetworkSpec {
        let mut r = Rng(seed);
        NetworkSpec {
            channels: C,
            window: T,
            layers: vec![
                dense(&mut r, C * T, 12),
                Layer::Relu,
                dense(&mut r, 12, 4),
                Layer::Relu,
                dense(&mut r, 4, C * T),
            ],
            channel_weights: WEIGHTS.to_vec(),
            centered: vec![],
            channel_error: ChannelError::Mse,
            aggregation: Aggregation::Mean,
        }
    }

    /// Conv, then a flatten in the middle of the graph, then dense layers.
    fn mixed_spec(seed: u64) -> NetworkSpec {
        let mut r = Rng(seed);
        NetworkSpec {
            channels: C,
            window: T,
            layers: vec![
                conv(&mut r, C, 4, 3, 1, 1),
                Layer::Relu,
                dense(&mut r, 4 * T, 8),
                Layer::Relu,
                dense(&mut r, 8, C * T),
            ],
            channel_weights: WEIGHTS.to_vec(),
            centered: vec![],
            channel_error: ChannelError::Mse,
            aggregation: Aggregation::Mean,
        }
    }

    fn metadata(spec: &NetworkSpec, arch: &str) -> ModelMetadata {
        ModelMetadata {
            schema_version: SCHEMA_VERSION,
            name: "pump".into(),
            version: "2026-11-27.1".into(),
            channels: (0..spec.channels).map(|i| format!("sensor_{i}")).collect(),
            sample_period_ms: 1000,
            window: spec.window,
            stride: 4,
            arch: arch.into(),
            normaliser: NormaliserParams {
                mean: vec![0.0; spec.channels],
                std: vec![1.0; spec.channels],
                constant_channels: vec![],
            },
            score: ScoreDefinition {
                kind: crate::network::score_kind(spec.channel_error, spec.aggregation),
                channel_weights: spec.channel_weights.clone(),
                recent_frames: match spec.channel_error {
                    ChannelError::RecentBias { frames } => Some(frames),
                    ChannelError::Mse => None,
                },
                centered_channels: vec![],
            },
            threshold: ThresholdSpec {
                value: 0.5,
                method: "quantile*factor".into(),
                quantile: 0.99,
                factor: 1.5,
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
                rows: 400,
                train_windows: 300,
                validation_windows: 80,
                epochs_run: 10,
                best_epoch: 8,
                train_loss: vec![1.0, 0.5],
                validation_loss: vec![1.1, 0.6],
                seed: 7,
                data_fingerprint: "ab".repeat(32),
                created: "2026-11-27T00:00:00Z".into(),
                trainer_version: "0.1.0".into(),
                hyperparameters: serde_json::Map::new(),
            },
        }
    }

    fn export(dir: &Path, name: &str, spec: &NetworkSpec, arch: &str) -> PathBuf {
        let path = dir.join(name);
        let model = build_model(spec, &metadata(spec, arch)).unwrap();
        write_model(&path, &model).unwrap();
        path
    }

    /// The tests share one process-wide ONNX Runtime.
    fn cpu() -> RuntimeOptions {
        RuntimeOptions::cpu()
    }

    fn windows(seed: u64, batch: usize) -> Vec<f32> {
        Rng(seed).vec(batch * C * T, 2.0)
    }

    /// Runs the exported model through ONNX Runtime and compares every
    /// output with the reference forward pass and hand-computed scores;
    /// returns the largest reconstruction difference.
    fn check_parity(spec: &NetworkSpec, arch: &str) -> f32 {
        let dir = tempfile::tempdir().unwrap();
        let path = export(dir.path(), "m.onnx", spec, arch);
        let mut model = LoadedModel::load(&path, &cpu()).unwrap();
        assert_eq!(model.provider, ActiveProvider::Cpu);
        let batch = 5;
        let x = windows(99, batch);
        // What the reconstruction is compared with.
        let mut target = x.clone();
        crate::centering::center_windows(&mut target, C, T, &spec.centered);
        let out = model.run_with_reconstruction(&x, batch).unwrap();
        let rec = out.reconstruction.as_ref().unwrap();
        let expected = reference_forward(spec, &x, batch).unwrap();
        let max_diff = rec
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            max_diff < 1e-4,
            "{arch}: reconstruction differs by {max_diff}"
        );
        // Not trivially zero: the network really transforms the input.
        assert!(expected.iter().any(|v| v.abs() > 1e-2));

        let wsum: f64 = WEIGHTS.iter().map(|w| f64::from(*w)).sum();
        let from = match spec.channel_error {
            ChannelError::Mse => 0,
            ChannelError::RecentBias { frames } => T - frames,
        };
        for b in 0..batch {
            let mut weighted = Vec::new();
            for (c, weight) in WEIGHTS.iter().enumerate() {
                let base = (b * C + c) * T;
                let d = (from..T).map(|t| f64::from(target[base + t] - expected[base + t]));
                let ce: f64 = match spec.channel_error {
                    ChannelError::Mse => d.map(|v| v * v).sum::<f64>() / T as f64,
                    ChannelError::RecentBias { frames } => (d.sum::<f64>() / frames as f64).powi(2),
                };
                let got = f64::from(out.channel_error[b * C + c]);
                assert!(
                    (got - ce).abs() < 1e-4 * ce.max(1.0),
                    "{arch} ce[{b},{c}] {got} vs {ce}"
                );
                weighted.push(f64::from(*weight) * ce);
            }
            let score = match spec.aggregation {
                Aggregation::Mean => weighted.iter().sum::<f64>() / wsum,
                Aggregation::Max => weighted.iter().copied().fold(f64::MIN, f64::max),
            };
            let got = f64::from(out.score[b]);
            assert!(
                (got - score).abs() < 1e-4 * score.max(1.0),
                "{arch} score[{b}] {got} vs {score}"
            );
        }
        // The scores-only path agrees with the full run.
        let fast = model.run(&x, batch).unwrap();
        assert_eq!(fast.reconstruction, None);
        assert_eq!(fast.score, out.score);
        assert_eq!(fast.channel_error, out.channel_error);
        eprintln!("{arch}: reconstruction max abs difference {max_diff:e}");
        max_diff
    }

    #[test]
    fn conv_export_matches_reference_through_ort() {
        check_parity(&conv_spec(1), "conv");
    }

    #[test]
    fn recent_bias_and_max_export_match_the_definition_through_ort() {
        for aggregation in [Aggregation::Mean, Aggregation::Max] {
            check_parity(
                &NetworkSpec {
                    channel_error: ChannelError::RecentBias { frames: 4 },
                    aggregation,
                    ..conv_spec(6)
                },
                "conv",
            );
        }
        check_parity(
            &NetworkSpec {
                aggregation: Aggregation::Max,
                ..dense_spec(7)
            },
            "dense",
        );
        let too_long = NetworkSpec {
            channel_error: ChannelError::RecentBias { frames: T + 1 },
            ..conv_spec(6)
        };
        assert!(
            reference_forward(&too_long, &windows(0, 1), 1)
                .unwrap_err()
                .to_string()
                .contains("recent-bias")
        );
    }

    #[test]
    fn centered_channels_are_centered_inside_the_graph() {
        let mut centered = vec![false; C];
        centered[1] = true;
        let spec = NetworkSpec {
            centered,
            ..conv_spec(5)
        };
        check_parity(&spec, "conv");
        // A level shift of the centered channel changes nothing; one of
        // another channel does.
        let dir = tempfile::tempdir().unwrap();
        let path = export(dir.path(), "c.onnx", &spec, "conv");
        let mut model = LoadedModel::load(&path, &cpu()).unwrap();
        let x = windows(7, 1);
        let shift = |channel: usize| {
            let mut s = x.clone();
            s[channel * T..(channel + 1) * T]
                .iter_mut()
                .for_each(|v| *v += 3.0);
            s
        };
        let base = model.run(&x, 1).unwrap();
        let level1 = model.run(&shift(1), 1).unwrap();
        let level0 = model.run(&shift(0), 1).unwrap();
        assert!((base.score[0] - level1.score[0]).abs() < 1e-4);
        assert!((base.score[0] - level0.score[0]).abs() > 1e-2);
        let wrong = NetworkSpec {
            centered: vec![true],
            ..conv_spec(5)
        };
        assert!(
            reference_forward(&wrong, &x, 1)
                .unwrap_err()
                .to_string()
                .contains("centering flags")
        );
    }

    #[test]
    fn dense_export_matches_reference_through_ort() {
        check_parity(&dense_spec(2), "dense");
    }

    #[test]
    fn conv_then_dense_export_matches_reference_through_ort() {
        check_parity(&mixed_spec(3), "mixed");
    }

    /// The shipped model's layer shapes: kernel 7, stride 2, pads 3, output
    /// padding 1 in the transposed convolutions; 16 -> 8 -> 4 -> 8 -> 16.
    fn pump_like_spec(seed: u64) -> NetworkSpec {
        let mut r = Rng(seed);
        NetworkSpec {
            layers: vec![
                conv(&mut r, C, 8, 7, 2, 3),
                Layer::Relu,
                conv(&mut r, 8, 4, 7, 2, 3),
                Layer::Relu,
                conv_t(&mut r, 4, 8, 7, 2, 3, 1),
                Layer::Relu,
                conv_t(&mut r, 8, C, 7, 2, 3, 1),
            ],
            channel_error: ChannelError::RecentBias { frames: 4 },
            aggregation: Aggregation::Max,
            ..conv_spec(seed)
        }
    }

    /// A stride-3 transposed convolution with odd padding and output
    /// padding 2 (16 -> 6 -> 6 -> 16; 18 frames before the slice), after a
    /// stride-1 one (a single phase, the kernel reversed).
    fn stride3_spec(seed: u64) -> NetworkSpec {
        let mut r = Rng(seed);
        NetworkSpec {
            layers: vec![
                conv(&mut r, C, 8, 6, 2, 0),
                Layer::Relu,
                conv_t(&mut r, 8, 5, 3, 1, 1, 0),
                Layer::Relu,
                conv_t(&mut r, 5, C, 5, 3, 3, 2),
            ],
            ..conv_spec(seed)
        }
    }

    /// Kernel 1, stride 2, padding 1: the first output frame comes from
    /// nothing but the bias, so one convolution would need a negative pad;
    /// the exporter falls back to a 2-D ConvTranspose (16 -> 9 -> 16).
    fn fallback_spec(seed: u64) -> NetworkSpec {
        let mut r = Rng(seed);
        NetworkSpec {
            layers: vec![
                conv(&mut r, C, 4, 8, 1, 0),
                Layer::Relu,
                conv_t(&mut r, 4, C, 1, 2, 1, 1),
            ],
            ..conv_spec(seed)
        }
    }

    /// `(op_type, kernel_shape)` of the graph's convolutions.
    fn conv_nodes(spec: &NetworkSpec) -> Vec<(String, Vec<i64>)> {
        let model = build_model(spec, &metadata(spec, "conv")).unwrap();
        model
            .graph
            .unwrap()
            .node
            .iter()
            .filter(|n| {
                n.op_type
                    .as_deref()
                    .is_some_and(|op| op.starts_with("Conv"))
            })
            .map(|n| {
                let kernel = n
                    .attribute
                    .iter()
                    .find(|a| a.name.as_deref() == Some("kernel_shape"))
                    .map(|a| a.ints.clone())
                    .unwrap_or_default();
                (n.op_type.clone().unwrap(), kernel)
            })
            .collect()
    }

    #[test]
    fn transposed_convolutions_match_reference_through_ort() {
        for (spec, arch) in [
            (pump_like_spec(12), "stride 2, kernel 7"),
            (stride3_spec(13), "stride 3, odd padding"),
            (fallback_spec(14), "fallback"),
        ] {
            check_parity(&spec, arch);
            let centered = NetworkSpec {
                centered: vec![true, false, true],
                ..spec
            };
            check_parity(&centered, arch);
        }
    }

    #[test]
    fn conv_graph_has_only_2d_convolutions_and_no_conv_transpose() {
        for spec in [
            conv_spec(1),
            pump_like_spec(12),
            stride3_spec(13),
            mixed_spec(3),
        ] {
            let convs = conv_nodes(&spec);
            let expected = spec
                .layers
                .iter()
                .filter(|l| matches!(l, Layer::Conv1d { .. } | Layer::ConvTranspose1d { .. }))
                .count();
            assert_eq!(convs.len(), expected, "{convs:?}");
            for (op, kernel) in &convs {
                assert_eq!(op, "Conv", "{convs:?}");
                assert_eq!(kernel.len(), 2, "{convs:?}");
                assert_eq!(kernel[0], 1, "{convs:?}");
            }
        }
        // The shipped shapes: kernel 7 -> 4 taps per phase.
        assert_eq!(
            conv_nodes(&pump_like_spec(12))
                .iter()
                .map(|(_, k)| k[1])
                .collect::<Vec<_>>(),
            [7, 7, 4, 4]
        );
        // Only where no single convolution fits: a 2-D ConvTranspose.
        assert_eq!(
            conv_nodes(&fallback_spec(14)),
            [
                ("Conv".into(), vec![1, 8]),
                ("ConvTranspose".into(), vec![1, 1])
            ]
        );
        // A dense network has no convolution and stays 2-D/3-D.
        assert!(conv_nodes(&dense_spec(2)).is_empty());
    }

    /// `Polyphase` evaluated in f64: the stride-1 convolution, interleaved
    /// and sliced as the graph does.
    fn polyphase_forward(p: &Polyphase, x: &[f64], in_len: usize) -> Vec<f64> {
        let (s, co, ci, k) = (p.stride, p.out_channels, p.in_channels, p.kernel);
        let padded = in_len + p.pads[0] + p.pads[1];
        assert_eq!(padded + 1 - k, p.per_phase);
        let mut y = vec![0.0; co * p.out_len];
        for r in 0..s {
            for o in 0..co {
                let oc = r * co + o;
                for m in 0..p.per_phase {
                    let pos = s * m + r;
                    if pos >= p.out_len {
                        continue;
                    }
                    let mut acc = f64::from(p.bias[oc]);
                    for i in 0..ci {
                        for t in 0..k {
                            let Some(n) = (m + t).checked_sub(p.pads[0]) else {
                                continue;
                            };
                            if n < in_len {
                                acc +=
                                    f64::from(p.weight[(oc * ci + i) * k + t]) * x[i * in_len + n];
                            }
                        }
                    }
                    y[o * p.out_len + pos] = acc;
                }
            }
        }
        y
    }

    #[test]
    fn polyphase_decomposition_matches_the_transposed_convolution() {
        let (ci, co) = (2, 3);
        let mut rng = Rng(21);
        let (mut checked, mut fallbacks, mut sliced) = (0, 0, 0);
        for s in 1..=4 {
            for k in 1..=8 {
                for p in 0..=4 {
                    for op in 0..s {
                        for in_len in 1..=6 {
                            let layer = conv_t(&mut rng, ci, co, k, s, p, op);
                            let Ok((Act::Seq { len: out_len, .. }, _)) = step_output(
                                &layer,
                                Act::Seq {
                                    channels: ci,
                                    len: in_len,
                                },
                            ) else {
                                continue;
                            };
                            let Layer::ConvTranspose1d { weight, bias, .. } = &layer else {
                                unreachable!()
                            };
                            let case = format!("s {s} k {k} p {p} op {op} L {in_len}");
                            let Some(pp) =
                                Polyphase::derive(ci, co, k, s, p, op, in_len, weight, bias)
                            else {
                                fallbacks += 1;
                                // Only where the first output frame lies
                                // left of every input frame's first tap.
                                assert!(p > (k - 1) / s, "{case}");
                                continue;
                            };
                            assert_eq!(pp.out_len, out_len, "{case}");
                            assert_eq!(pp.out_len, (in_len - 1) * s + k + op - 2 * p, "{case}");
                            assert!(s * pp.per_phase >= out_len, "{case}");
                            if s * pp.per_phase > out_len {
                                sliced += 1;
                            }
                            let x = rng.vec(ci * in_len, 1.0);
                            let x: Vec<f64> = x.iter().map(|v| f64::from(*v)).collect();
                            let step = Step {
                                index: 0,
                                layer: &layer,
                                flatten_before: false,
                                input: Act::Seq {
                                    channels: ci,
                                    len: in_len,
                                },
                                output: Act::Seq {
                                    channels: co,
                                    len: out_len,
                                },
                            };
                            let want = forward_layer(&step, &x);
                            let got = polyphase_forward(&pp, &x, in_len);
                            for (a, b) in got.iter().zip(&want) {
                                assert!((a - b).abs() < 1e-9, "{case}: {got:?} vs {want:?}");
                            }
                            checked += 1;
                        }
                    }
                }
            }
        }
        eprintln!("{checked} checked, {fallbacks} fall back, {sliced} sliced");
        assert!(checked > 500 && sliced > 50, "{checked} {sliced}");
        assert!(fallbacks < checked / 4, "{fallbacks} of {checked}");

        // The shipped layers: kernel 4, pads 1 and 2; even outputs take taps
        // w[5], w[3], w[1], 0, odd ones w[6], w[4], w[2], w[0].
        let w: Vec<f32> = (0..7).map(|j| j as f32).collect();
        let pp = Polyphase::derive(1, 1, 7, 2, 3, 1, 10, &w, &[0.5]).unwrap();
        assert_eq!(
            (pp.kernel, pp.pads, pp.per_phase, pp.out_len),
            (4, [1, 2], 10, 20)
        );
        assert_eq!(pp.weight, [5.0, 3.0, 1.0, 0.0, 6.0, 4.0, 2.0, 0.0]);
        assert_eq!(pp.bias, [0.5, 0.5]);
    }

    #[test]
    fn batch_sizes_and_buffer_reuse() {
        let dir = tempfile::tempdir().unwrap();
        let spec = conv_spec(4);
        let path = export(dir.path(), "m.onnx", &spec, "conv");
        let mut model = LoadedModel::load(&path, &cpu()).unwrap();
        let mut out = BatchOutput::default();
        for batch in [1, 7, 2] {
            let x = windows(batch as u64, batch);
            model.run_into(&x, batch, &mut out).unwrap();
            assert_eq!(out.score.len(), batch);
            assert_eq!(out.channel_error.len(), batch * C);
            // Each window is scored independently of its batch mates.
            let single = model.run(&x[..C * T], 1).unwrap();
            assert!((single.score[0] - out.score[0]).abs() < 1e-6);
        }
        let err = model.run(&windows(1, 2)[..C * T + 1], 1).unwrap_err();
        assert!(matches!(err, RuntimeError::Input { .. }), "{err}");
        assert!(err.to_string().contains("expected 48"), "{err}");
        let err = model.run(&[], 0).unwrap_err();
        assert!(err.to_string().contains("batch is 0"), "{err}");
    }

    #[test]
    fn export_is_deterministic_and_keeps_zero_attributes() {
        let spec = conv_spec(5);
        let meta = metadata(&spec, "conv");
        let a = build_model(&spec, &meta).unwrap().encode_to_vec();
        let b = build_model(&conv_spec(5), &meta).unwrap().encode_to_vec();
        assert_eq!(a, b);
        let dir = tempfile::tempdir().unwrap();
        let (p1, p2) = (dir.path().join("a.onnx"), dir.path().join("b.onnx"));
        let model = build_model(&spec, &meta).unwrap();
        assert_eq!(write_model(&p1, &model).unwrap(), a.len() as u64);
        write_model(&p2, &build_model(&spec, &meta).unwrap()).unwrap();
        assert_eq!(std::fs::read(&p1).unwrap(), std::fs::read(&p2).unwrap());

        // proto2: `keepdims = 0` and `transB`-like zero attributes are present.
        let decoded = onnx::ModelProto::decode(a.as_slice()).unwrap();
        let graph = decoded.graph.unwrap();
        let reduce = graph
            .node
            .iter()
            .find(|n| n.op_type.as_deref() == Some("ReduceMean"))
            .unwrap();
        let keepdims = reduce
            .attribute
            .iter()
            .find(|a| a.name.as_deref() == Some("keepdims"))
            .unwrap();
        assert_eq!(keepdims.i, Some(0));
        assert_eq!(decoded.ir_version, Some(IR_VERSION));
        assert_eq!(decoded.opset_import[0].version, Some(OPSET_VERSION));
        let meta_json = &decoded.metadata_props[0];
        assert_eq!(meta_json.key.as_deref(), Some(METADATA_KEY));
        assert_eq!(
            ModelMetadata::from_json(meta_json.value.as_deref().unwrap()).unwrap(),
            meta
        );
    }

    #[test]
    fn invalid_specs_name_the_layer() {
        let check = |spec: NetworkSpec, want: &[&str]| {
            let err = build_model(&spec, &metadata(&conv_spec(0), "conv")).unwrap_err();
            let msg = err.to_string();
            for w in want {
                assert!(msg.contains(w), "{msg:?} lacks {w:?}");
            }
            // The reference pass validates the same way.
            assert!(reference_forward(&spec, &windows(0, 1), 1).is_err());
        };
        let mut s = conv_spec(0);
        s.layers[2] = conv(&mut Rng(1), 7, 4, 3, 2, 1);
        check(
            s,
            &["layer 2 (Conv1d)", "expects 7 input channels", "has 8"],
        );

        let mut s = conv_spec(0);
        if let Layer::ConvTranspose1d { weight, .. } = &mut s.layers[4] {
            weight.pop();
        }
        check(
            s,
            &[
                "layer 4 (ConvTranspose1d)",
                "weight has 95 values",
                "[4, 8, 3]",
            ],
        );

        let mut s = conv_spec(0);
        if let Layer::Conv1d { bias, .. } = &mut s.layers[0] {
            bias.push(0.0);
        }
        check(s, &["layer 0 (Conv1d)", "bias has 9 values, expected 8"]);

        let mut s = conv_spec(0);
        if let Layer::ConvTranspose1d { output_padding, .. } = &mut s.layers[6] {
            *output_padding = 0;
        }
        check(s, &["layer 6 (ConvTranspose1d)", "[3, 15]", "[3, 16]"]);

        let mut s = dense_spec(0);
        s.layers[4] = dense(&mut Rng(2), 4, 47);
        check(s, &["layer 4 (Dense)", "47 features", "48"]);

        let mut s = dense_spec(0);
        s.layers.insert(2, conv(&mut Rng(3), 12, 3, 1, 1, 0));
        check(s, &["layer 2 (Conv1d)", "follows a dense layer"]);

        let mut s = dense_spec(0);
        s.layers[0] = dense(&mut Rng(4), 40, 12);
        check(s, &["layer 0 (Dense)", "expects 40 inputs", "48 values"]);

        let mut s = conv_spec(0);
        if let Layer::Conv1d { weight, .. } = &mut s.layers[2] {
            weight[3] = f32::NAN;
        }
        check(s, &["layer 2 (Conv1d)", "non-finite"]);

        let mut s = conv_spec(0);
        s.layers[0] = conv(&mut Rng(5), C, 8, 21, 1, 2);
        check(s, &["layer 0 (Conv1d)", "kernel 21 is longer"]);

        let mut s = conv_spec(0);
        s.layers.clear();
        check(s, &["no layers"]);

        let mut s = conv_spec(0);
        s.channel_weights = vec![1.0, 1.0];
        check(s, &["2 channel weights for 3 channels"]);
    }

    #[test]
    fn metadata_must_describe_the_network() {
        let spec = conv_spec(0);
        let mut meta = metadata(&spec, "conv");
        meta.channels.push("extra".into());
        meta.normaliser.mean.push(0.0);
        meta.normaliser.std.push(1.0);
        meta.score.channel_weights.push(1.0);
        let err = build_model(&spec, &meta).unwrap_err().to_string();
        assert!(
            err.contains("metadata lists 4 channels, the network has 3"),
            "{err}"
        );

        let mut meta = metadata(&spec, "conv");
        meta.window = 20;
        let err = build_model(&spec, &meta).unwrap_err().to_string();
        assert!(err.contains("window is 20"), "{err}");

        let mut meta = metadata(&spec, "conv");
        meta.score.channel_weights = vec![1.0, 1.0, 1.0];
        let err = build_model(&spec, &meta).unwrap_err().to_string();
        assert!(err.contains("channel weights"), "{err}");
    }

    #[test]
    fn atomic_write_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let spec = dense_spec(6);
        let model = build_model(&spec, &metadata(&spec, "dense")).unwrap();
        let path = dir.path().join("model.onnx");
        std::fs::write(&path, b"old").unwrap();
        let n = write_model(&path, &model).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), n);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["model.onnx"]);

        // A missing folder is an error naming the path, with nothing left behind.
        let bad = dir.path().join("missing/model.onnx");
        let err = write_model(&bad, &model).unwrap_err().to_string();
        assert!(err.contains("missing/model.onnx"), "{err}");
        let err = write_model(Path::new("/"), &model).unwrap_err().to_string();
        assert!(err.contains("no file name"), "{err}");
    }

    /// Writes `model` after `edit` to a fresh file and returns the load error.
    fn load_error(edit: impl FnOnce(&mut onnx::ModelProto)) -> (String, RuntimeError) {
        let dir = tempfile::tempdir().unwrap();
        let spec = conv_spec(7);
        let mut model = build_model(&spec, &metadata(&spec, "conv")).unwrap();
        edit(&mut model);
        let path = dir.path().join("edited.onnx");
        write_model(&path, &model).unwrap();
        let err = LoadedModel::load(&path, &cpu()).unwrap_err();
        (err.to_string(), err)
    }

    fn set_metadata(model: &mut onnx::ModelProto, meta: &ModelMetadata) {
        model.metadata_props[0].value = Some(meta.to_json());
    }

    #[test]
    fn model_that_disagrees_with_its_metadata_is_refused() {
        let spec = conv_spec(7);
        let mut four = metadata(&spec, "conv");
        four.channels.push("sensor_3".into());
        four.normaliser.mean.push(0.0);
        four.normaliser.std.push(1.0);
        four.score.channel_weights.push(1.0);
        let (msg, err) = load_error(|m| set_metadata(m, &four));
        assert!(matches!(err, RuntimeError::Graph { .. }), "{msg}");
        assert!(msg.contains("edited.onnx"), "{msg}");
        assert!(msg.contains("input \"window\""), "{msg}");
        assert!(msg.contains("4 channels"), "{msg}");
        assert!(msg.contains("dimension 1 is 3"), "{msg}");

        let mut longer = metadata(&spec, "conv");
        longer.window = 32;
        let (msg, _) = load_error(|m| set_metadata(m, &longer));
        assert!(msg.contains("window length 32"), "{msg}");

        let (msg, err) = load_error(|m| m.metadata_props.clear());
        assert!(matches!(err, RuntimeError::Metadata { .. }), "{msg}");
        assert!(
            msg.contains("no metadata_props entry \"anomalyd\""),
            "{msg}"
        );

        let (msg, _) =
            load_error(|m| m.metadata_props[0].value = Some("{\"schema_version\": 9}".into()));
        assert!(msg.contains("schema_version 9"), "{msg}");

        // A fixed batch dimension cannot serve micro-batches.
        let (msg, _) = load_error(|m| {
            let g = m.graph.as_mut().unwrap();
            if let Some(onnx::type_proto::Value::TensorType(t)) =
                g.input[0].r#type.as_mut().unwrap().value.as_mut()
            {
                t.shape.as_mut().unwrap().dim[0].value = Some(dimension::Value::DimValue(1));
            }
        });
        assert!(msg.contains("fixed batch dimension 1"), "{msg}");

        // A graph without the score output.
        let (msg, _) = load_error(|m| {
            let g = m.graph.as_mut().unwrap();
            g.output.retain(|o| o.name.as_deref() != Some(OUTPUT_SCORE));
        });
        assert!(msg.contains("no output \"score\""), "{msg}");
    }

    #[test]
    fn truncated_and_garbage_files_give_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = export(dir.path(), "good.onnx", &conv_spec(8), "conv");
        let bytes = std::fs::read(&path).unwrap();

        let truncated = dir.path().join("truncated.onnx");
        std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
        let err = LoadedModel::load(&truncated, &cpu()).unwrap_err();
        assert!(matches!(err, RuntimeError::Load { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("truncated.onnx is not a valid ONNX model"),
            "{err}"
        );

        let garbage = dir.path().join("garbage.onnx");
        std::fs::write(
            &garbage,
            Rng(9)
                .vec(1000, 1.0)
                .iter()
                .flat_map(|f| f.to_le_bytes())
                .collect::<Vec<u8>>(),
        )
        .unwrap();
        let err = LoadedModel::load(&garbage, &cpu()).unwrap_err();
        assert!(
            err.to_string()
                .contains("garbage.onnx is not a valid ONNX model"),
            "{err}"
        );

        let empty = dir.path().join("empty.onnx");
        std::fs::write(&empty, b"").unwrap();
        let err = LoadedModel::load(&empty, &cpu()).unwrap_err();
        assert!(err.to_string().contains("empty.onnx"), "{err}");
        assert!(err.to_string().contains("empty"), "{err}");

        let err = LoadedModel::load(&dir.path().join("absent.onnx"), &cpu()).unwrap_err();
        assert!(matches!(err, RuntimeError::Read { .. }), "{err}");
        assert!(err.to_string().contains("absent.onnx"), "{err}");
    }

    #[test]
    fn describe_model_shows_metadata_and_graph() {
        let dir = tempfile::tempdir().unwrap();
        let spec = conv_spec(10);
        let path = export(dir.path(), "m.onnx", &spec, "conv");
        let text = describe_model(&path, &cpu()).unwrap();
        for want in [
            "pump version 2026-11-27.1 (conv)",
            "sensor_0, sensor_1, sensor_2",
            "window 16 frames, stride 4 frames",
            "threshold:   0.5 (quantile*factor, quantile 0.99, factor 1.5)",
            "gamma(shape 2, rate 10)",
            "raise after 3, clear after 5",
            "window          Tensor<f32>(batch, 3, 16)",
            "reconstruction  Tensor<f32>(batch, 3, 16)",
            "score           Tensor<f32>(batch)",
            "channel_error   Tensor<f32>(batch, 3)",
            "sha256:",
        ] {
            assert!(text.contains(want), "{want:?} missing from\n{text}");
        }
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(
            text.contains(&format!("size:        {size} bytes")),
            "{text}"
        );
        assert_eq!(read_metadata(&path).unwrap(), metadata(&spec, "conv"));
    }

    #[test]
    fn auto_falls_back_to_cpu_and_cuda_fails_loudly() {
        let dir = tempfile::tempdir().unwrap();
        let path = export(dir.path(), "m.onnx", &dense_spec(11), "dense");
        let auto = RuntimeOptions {
            execution_provider: ExecutionProvider::Auto,
            ..RuntimeOptions::cpu()
        };
        let mut model = LoadedModel::load(&path, &auto).unwrap();
        assert_eq!(model.provider, ActiveProvider::Cpu);
        assert_eq!(model.run(&windows(1, 2), 2).unwrap().score.len(), 2);

        let cuda = RuntimeOptions {
            execution_provider: ExecutionProvider::Cuda,
            ..RuntimeOptions::cpu()
        };
        let err = LoadedModel::load(&path, &cuda).unwrap_err();
        assert!(matches!(err, RuntimeError::Provider { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("CUDA execution provider could not be registered"),
            "{msg}"
        );
        assert!(msg.contains("m.onnx"), "{msg}");
    }

    /// Old vs new export of the same trained model, e.g. the shipped one
    /// before and after a change of the exporter: the weights are the same
    /// numbers (a polyphase kernel holds the transposed one's taps plus
    /// zeros), the outputs agree, and the time per window at batch 1, 16 and
    /// 256 (one thread, old and new alternating, best of 5 rounds). Run with
    /// `ANOMALYD_COMPARE_OLD=old.onnx [ANOMALYD_COMPARE_NEW=new.onnx] cargo
    /// test -p anomalyd-train --lib export::tests::compare_exports --
    /// --ignored --nocapture` (new: `models/pump.onnx` by default).
    #[test]
    #[ignore = "measurement, not a check"]
    fn compare_exports() {
        let Some(old_path) = std::env::var_os("ANOMALYD_COMPARE_OLD").map(PathBuf::from) else {
            eprintln!("set ANOMALYD_COMPARE_OLD to the old model file");
            return;
        };
        let new_path = std::env::var_os("ANOMALYD_COMPARE_NEW").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/pump.onnx"),
            PathBuf::from,
        );
        let decode = |p: &Path| onnx::ModelProto::decode(std::fs::read(p).unwrap().as_slice());
        let (old_proto, new_proto) = (decode(&old_path).unwrap(), decode(&new_path).unwrap());
        let floats = |t: &onnx::TensorProto| -> Vec<f32> {
            t.raw_data
                .as_deref()
                .unwrap_or_default()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        };
        let new_inits = &new_proto.graph.as_ref().unwrap().initializer;
        for old in &old_proto.graph.as_ref().unwrap().initializer {
            let name = old.name.as_deref().unwrap();
            if old.data_type != Some(DataType::Float as i32) {
                continue;
            }
            let new = new_inits
                .iter()
                .find(|t| t.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("{name} missing from the new model"));
            let (a, mut b) = (floats(old), floats(new));
            if name.ends_with(".bias") {
                assert!(b.chunks(a.len()).all(|c| c == a), "{name}");
            } else {
                let mut a = a.clone();
                assert!(b.len() >= a.len(), "{name}");
                a.resize(b.len(), 0.0);
                a.sort_by(f32::total_cmp);
                b.sort_by(f32::total_cmp);
                assert_eq!(
                    a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    b.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{name}"
                );
            }
            println!("{name}: {:?} -> {:?}, same values", old.dims, new.dims);
        }
        let ops = |m: &onnx::ModelProto| -> Vec<String> {
            let g = m.graph.as_ref().unwrap();
            g.node.iter().map(|n| n.op_type.clone().unwrap()).collect()
        };
        println!("old graph: {}", ops(&old_proto).join(" "));
        println!("new graph: {}", ops(&new_proto).join(" "));

        let mut old = LoadedModel::load(&old_path, &cpu()).unwrap();
        let mut new = LoadedModel::load(&new_path, &cpu()).unwrap();
        assert_eq!(old.metadata, new.metadata);
        let per_window = old.window_len();
        let x = Rng(5).vec(256 * per_window, 2.0);
        let (a, b) = (
            old.run_with_reconstruction(&x, 256).unwrap(),
            new.run_with_reconstruction(&x, 256).unwrap(),
        );
        let max_diff = |u: &[f32], v: &[f32]| {
            u.iter()
                .zip(v)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0f32, f32::max)
        };
        println!(
            "max abs difference over 256 windows: reconstruction {:e}, channel_error {:e}, score {:e}",
            max_diff(
                a.reconstruction.as_deref().unwrap(),
                b.reconstruction.as_deref().unwrap()
            ),
            max_diff(&a.channel_error, &b.channel_error),
            max_diff(&a.score, &b.score)
        );

        for batch in [1usize, 16, 256] {
            let x = &x[..batch * per_window];
            let iters = (20_000 / batch).max(100);
            let mut best = [f64::MAX; 2];
            let mut out = BatchOutput::default();
            for _ in 0..5 {
                for (model, best) in [&mut old, &mut new].into_iter().zip(&mut best) {
                    for _ in 0..20 {
                        model.run_into(x, batch, &mut out).unwrap();
                    }
                    let start = Instant::now();
                    for _ in 0..iters {
                        model.run_into(x, batch, &mut out).unwrap();
                    }
                    let us = start.elapsed().as_secs_f64() * 1e6 / (iters * batch) as f64;
                    *best = best.min(us);
                }
            }
            println!(
                "batch {batch:>3}: old {:.2} us/window, new {:.2} us/window ({:.2}x)",
                best[0],
                best[1],
                best[0] / best[1]
            );
        }
    }

    /// Export time, file size and CPU latency of the test specs; run with
    /// `cargo test -p anomalyd-train --release --lib export::tests::measure -- --ignored --nocapture`.
    #[test]
    #[ignore = "measurement, not a check"]
    fn measure() {
        let dir = tempfile::tempdir().unwrap();
        for (arch, spec) in [("conv", conv_spec(1)), ("dense", dense_spec(2))] {
            let meta = metadata(&spec, arch);
            let start = Instant::now();
            let model = build_model(&spec, &meta).unwrap();
            let path = dir.path().join(format!("{arch}.onnx"));
            let size = write_model(&path, &model).unwrap();
            let export = start.elapsed();
            let mut loaded = LoadedModel::load(&path, &cpu()).unwrap();
            println!("{arch}: export {export:?}, {size} bytes");
            for batch in [1usize, 16, 256] {
                let x = windows(3, batch);
                let mut out = BatchOutput::default();
                for _ in 0..20 {
                    loaded.run_into(&x, batch, &mut out).unwrap();
                }
                let iters = (20_000 / batch).max(50);
                let start = Instant::now();
                for _ in 0..iters {
                    loaded.run_into(&x, batch, &mut out).unwrap();
                }
                let per_call = start.elapsed() / iters as u32;
                let per_window = per_call.as_secs_f64() / batch as f64;
                println!(
                    "  batch {batch:>3}: {per_call:?} per call, {:.2} us per window, {:.0} windows/s",
                    per_window * 1e6,
                    1.0 / per_window
                );
            }
        }
    }
}
