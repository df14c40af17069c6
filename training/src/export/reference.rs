//! The reference forward pass: plain loops in f64 over the export plan,
//! independent of any deep-learning library, that the exported graph and
//! the trainer's own forward pass are checked against.

use crate::model::network::{Layer, NetworkSpec};

use super::ExportError;
use super::plan::{Act, Step, plan};

/// Plain-loop forward pass of `spec` over `batch` windows (`batch * C * T`
/// values, each window `[C, T]` row-major); returns the reconstruction in the
/// same layout. Accumulates in f64: it is the reference the exported graph
/// (and the trainer's own forward pass) are checked against.
///
/// # Errors
/// The spec is invalid (as [`super::build_model`]) or `windows` does not hold
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

pub(super) fn forward_layer(step: &Step<'_>, x: &[f64]) -> Vec<f64> {
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
