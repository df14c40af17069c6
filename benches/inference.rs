//! Criterion benchmarks of inference through ONNX Runtime (one intra-op
//! thread, as the daemon runs it), per architecture and batch size, reported
//! per window (`Throughput::Elements(batch)`):
//! - `conv`: the shipped `models/pump.onnx` (C = 8, filters 32/16, kernel
//!   7), or the file named by `ANOMALYD_BENCH_CONV_MODEL`;
//! - `dense`: a dense autoencoder 480-64-16-64-480 trained on the fly by
//!   `target/release/anomalyd-train --synthetic-pump 5000 --arch dense` into
//!   `target/bench-models/dense.onnx` (or the file named by
//!   `ANOMALYD_BENCH_DENSE_MODEL`); skipped when neither exists;
//! - `scorer`: the daemon's scoring step at batch 256 (batch assembly,
//!   inference, detectors, error probability, output records);
//! - `sgemm`: a 256x256x256 single-precision matrix product through ndarray
//!   (matrixmultiply, AVX2+FMA), a reference point for what one core does.
//!
//! `cargo bench -p anomalyd --bench inference`; needs the ONNX Runtime
//! library (`ORT_DYLIB_PATH` or `./.ort/`).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anomalyd::core::DetectorSettings;
use anomalyd::model::{BatchOutput, LoadedModel, RuntimeOptions};
use anomalyd::ops::Metrics;
use anomalyd::pipeline::{AssetBinding, NamedModel, ScoreRequest, Scorer};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const BATCHES: [usize; 3] = [1, 16, 256];

/// Deterministic values in about [-2, 2], like normalised readings.
fn windows(n: usize) -> Vec<f32> {
    let mut x: u32 = 0x1234_5678;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as f32 / u32::MAX as f32) * 4.0 - 2.0
        })
        .collect()
}

fn load(path: &Path) -> Option<LoadedModel> {
    match LoadedModel::load(path, &RuntimeOptions::cpu()) {
        Ok(m) => Some(m),
        Err(e) => {
            eprintln!("{}: skipped: {e}", path.display());
            None
        }
    }
}

/// The dense model: from the environment, a previous run, or trained now.
fn dense_model() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ANOMALYD_BENCH_DENSE_MODEL") {
        return Some(PathBuf::from(p));
    }
    let out = PathBuf::from("target/bench-models/dense.onnx");
    if out.is_file() {
        return Some(out);
    }
    let trainer = Path::new("target/release/anomalyd-train");
    if !trainer.is_file() {
        eprintln!(
            "dense: skipped: build the trainer first (cargo build --release -p anomalyd-train) \
             or set ANOMALYD_BENCH_DENSE_MODEL"
        );
        return None;
    }
    std::fs::create_dir_all("target/bench-models").ok()?;
    let status = std::process::Command::new(trainer)
        .args(["--synthetic-pump", "5000", "--arch", "dense", "--out"])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .ok()?;
    status.success().then_some(out)
}

fn bench_model(c: &mut Criterion, arch: &str, mut model: LoadedModel) {
    let per_window = model.window_len();
    let mut g = c.benchmark_group(format!("inference_{arch}"));
    let mut out = BatchOutput::default();
    for batch in BATCHES {
        let input = windows(per_window * batch);
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(format!("batch_{batch}"), |b| {
            b.iter(|| {
                model
                    .run_into(black_box(&input), batch, &mut out)
                    .expect("inference runs");
                black_box(&out.score);
            })
        });
    }
    g.finish();
}

/// The shipped conv model, or the one named by `ANOMALYD_BENCH_CONV_MODEL`.
fn conv_model() -> PathBuf {
    std::env::var_os("ANOMALYD_BENCH_CONV_MODEL")
        .map_or_else(|| PathBuf::from("models/pump.onnx"), PathBuf::from)
}

fn conv(c: &mut Criterion) {
    if let Some(m) = load(&conv_model()) {
        bench_model(c, "conv", m);
    }
}

fn dense(c: &mut Criterion) {
    if let Some(m) = dense_model().and_then(|p| load(&p)) {
        bench_model(c, "dense", m);
    }
}

fn scorer(c: &mut Criterion) {
    let Some(model) = load(&conv_model()) else {
        return;
    };
    let per_window = model.window_len();
    let channels: Arc<[String]> = model.metadata.channels.clone().into();
    let threshold = model.metadata.threshold.value;
    let mut scorer = Scorer::new(
        vec![NamedModel {
            name: "pump".into(),
            model,
        }],
        Arc::new(Metrics::default()),
    );
    // 256 windows of 200 assets, as a busy daemon batches them.
    let bindings: Vec<Arc<AssetBinding>> = (0..200)
        .map(|a| {
            Arc::new(AssetBinding {
                asset: format!("pump-{a:03}").into(),
                model: "pump".into(),
                detector: DetectorSettings {
                    threshold,
                    raise_after: 3,
                    clear_after: 5,
                    clear_ratio: 0.8,
                    adapt: Default::default(),
                },
                channels: channels.clone(),
            })
        })
        .collect();
    let data = windows(per_window);
    let batch = 256;
    let mut g = c.benchmark_group("scorer");
    g.throughput(Throughput::Elements(batch as u64));
    g.bench_function("conv_batch_256", |b| {
        let mut requests = Vec::with_capacity(batch);
        let mut out = Vec::with_capacity(batch * 2);
        let mut ts = 0i64;
        b.iter(|| {
            for i in 0..batch {
                ts += 1_000_000_000;
                requests.push(ScoreRequest {
                    binding: bindings[i % bindings.len()].clone(),
                    end_ts: ts,
                    data: data.clone(),
                    rebuild: false,
                    cut_ns: 0,
                });
            }
            scorer.score(&mut requests, &mut out);
            black_box(&out);
            out.clear();
        })
    });
    g.finish();
}

fn sgemm(c: &mut Criterion) {
    let n = 256;
    let a = ndarray::Array2::from_shape_vec((n, n), windows(n * n)).expect("shape");
    let b = a.t().to_owned();
    let mut g = c.benchmark_group("sgemm");
    // Elements = floating-point operations (2 n^3): "elem/s" reads as FLOP/s.
    g.throughput(Throughput::Elements(2 * (n as u64).pow(3)));
    g.bench_function("256x256x256_flops", |bench| {
        bench.iter(|| black_box(a.dot(&b)))
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = inference;
    config = config();
    targets = conv, dense, scorer, sgemm
}
criterion_main!(inference);
