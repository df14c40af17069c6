//! The graph's structure and the file's bytes: 2-D convolutions only,
//! deterministic encoding, zero attributes kept, atomic writes, and specs
//! or metadata that do not fit refused with the layer named.

use prost::Message;

use super::*;
use crate::export::onnx_proto as onnx;
use crate::export::{IR_VERSION, OPSET_VERSION};
use anomalyd::core::contract::METADATA_KEY;

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
