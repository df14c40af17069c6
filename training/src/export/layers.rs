//! The network walk: one graph fragment per planned layer, from the
//! (centered) input window to the `reconstruction` output.
//!
//! Convolutions are written as 2-D ones over `[N, C, 1, L]`: ONNX
//! Runtime's blocked (NCHWc) kernels only serve 2-D convolutions. The
//! activation is unsqueezed once, before the first convolution, and
//! squeezed back for the reconstruction.

use anomalyd::core::contract::OUTPUT_RECONSTRUCTION;

use crate::model::network::Layer;

use super::graph::{GraphBuilder, attr_float, attr_int, conv_attrs, dim};
use super::plan::{Act, Step};
use super::polyphase::Polyphase;

/// Adds every layer of the plan from `input`; returns the name of the last
/// tensor and whether it is still `[N, C, 1, L]`.
pub(super) fn emit_layers(g: &mut GraphBuilder, steps: &[Step<'_>], input: &str) -> (String, bool) {
    let mut current = input.to_owned();
    let mut rank4 = false;
    for step in steps {
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
        emit_layer(g, step, &current, &out);
        current = out;
    }
    (current, rank4)
}

/// The layer's own operator(s), from `current` to `out`.
fn emit_layer(g: &mut GraphBuilder, step: &Step<'_>, current: &str, out: &str) {
    let i = step.index;
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
                &[current, &weight, &bias],
                out,
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
                p.emit(g, i, current, out);
            } else {
                // Not expressible as one convolution (e.g. it would
                // need negative pads): a 2-D ConvTranspose.
                g.init_f32(&weight, &[dim(ci), dim(co), 1, dim(*kernel)], w);
                g.init_f32(&bias, &[dim(co)], b);
                g.node(
                    "ConvTranspose",
                    &format!("layer{i}.conv_transpose"),
                    &[current, &weight, &bias],
                    out,
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
                &[current, &weight, &bias],
                out,
                vec![
                    attr_float("alpha", 1.0),
                    attr_float("beta", 1.0),
                    attr_int("transA", 0),
                    attr_int("transB", 0),
                ],
            );
        }
        Layer::Relu => {
            g.node("Relu", &format!("layer{i}.relu"), &[current], out, vec![]);
        }
    }
}

/// Names the last tensor `reconstruction`: reshapes a flat output, squeezes
/// a 2-D convolution's `[N, C, 1, T]`, or renames the last node's output.
pub(super) fn emit_reconstruction(
    g: &mut GraphBuilder,
    steps: &[Step<'_>],
    current: &str,
    rank4: bool,
    (c, t): (i64, i64),
) {
    // `[N, C, 1, T]`, or rename the last tensor.
    if matches!(steps.last().map(|s| s.output), Some(Act::Flat { .. })) {
        let shape = "reconstruction.shape";
        g.init_i64(shape, &[3], &[-1, c, t]);
        g.node(
            "Reshape",
            "reconstruction.reshape",
            &[current, shape],
            OUTPUT_RECONSTRUCTION,
            vec![attr_int("allowzero", 0)],
        );
    } else if rank4 {
        let axes = "reconstruction.squeeze.axes";
        g.init_i64(axes, &[1], &[2]);
        g.node(
            "Squeeze",
            "reconstruction.squeeze",
            &[current, axes],
            OUTPUT_RECONSTRUCTION,
            vec![],
        );
    } else if let Some(last) = g.nodes.last_mut() {
        last.output = vec![OUTPUT_RECONSTRUCTION.to_owned()];
    }
}
