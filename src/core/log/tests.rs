//! Tests of log loading: format sniffing and the SKAB data set here, each
//! format's parser in its own submodule.

use std::path::{Path, PathBuf};

use super::*;
use crate::core::timestamp::NANOS_PER_SEC;

mod csv;
mod line_protocol;

const T0: i64 = 1_583_748_873 * NANOS_PER_SEC; // 2020-03-09T10:14:33Z

fn csv(text: &str) -> Result<LogTable, LoadError> {
    parse_csv(text, Path::new("log.csv"), &LoadOptions::default())
}

fn csv_with(text: &str, opts: LoadOptions) -> Result<LogTable, LoadError> {
    parse_csv(text, Path::new("log.csv"), &opts)
}

fn lp(text: &str) -> Result<LogTable, LoadError> {
    parse_line_protocol(text, Path::new("log.lp"), &LoadOptions::default())
}

/// SKAB's valve1/0.csv, from `SKAB_DIR` or `../shared/data/skab`.
/// Skipped with a message when absent, except under `CI=true`.
fn skab_file(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("SKAB_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/skab"),
        PathBuf::from,
    );
    let path = dir.join(name);
    if path.is_file() {
        return Some(path);
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(
        !ci,
        "SKAB data missing at {} (CI=true requires it)",
        path.display()
    );
    eprintln!(
        "skipping: SKAB data not found at {} (set SKAB_DIR)",
        path.display()
    );
    None
}

#[test]
fn skab_valve1_loads_and_aligns_about_one_frame_per_row() {
    use crate::core::align::{Aligner, AlignerConfig};
    let Some(path) = skab_file("valve1/0.csv") else {
        return;
    };
    let all = load_log(&path, &LoadOptions::default()).unwrap();
    assert_eq!(all.timestamp_column, "datetime");
    assert_eq!(all.len(), 1147);
    let channels = all.default_channels();
    assert_eq!(
        channels,
        [
            "Accelerometer1RMS",
            "Accelerometer2RMS",
            "Current",
            "Pressure",
            "Temperature",
            "Thermocouple",
            "Voltage",
            "Volume Flow RateRMS"
        ]
    );
    assert_eq!(all.columns.len(), 10); // plus anomaly, changepoint
    assert!(all.skipped_columns.is_empty());
    assert_eq!(all.timestamps[0], T0);
    assert_eq!(all.values[0][0], 0.0265878);

    let opts = LoadOptions {
        timestamp_column: Some("datetime".into()),
        rows: Some(0..400),
    };
    let train = load_log(&path, &opts).unwrap();
    assert_eq!(train.len(), 400);
    assert_eq!(train.values[..], all.values[..400]);

    // SKAB rows are 1 s apart except for some 2 s steps; the aligner fills
    // each missing second with the previous row (age 1 s, not imputed).
    let steps = |t: &[i64]| -> (usize, usize) {
        let d: Vec<i64> = t.windows(2).map(|w| w[1] - w[0]).collect();
        let one = d.iter().filter(|&&x| x == NANOS_PER_SEC).count();
        let two = d.iter().filter(|&&x| x == 2 * NANOS_PER_SEC).count();
        assert_eq!(one + two, d.len(), "only 1 s and 2 s steps");
        (one, two)
    };
    let idx = train.select(&channels).unwrap();
    for (table, two_s_steps) in [(&train, 18), (&all, 53)] {
        assert_eq!(steps(&table.timestamps).1, two_s_steps);
        let mut aligner = Aligner::new(idx.len(), AlignerConfig::for_period(NANOS_PER_SEC));
        let mut frames = Vec::new();
        let mut row = Vec::new();
        for (ts, values) in table.timestamps.iter().zip(&table.values) {
            row.clear();
            row.extend(idx.iter().map(|&i| values[i]));
            aligner.push_row(*ts, &row, &mut frames);
        }
        aligner.flush(&mut frames);
        assert_eq!(frames.len(), table.len() + two_s_steps);
        let s = aligner.stats();
        assert_eq!(
            (
                s.late,
                s.non_finite,
                s.imputed_values,
                s.gaps,
                s.warmup_frames
            ),
            (0, 0, 0, 0, 0)
        );
        // Every row's timestamp is a frame's, with that row's values.
        let mut f = frames.iter();
        for (ts, values) in table.timestamps.iter().zip(&table.values) {
            let frame = f.find(|fr| fr.ts == *ts).unwrap();
            assert_eq!(frame.values[0], values[idx[0]] as f32);
        }
    }
}

