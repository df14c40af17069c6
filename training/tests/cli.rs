//! Black-box tests of the `anomalyd-train` binary: real training runs on
//! small synthetic logs (few epochs, narrow networks, short windows), the
//! written model loaded back through the daemon's runtime wrapper, the
//! report, determinism, every bad-input case, the shipped `models/pump.onnx`
//! and SKAB.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::workspace;

use anomalyd::core::contract::{METADATA_KEY, ModelMetadata};
use anomalyd::core::synth::{self, FaultKind, PUMP_CHANNELS};
use anomalyd::model::{LoadedModel, RuntimeOptions};
use anomalyd_train::export::onnx_proto::ModelProto;
use prost::Message;

const BIN: &str = env!("CARGO_BIN_EXE_anomalyd-train");

fn trainer(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("ANOMALYD_FONT")
        .output()
        .expect("run anomalyd-train")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[track_caller]
fn assert_ok(o: &Output) -> String {
    let (out, err) = text(o);
    assert!(
        o.status.success(),
        "status {:?}\nstdout:\n{out}\nstderr:\n{err}",
        o.status
    );
    out
}

/// Fails with status and message; returns stderr.
#[track_caller]
fn assert_fails(o: &Output, code: i32, needles: &[&str]) -> String {
    let (out, err) = text(o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{out}\nstderr:\n{err}"
    );
    assert!(err.starts_with("error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in:\n{err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// A synthetic pump log (8 channels + `anomaly`) as CSV.
fn pump_csv(dir: &Path, name: &str, rows: usize, seed: u64) -> PathBuf {
    let log = synth::generate(rows, seed, 1_767_225_600_000_000_000, 1_000_000_000, None);
    let path = dir.join(name);
    std::fs::write(&path, log.to_csv()).expect("write csv");
    path
}

/// Small settings that train in well under a second.
const FAST: &[&str] = &[
    "--window",
    "16",
    "--filters",
    "8,4",
    "--kernel",
    "5",
    "--epochs",
    "4",
    "--batch-size",
    "16",
];

fn args<'a>(input: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--input", input, "--out", out];
    v.extend_from_slice(FAST);
    v.extend_from_slice(extra);
    v
}

/// The parity figures printed by the trainer.
fn printed_parity(stdout: &str) -> (f64, f64) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("parity: max abs diff "))
        .unwrap_or_else(|| panic!("no parity line in:\n{stdout}"));
    let nums: Vec<f64> = line
        .split_whitespace()
        .filter_map(|w| w.parse::<f64>().ok())
        .collect();
    (nums[0], nums[1])
}

fn load(path: &Path) -> LoadedModel {
    LoadedModel::load(path, &RuntimeOptions::cpu()).expect("model loads through ONNX Runtime")
}

#[test]
fn conv_model_loads_with_its_metadata_parity_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let csv = pump_csv(dir.path(), "pump.csv", 400, 3);
    let out = dir.path().join("conv.onnx");
    let report = dir.path().join("report");
    let o = trainer(&args(
        csv.to_str().unwrap(),
        out.to_str().unwrap(),
        &["--report", report.to_str().unwrap(), "--name", "pump-test"],
    ));
    let stdout = assert_ok(&o);
    let (rec, score) = printed_parity(&stdout);
    assert!(rec < 1e-4 && score < 1e-4, "{stdout}");

    let mut model = load(&out);
    let m = model.metadata.clone();
    assert_eq!(m.channels, PUMP_CHANNELS.map(String::from).to_vec());
    assert_eq!((m.window, m.stride, m.sample_period_ms), (16, 1, 1000));
    assert_eq!(m.arch, "conv");
    assert_eq!(m.name, "pump-test");
    assert!(m.threshold.value > 0.0);
    assert_eq!(m.threshold.method, "target-far");
    assert_eq!(m.threshold.target_far, Some(0.01));
    assert_eq!(m.detector.raise_after, 3);
    assert_eq!(m.training.epochs_run, 4);
    assert_eq!(m.training.train_loss.len(), 4);
    assert_eq!(m.training.trainer_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(m.training.data_fingerprint.len(), 64);
    let hp = &m.training.hyperparameters;
    for key in [
        "filters",
        "kernel",
        "learning_rate",
        "batch_size",
        "patience",
        "dropout",
        "weight_decay",
        "clip_grad_norm",
        "batch_norm",
        "noise_sigma",
        "validation_fraction",
        "threshold_quantile",
        "threshold_factor",
        "target_far",
        "raise_after",
        "clear_after",
        "clear_ratio",
        "name",
        "model_version",
        "max_imputed_fraction",
        "sample_period_ms",
        "seed",
        "window",
        "stride",
        "score",
        "score_frames",
        "score_aggregation",
        "channel_weighting",
        "smoothing",
        "centering",
        "centering_ratio",
        "centering_drift",
    ] {
        assert!(hp.contains_key(key), "hyperparameter {key} missing: {hp:?}");
    }
    assert_eq!(hp["filters"], serde_json::json!([8, 4]));
    // The default score: the recent bias over the last quarter of the
    // window, the largest weighted channel, smoothed by the detector.
    assert_eq!(m.score.kind, "weighted_max_recent_bias");
    assert_eq!(m.score.recent_frames, Some(4));
    assert_eq!(m.detector.smoothing, 0.1);
    // Calibrated to 1 % false alarms: the 0.99 quantile of the alarm
    // statistic, divided by the clear ratio 0.8.
    assert!((m.threshold.quantile - 0.99).abs() < 1e-12);
    assert!((m.threshold.factor - 1.25).abs() < 1e-6);
    assert!(
        stdout.contains("false alarms on the calibration windows: expected"),
        "{stdout}"
    );
    // The model scores through the daemon's wrapper.
    let windows = vec![0.0f32; 2 * 8 * 16];
    let scored = model.run(&windows, 2).unwrap();
    assert_eq!(scored.score.len(), 2);

    for png in ["loss.png", "errors.png", "reconstruction.png"] {
        let bytes = std::fs::read(report.join(png)).unwrap();
        assert!(
            bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{png} is not a PNG"
        );
        assert!(bytes.len() > 5_000, "{png} is only {} bytes", bytes.len());
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("report.json")).unwrap()).unwrap();
    let parity = json["parity"]["max_abs_diff_reconstruction"]
        .as_f64()
        .unwrap();
    assert!(
        parity < 1e-4 && json["parity"]["passed"] == true,
        "{parity}"
    );
    assert_eq!(json["epochs"].as_array().unwrap().len(), 4);
    assert_eq!(json["metadata"]["channels"].as_array().unwrap().len(), 8);
    assert!(json["timings"]["train_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn dense_model_with_the_toolbox_flags() {
    let dir = tempfile::tempdir().unwrap();
    let csv = pump_csv(dir.path(), "pump.csv", 300, 4);
    let out = dir.path().join("dense.onnx");
    let o = trainer(&args(
        csv.to_str().unwrap(),
        out.to_str().unwrap(),
        &[
            "--arch",
            "dense",
            "--hidden",
            "24",
            "--latent",
            "6",
            "--batch-norm",
            "--noise-sigma",
            "0.1",
            "--weight-decay",
            "1e-4",
            "--clip-grad-norm",
            "1.0",
            "--dropout",
            "0.1",
            "--channel-weighting",
            "uniform",
            "--score",
            "mse",
            "--score-aggregation",
            "mean",
            "--smoothing",
            "1",
            "--centering",
            "all",
            "--threshold-quantile",
            "0.95",
            "--threshold-factor",
            "2",
            "--raise-after",
            "2",
            "--clear-after",
            "4",
            "--clear-ratio",
            "0.5",
            "--model-version",
            "7.1",
        ],
    ));
    let stdout = assert_ok(&o);
    let (rec, _) = printed_parity(&stdout);
    assert!(rec < 1e-4, "{stdout}");
    let m = load(&out).metadata;
    assert_eq!(m.arch, "dense");
    assert_eq!(m.version, "7.1");
    assert_eq!(m.threshold.quantile, 0.95);
    assert_eq!(m.threshold.factor, 2.0);
    assert_eq!(m.threshold.method, "quantile*factor");
    assert_eq!(m.threshold.target_far, None);
    assert_eq!(m.detector.raise_after, 2);
    assert_eq!(m.detector.clear_after, 4);
    assert_eq!(m.detector.clear_ratio, 0.5);
    // The original score definition, every channel centered.
    assert_eq!(m.score.channel_weights, vec![1.0; 8]);
    assert_eq!(m.score.kind, "weighted_mse");
    assert_eq!(m.score.recent_frames, None);
    assert_eq!(m.score.centered_channels.len(), 8);
    assert_eq!(m.detector.smoothing, 1.0);
    let hp = &m.training.hyperparameters;
    assert_eq!(hp["hidden"], 24);
    assert_eq!(hp["latent"], 6);
    assert_eq!(hp["batch_norm"], true);
    assert_eq!(hp["clip_grad_norm"], 1.0);
    assert_eq!(hp["channel_weighting"], "uniform");
    assert_eq!(hp["centering"], "all");
}

/// The model file with `training.created` blanked, re-encoded.
fn normalised_model(path: &Path) -> Vec<u8> {
    let mut proto = ModelProto::decode(std::fs::read(path).unwrap().as_slice()).unwrap();
    let entry = proto
        .metadata_props
        .iter_mut()
        .find(|e| e.key.as_deref() == Some(METADATA_KEY))
        .expect("metadata entry");
    let mut meta = ModelMetadata::from_json(entry.value.as_deref().unwrap()).unwrap();
    assert!(!meta.training.created.is_empty());
    meta.training.created = String::new();
    entry.value = Some(meta.to_json());
    proto.encode_to_vec()
}

#[test]
fn same_seed_gives_the_same_file_and_another_seed_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let csv = pump_csv(dir.path(), "pump.csv", 300, 5);
    let run = |name: &str, seed: &str| {
        let out = dir.path().join(name);
        assert_ok(&trainer(&args(
            csv.to_str().unwrap(),
            out.to_str().unwrap(),
            &["--seed", seed, "--noise-sigma", "0.05", "--name", "same"],
        )));
        out
    };
    let a = run("a.onnx", "7");
    let b = run("b.onnx", "7");
    let c = run("c.onnx", "8");
    // (assert! rather than assert_eq!: a failure would print megabytes.)
    assert!(
        normalised_model(&a) == normalised_model(&b),
        "same seed, different files"
    );
    assert!(
        normalised_model(&a) != normalised_model(&c),
        "different seeds, same file"
    );

    // With SOURCE_DATE_EPOCH the files are byte-identical as they are.
    let pinned = |name: &str| {
        let out = dir.path().join(name);
        let o = Command::new(BIN)
            .args(args(
                csv.to_str().unwrap(),
                out.to_str().unwrap(),
                &["--seed", "7", "--name", "pinned"],
            ))
            .env("SOURCE_DATE_EPOCH", "1767225600")
            .output()
            .unwrap();
        assert_ok(&o);
        std::fs::read(out).unwrap()
    };
    let (x, y) = (pinned("x.onnx"), pinned("y.onnx"));
    assert!(x == y, "SOURCE_DATE_EPOCH runs differ");
    let meta = load(&dir.path().join("x.onnx")).metadata;
    assert_eq!(meta.training.created, "2026-01-01T00:00:00Z");
}

#[test]
fn rows_range_counts_and_skips_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let csv = pump_csv(dir.path(), "pump.csv", 500, 6);
    // Blank one cell and put `inf` in another, inside the kept rows.
    let original = std::fs::read_to_string(&csv).unwrap();
    let mut lines: Vec<String> = original.lines().map(String::from).collect();
    for (line, col, value) in [(151usize, 2usize, ""), (152, 3, "inf")] {
        let mut cells: Vec<String> = lines[line].split(',').map(String::from).collect();
        cells[col] = value.into();
        lines[line] = cells.join(",");
    }
    std::fs::write(&csv, lines.join("\n") + "\n").unwrap();
    let out = dir.path().join("rows.onnx");
    let o = trainer(&args(
        csv.to_str().unwrap(),
        out.to_str().unwrap(),
        &["--rows", "100..300"],
    ));
    assert_ok(&o);
    let (_, stderr) = text(&o);
    assert!(
        stderr.contains("skipped 2 empty/NaN/infinite cells (vibration_2 1, current 1)"),
        "{stderr}"
    );
    let m = load(&out).metadata;
    assert_eq!(m.training.rows, 200);
    assert_eq!(m.training.hyperparameters["rows"], "100..300");
}

