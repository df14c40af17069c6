//! The export plan: checks that a [`NetworkSpec`]'s layers chain from
//! `[C, T]` back to `[C, T]` with weights of the right lengths, and lists
//! each layer with its input and output activation ([`Step`]). The graph
//! builder and the reference forward pass both walk this plan.

use crate::model::network::{Layer, NetworkSpec};

use super::ExportError;

/// The activation between layers, per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Act {
    /// `[channels, len]`.
    Seq { channels: usize, len: usize },
    /// `[features]`.
    Flat { features: usize },
}

impl Act {
    pub(super) fn size(self) -> usize {
        match self {
            Act::Seq { channels, len } => channels * len,
            Act::Flat { features } => features,
        }
    }
}

/// One validated layer with its input and output activations.
pub(super) struct Step<'a> {
    pub(super) index: usize,
    pub(super) layer: &'a Layer,
    /// A `Flatten` goes before this (first dense layer after a sequence).
    pub(super) flatten_before: bool,
    pub(super) input: Act,
    pub(super) output: Act,
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
pub(super) fn plan(spec: &NetworkSpec) -> Result<Vec<Step<'_>>, ExportError> {
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
    if let Some(frames) = spec.channel_error.recent_frames()
        && (frames == 0 || frames > t)
    {
        return Err(ExportError::Network(format!(
            "the {} error averages {frames} frames; the window has {t}",
            spec.channel_error.name()
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
pub(super) fn step_output(layer: &Layer, input: Act) -> Result<(Act, bool), String> {
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
