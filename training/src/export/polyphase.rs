//! The polyphase rewrite of a transposed convolution: one stride-1
//! convolution plus an interleave of its phases, which ONNX Runtime runs
//! with its blocked kernels instead of GEMM + col2im.

use super::graph::{GraphBuilder, attr_int, attr_ints, conv_attrs, dim};

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
pub(super) struct Polyphase {
    in_channels: usize,
    out_channels: usize,
    stride: usize,
    kernel: usize,
    pads: [usize; 2],
    /// Output frames of the convolution, per phase.
    per_phase: usize,
    /// Output frames of the transposed convolution.
    pub(super) out_len: usize,
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
    pub(super) fn derive(
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
    pub(super) fn emit(&self, g: &mut GraphBuilder, index: usize, input: &str, output: &str) {
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

#[cfg(test)]
mod tests;
