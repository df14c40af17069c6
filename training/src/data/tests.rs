//! Unit tests of the dataset loader: splits, several inputs, too few rows,
//! unknown channels, row ranges.

use super::*;

fn opts(inputs: Vec<InputSource>) -> DataOptions {
    DataOptions {
        inputs,
        rows: None,
        channels: None,
        timestamp_column: None,
        window: 8,
        stride: 1,
        validation_fraction: 0.25,
        sample_period_ms: None,
        max_imputed_fraction: 0.1,
    }
}

#[test]
fn synthetic_split_has_no_shared_rows() {
    let d = load_dataset(&opts(vec![InputSource::SyntheticPump {
        rows: 200,
        seed: 1,
    }]))
    .unwrap();
    assert_eq!(d.channels.len(), 8);
    assert_eq!(d.sample_period_ms, 1000);
    let s = &d.inputs[0];
    assert_eq!(s.boundary_windows_dropped, 7, "{s:?}");
    assert_eq!(
        s.train_windows + s.validation_windows + s.boundary_windows_dropped,
        s.windows
    );
    let last_train = *d.train.end_ts.last().unwrap();
    let first_val_start = d.validation.end_ts[0] - 7 * 1_000_000_000;
    assert!(last_train < first_val_start);
    assert_eq!(d.train.data.len(), d.train.len() * 8 * 8);
    // Normalised with training statistics: training data has mean ~0.
    let mean: f32 = d.train.data.iter().sum::<f32>() / d.train.data.len() as f32;
    assert!(mean.abs() < 0.2, "{mean}");
    assert_eq!(d.fingerprint.len(), 64);
}

#[test]
fn several_inputs_keep_their_windows_apart() {
    let one = load_dataset(&opts(vec![InputSource::SyntheticPump {
        rows: 100,
        seed: 1,
    }]))
    .unwrap();
    let two = load_dataset(&opts(vec![
        InputSource::SyntheticPump { rows: 100, seed: 1 },
        InputSource::SyntheticPump { rows: 100, seed: 2 },
    ]))
    .unwrap();
    assert_eq!(two.inputs[0].windows, one.inputs[0].windows);
    assert_eq!(
        two.train.len(),
        two.inputs.iter().map(|s| s.train_windows).sum::<usize>()
    );
    assert!(two.train.source.contains(&1));
}

#[test]
fn too_few_rows_says_how_many_are_needed() {
    let mut o = opts(vec![InputSource::SyntheticPump { rows: 5, seed: 1 }]);
    o.window = 8;
    let err = load_dataset(&o).unwrap_err().to_string();
    assert!(
        err.contains("5 data rows") && err.contains("needs 8"),
        "{err}"
    );
    o.inputs = vec![InputSource::SyntheticPump { rows: 10, seed: 1 }];
    let err = load_dataset(&o).unwrap_err().to_string();
    assert!(err.contains("too few windows"), "{err}");
}

#[test]
fn unknown_channel_names_the_input() {
    let mut o = opts(vec![InputSource::SyntheticPump { rows: 50, seed: 1 }]);
    o.channels = Some(vec!["current".into(), "nope".into()]);
    let err = load_dataset(&o).unwrap_err().to_string();
    assert!(
        err.contains("synthetic-pump") && err.contains("\"nope\""),
        "{err}"
    );
}

#[test]
fn rows_range_applies_to_synthetic_input() {
    let mut o = opts(vec![InputSource::SyntheticPump { rows: 100, seed: 1 }]);
    o.rows = Some(10..60);
    let d = load_dataset(&o).unwrap();
    assert_eq!(d.rows, 50);
    assert_eq!(d.inputs[0].first_row, 10);
}