#[test]
fn several_inputs_and_a_constant_channel() {
    let dir = tempfile::tempdir().unwrap();
    let a = pump_csv(dir.path(), "a.csv", 200, 1);
    let b = pump_csv(dir.path(), "b.csv", 200, 2);
    let out = dir.path().join("two.onnx");
    let o = trainer(
        &[
            &args(
                a.to_str().unwrap(),
                out.to_str().unwrap(),
                &["--input", b.to_str().unwrap()],
            )[..],
            &["--channels", "current,pressure,anomaly"],
        ]
        .concat(),
    );
    let stdout = assert_ok(&o);
    assert!(
        stdout.contains("data: 2 input(s), 400 rows, 3 channels"),
        "{stdout}"
    );
    let (_, stderr) = text(&o);
    // `anomaly` is all zeros in normal data: constant, warned about.
    assert!(
        stderr.contains("channel \"anomaly\" is constant"),
        "{stderr}"
    );
    let m = load(&out).metadata;
    assert_eq!(m.channels, ["current", "pressure", "anomaly"]);
    assert_eq!(m.normaliser.constant_channels, ["anomaly"]);
}

#[test]
fn bad_inputs_fail_with_a_clear_message_and_no_model() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("bad.onnx");
    let out_s = out.to_str().unwrap();
    let good = pump_csv(d, "good.csv", 300, 7);
    let good_s = good.to_str().unwrap();

    let missing = d.join("missing.csv");
    let e = assert_fails(
        &trainer(&args(missing.to_str().unwrap(), out_s, &[])),
        66,
        &["missing.csv", "No such file"],
    );
    assert!(
        !e.contains("caused by"),
        "the cause is already in the message: {e}"
    );

    assert_fails(
        &trainer(&args(good_s, out_s, &["--channels", "current,no_such"])),
        65,
        &["good.csv", "unknown column \"no_such\"", "current"],
    );

    let text_csv = d.join("text.csv");
    let mut lines: Vec<String> = std::fs::read_to_string(&good)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let mut cells: Vec<String> = lines[42].split(',').map(String::from).collect();
    cells[4] = "n/a".into();
    lines[42] = cells.join(",");
    std::fs::write(&text_csv, lines.join("\n")).unwrap();
    assert_fails(
        &trainer(&args(text_csv.to_str().unwrap(), out_s, &[])),
        65,
        &["text.csv:43", "data row 41", "\"pressure\"", "\"n/a\""],
    );

    let short = pump_csv(d, "short.csv", 10, 1);
    assert_fails(
        &trainer(&args(short.to_str().unwrap(), out_s, &[])),
        65,
        &["short.csv", "10 data rows", "needs 16"],
    );
    assert_fails(
        &trainer(&args(good_s, out_s, &["--rows", "0..20"])),
        65,
        &["too few windows", "20 rows"],
    );
    assert_fails(
        &trainer(&["--input", good_s, "--out", out_s, "--window", "18"]),
        64,
        &["divisible by 4", "16 or 20"],
    );
    assert_fails(
        &trainer(&args(good_s, out_s, &["--clear-ratio", "1.5"])),
        64,
        &["--clear-ratio"],
    );
    let o = trainer(&["--out", out_s]);
    assert_eq!(o.status.code(), Some(2), "clap usage error");
    assert!(!out.exists(), "no model file after a failed run");
}

