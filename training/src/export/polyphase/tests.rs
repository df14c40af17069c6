//! The polyphase rewrite against the transposed convolution it replaces,
//! over every small stride, kernel, padding and length.

use super::*;
use crate::export::plan::{Act, Step, step_output};
use crate::export::reference::forward_layer;
use crate::export::tests::{Rng, conv_t};
use crate::model::network::Layer;

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
                            acc += f64::from(p.weight[(oc * ci + i) * k + t]) * x[i * in_len + n];
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
                        let Some(pp) = Polyphase::derive(ci, co, k, s, p, op, in_len, weight, bias)
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
