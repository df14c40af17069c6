//! What the daemon's runtime wrapper makes of exported files: models that
//! disagree with their metadata, broken files, `inspect-model`'s text and
//! the execution-provider choice.

use anomalyd::core::contract::OUTPUT_SCORE;
use anomalyd::model::{ExecutionProvider, RuntimeError, describe_model, read_metadata};

use super::*;
use crate::export::onnx_proto as onnx;
use crate::export::onnx_proto::tensor_shape_proto::dimension;

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