#[test]
fn shipped_pump_model_matches_its_graph_and_the_simulator() {
    let path = workspace().join("models/pump.onnx");
    let mut model = load(&path);
    let m = model.metadata.clone();
    assert_eq!(m.num_channels(), 8);
    assert_eq!(m.channels, PUMP_CHANNELS.map(String::from).to_vec());
    assert_eq!((m.window, m.stride, m.sample_period_ms), (40, 1, 1000));
    let t = m.window;
    assert_eq!(m.arch, "conv");
    assert_eq!(m.name, "pump");
    assert!(m.threshold.value > 0.0);
    assert!(model.describe_io().contains("window"));

    // Normal simulator data scores below the threshold on average, a
    // bearing fault well above it.
    let norm = anomalyd::core::Normaliser::new(&m.normaliser);
    let windows = |fault: Option<(FaultKind, std::ops::Range<usize>)>| {
        let log = synth::generate(400, 99, 0, 1_000_000_000, fault);
        let mut data = Vec::new();
        for end in (300..400).step_by(10) {
            let mut w = vec![0.0f32; 8 * t];
            for k in 0..t {
                for c in 0..8 {
                    w[c * t + k] = log.values[end - t + k][c] as f32;
                }
            }
            norm.apply_window(&mut w, t);
            data.extend(w);
        }
        data
    };
    let normal = model.run(&windows(None), 10).unwrap().score;
    let faulty = model
        .run(&windows(Some((FaultKind::Bearing, 100..400))), 10)
        .unwrap()
        .score;
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    assert!(
        mean(&normal) < m.threshold.value,
        "{normal:?} vs {}",
        m.threshold.value
    );
    assert!(mean(&faulty) > mean(&normal), "{faulty:?} vs {normal:?}");
}

