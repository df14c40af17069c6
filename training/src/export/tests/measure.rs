//! Measurements, not checks (`#[ignore]`d): old vs new export of the same
//! model, and export time, file size and latency of the test networks.

use std::time::Instant;

use anomalyd::model::BatchOutput;
use prost::Message;

use super::*;
use crate::export::onnx_proto as onnx;
use crate::export::onnx_proto::tensor_proto::DataType;

/// Old vs new export of the same trained model, e.g. the shipped one
/// before and after a change of the exporter: the weights are the same
/// numbers (a polyphase kernel holds the transposed one's taps plus
/// zeros), the outputs agree, and the time per window at batch 1, 16 and
/// 256 (one thread, old and new alternating, best of 5 rounds). Run with
/// `ANOMALYD_COMPARE_OLD=old.onnx [ANOMALYD_COMPARE_NEW=new.onnx] cargo
/// test -p anomalyd-train --lib export::tests::measure::compare_exports --
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
/// `cargo test -p anomalyd-train --release --lib export::tests::measure::measure -- --ignored --nocapture`.
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
