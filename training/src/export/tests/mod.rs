//! Tests of the exporter: the shared fixtures (seeded weights, small
//! conv/dense/mixed networks, metadata) and the parity check through ONNX
//! Runtime, then one submodule per concern.

mod graph;
mod measure;
mod parity;
mod runtime;

use std::path::{Path, PathBuf};

use anomalyd::core::contract::{
    DetectorDefaults, ErrorDistribution, ModelMetadata, NormaliserParams, SCHEMA_VERSION,
    ScoreDefinition, ThresholdSpec, TrainingSummary,
};
use anomalyd::model::{ActiveProvider, LoadedModel, RuntimeOptions};

use super::{build_model, reference_forward, write_model};
use crate::model::network::{Aggregation, ChannelError, Layer, NetworkSpec};

/// splitmix64: a seeded, dependency-free generator for test weights.
pub(super) struct Rng(pub(super) u64);

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
    pub(super) fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
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

pub(super) fn conv_t(
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
            min: vec![],
            max: vec![],
        },
        score: ScoreDefinition {
            kind: crate::model::network::score_kind(spec.channel_error, spec.aggregation),
            channel_weights: spec.channel_weights.clone(),
            recent_frames: spec.channel_error.recent_frames(),
            centered_channels: vec![],
        },
        threshold: ThresholdSpec {
            value: 0.5,
            method: "quantile*factor".into(),
            quantile: 0.99,
            factor: 1.5,
            target_far: None,
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
        ChannelError::RecentBias { frames } | ChannelError::RecentMse { frames } => T - frames,
    };
    for b in 0..batch {
        let mut weighted = Vec::new();
        for (c, weight) in WEIGHTS.iter().enumerate() {
            let base = (b * C + c) * T;
            let d = (from..T).map(|t| f64::from(target[base + t] - expected[base + t]));
            let ce: f64 = match spec.channel_error {
                ChannelError::Mse => d.map(|v| v * v).sum::<f64>() / T as f64,
                ChannelError::RecentBias { frames } => (d.sum::<f64>() / frames as f64).powi(2),
                ChannelError::RecentMse { frames } => d.map(|v| v * v).sum::<f64>() / frames as f64,
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