#[test]
fn skab_valve1_first_400_rows() {
    let Some(skab) = common::data_dir("SKAB_DIR", "skab", "SKAB", &["valve1/0.csv"]) else {
        return;
    };
    let csv = skab.join("valve1/0.csv");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("skab.onnx");
    let o = trainer(&[
        "--input",
        csv.to_str().unwrap(),
        "--rows",
        "0..400",
        "--out",
        out.to_str().unwrap(),
        "--epochs",
        "15",
    ]);
    let stdout = assert_ok(&o);
    assert!(printed_parity(&stdout).0 < 1e-4);
    let m = load(&out).metadata;
    assert_eq!(m.channels.len(), 8, "anomaly and changepoint are labels");
    assert!(
        !m.channels
            .iter()
            .any(|c| c == "anomaly" || c == "changepoint")
    );
    assert_eq!((m.window, m.sample_period_ms), (40, 1000));
    assert_eq!(m.training.rows, 400);
    assert!(m.threshold.value > 0.0);
}

/// `--help` lists the exit codes; the hidden `--generate-docs DIR` needs
/// none of the required options and writes the man page and completions.
#[test]
fn help_and_man_page_list_the_exit_codes() {
    let help = assert_ok(&trainer(&["--help"]));
    assert!(
        help.contains("65  unusable input data (EX_DATAERR)"),
        "{help}"
    );
    assert!(
        !help.contains("generate-docs"),
        "hidden option shown: {help}"
    );

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    assert_ok(&trainer(&["--generate-docs", d]));
    let page = std::fs::read_to_string(dir.path().join("anomalyd-train.1"))
        .unwrap()
        .replace("\\-", "-");
    assert!(page.contains(".TH anomalyd-train 1"), "{page}");
    assert!(page.contains("synthetic") && page.contains("EX_CANTCREAT"));
    for f in [
        "anomalyd-train.bash",
        "_anomalyd-train",
        "anomalyd-train.fish",
    ] {
        assert!(dir.path().join(f).exists(), "{f} missing");
    }
    // With another option it is a usage error, not a silent training run.
    assert_eq!(
        trainer(&["--generate-docs", d, "--epochs", "1"])
            .status
            .code(),
        Some(2)
    );
}
