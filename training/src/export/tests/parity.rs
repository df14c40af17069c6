//! The exported graph through ONNX Runtime agrees with the reference
//! forward pass and the score definition, for every network shape.

use anomalyd::model::{BatchOutput, RuntimeError};

use super::*;

#[test]
fn conv_export_matches_reference_through_ort() {
    check_parity(&conv_spec(1), "conv");
}

#[test]
fn recent_bias_and_max_export_match_the_definition_through_ort() {
    for aggregation in [Aggregation::Mean, Aggregation::Max] {
        for channel_error in [
            ChannelError::RecentBias { frames: 4 },
            ChannelError::RecentMse { frames: 4 },
        ] {
            check_parity(
                &NetworkSpec {
                    channel_error,
                    aggregation,
                    ..conv_spec(6)
                },
                "conv",
            );
        }
    }
    check_parity(
        &NetworkSpec {
            aggregation: Aggregation::Max,
            ..dense_spec(7)
        },
        "dense",
    );
    let too_long = NetworkSpec {
        channel_error: ChannelError::RecentBias { frames: T + 1 },
        ..conv_spec(6)
    };
    assert!(
        reference_forward(&too_long, &windows(0, 1), 1)
            .unwrap_err()
            .to_string()
            .contains("recent_bias error averages")
    );
}

#[test]
fn centered_channels_are_centered_inside_the_graph() {
    let mut centered = vec![false; C];
    centered[1] = true;
    let spec = NetworkSpec {
        centered,
        ..conv_spec(5)
    };
    check_parity(&spec, "conv");
    // A level shift of the centered channel changes nothing; one of
    // another channel does.
    let dir = tempfile::tempdir().unwrap();
    let path = export(dir.path(), "c.onnx", &spec, "conv");
    let mut model = LoadedModel::load(&path, &cpu()).unwrap();
    let x = windows(7, 1);
    let shift = |channel: usize| {
        let mut s = x.clone();
        s[channel * T..(channel + 1) * T]
            .iter_mut()
            .for_each(|v| *v += 3.0);
        s
    };
    let base = model.run(&x, 1).unwrap();
    let level1 = model.run(&shift(1), 1).unwrap();
    let level0 = model.run(&shift(0), 1).unwrap();
    assert!((base.score[0] - level1.score[0]).abs() < 1e-4);
    assert!((base.score[0] - level0.score[0]).abs() > 1e-2);
    let wrong = NetworkSpec {
        centered: vec![true],
        ..conv_spec(5)
    };
    assert!(
        reference_forward(&wrong, &x, 1)
            .unwrap_err()
            .to_string()
            .contains("centering flags")
    );
}

#[test]
fn dense_export_matches_reference_through_ort() {
    check_parity(&dense_spec(2), "dense");
}

#[test]
fn conv_then_dense_export_matches_reference_through_ort() {
    check_parity(&mixed_spec(3), "mixed");
}

#[test]
fn transposed_convolutions_match_reference_through_ort() {
    for (spec, arch) in [
        (pump_like_spec(12), "stride 2, kernel 7"),
        (stride3_spec(13), "stride 3, odd padding"),
        (fallback_spec(14), "fallback"),
    ] {
        check_parity(&spec, arch);
        let centered = NetworkSpec {
            centered: vec![true, false, true],
            ..spec
        };
        check_parity(&centered, arch);
    }
}

#[test]
fn batch_sizes_and_buffer_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let spec = conv_spec(4);
    let path = export(dir.path(), "m.onnx", &spec, "conv");
    let mut model = LoadedModel::load(&path, &cpu()).unwrap();
    let mut out = BatchOutput::default();
    for batch in [1, 7, 2] {
        let x = windows(batch as u64, batch);
        model.run_into(&x, batch, &mut out).unwrap();
        assert_eq!(out.score.len(), batch);
        assert_eq!(out.channel_error.len(), batch * C);
        // Each window is scored independently of its batch mates.
        let single = model.run(&x[..C * T], 1).unwrap();
        assert!((single.score[0] - out.score[0]).abs() < 1e-6);
    }
    let err = model.run(&windows(1, 2)[..C * T + 1], 1).unwrap_err();
    assert!(matches!(err, RuntimeError::Input { .. }), "{err}");
    assert!(err.to_string().contains("expected 48"), "{err}");
    let err = model.run(&[], 0).unwrap_err();
    assert!(err.to_string().contains("batch is 0"), "{err}");
}