#[test]
fn every_skab_file_loads_with_eight_channels() {
    use crate::core::align::{Aligner, AlignerConfig};
    let Some(first) = skab_file("valve1/0.csv") else {
        return;
    };
    let root = first.parent().and_then(Path::parent).unwrap().to_path_buf();
    let mut files = Vec::new();
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap().path();
        if dir.is_dir() {
            for f in std::fs::read_dir(&dir).unwrap() {
                let f = f.unwrap().path();
                if f.extension().is_some_and(|e| e == "csv") {
                    files.push(f);
                }
            }
        }
    }
    files.sort();
    assert!(files.len() >= 20, "{files:?}");
    let (mut rows, mut frames_total, mut gaps) = (0, 0, 0);
    for f in &files {
        let t = load_log(f, &LoadOptions::default()).unwrap();
        let channels = t.default_channels();
        assert_eq!(channels.len(), 8, "{}", f.display());
        let idx = t.select(&channels).unwrap();
        let mut aligner = Aligner::new(8, AlignerConfig::for_period(NANOS_PER_SEC));
        let mut frames = Vec::new();
        for (ts, v) in t.timestamps.iter().zip(&t.values) {
            let row: Vec<f64> = idx.iter().map(|&i| v[i]).collect();
            aligner.push_row(*ts, &row, &mut frames);
        }
        aligner.flush(&mut frames);
        let s = aligner.stats();
        assert_eq!((s.late, s.non_finite), (0, 0), "{}", f.display());
        assert!(frames.len() >= t.len(), "{}", f.display());
        rows += t.len();
        frames_total += frames.len();
        gaps += s.gaps;
    }
    eprintln!(
        "SKAB: {} files, {rows} rows, {frames_total} frames, {gaps} gaps",
        files.len()
    );
}

#[test]
fn load_log_sniffs_the_format() {
    let dir = tempfile::tempdir().unwrap();
    let lp_path = dir.path().join("export.txt");
    std::fs::write(&lp_path, "# c\npump v=1 1583748873000000000\n").unwrap();
    let t = load_log(&lp_path, &LoadOptions::default()).unwrap();
    assert_eq!(t.timestamp_column, "time");
    assert_eq!(t.timestamps, [T0]);

    let csv_path = dir.path().join("log.dat");
    std::fs::write(&csv_path, "time,Volume Flow,x\n1583748873,1,2\n").unwrap();
    let t = load_log(&csv_path, &LoadOptions::default()).unwrap();
    assert_eq!(t.columns, ["Volume Flow", "x"]);

    // The extension wins over the content.
    let forced = dir.path().join("odd.csv");
    std::fs::write(&forced, "m v=1 1\n").unwrap();
    assert!(load_log(&forced, &LoadOptions::default()).is_err());

    // Latin-1 bytes do not stop a load.
    let latin = dir.path().join("latin.csv");
    std::fs::write(&latin, b"t,temp \xb0C\n1,2\n").unwrap();
    let t = load_log(&latin, &LoadOptions::default()).unwrap();
    assert_eq!(t.columns.len(), 1);

    let missing = dir.path().join("missing.csv");
    let e = load_log(&missing, &LoadOptions::default()).unwrap_err();
    assert!(matches!(e, LoadError::Io { .. }), "{e}");
    assert!(e.to_string().contains("missing.csv"), "{e}");
}
