//! Criterion benchmarks of the synchronous stages, one item at a time, on
//! the shipped pump model's shapes (C = 8, T = 60, stride 1) and the
//! simulator's own messages: decode (a JSON frame, a bare number), align,
//! window + normalise, detect, the whole source side (decode -> align ->
//! window -> normalise, as the MQTT task runs it) and the sink's line
//! protocol. Times are per item (`Throughput::Elements`): per message,
//! frame, window or point.
//!
//! `cargo bench -p anomalyd --bench stages` (see BENCHMARKS.md). The source
//! side loads `models/pump.onnx` (or `ANOMALYD_BENCH_CONV_MODEL`) for its
//! metadata, so it needs the ONNX Runtime library (`ORT_DYLIB_PATH` or
//! `./.ort/`).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use anomalyd::cmd::simulate::{Layout, MessageFormatter};
use anomalyd::config::PayloadKind;
use anomalyd::config::{TopicMapping, TopicPattern};
use anomalyd::core::Message;
use anomalyd::core::Normaliser;
use anomalyd::core::WindowBuffer;
use anomalyd::core::synth::{PUMP_CHANNELS, generate};
use anomalyd::core::{Aligner, AlignerConfig, Frame};
use anomalyd::core::{Detector, DetectorSettings};
use anomalyd::model::{LoadedModel, RuntimeOptions};
use anomalyd::ops::Metrics;
use anomalyd::pipeline::{
    AssetBinding, Binder, FeatureStage, ModelSlot, Output, ScoreRecord, StageSettings,
};
use anomalyd::sinks::influx::{Measurements, format_output};
use anomalyd::sources::mqtt::Decoder;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const PERIOD_NS: i64 = 1_000_000_000;
const START_NS: i64 = 1_767_225_600_000_000_000;
const T: usize = 60;
/// Rows of simulator data cycled through (more than a window, so every
/// window differs).
const ROWS: usize = 4096;

fn channels() -> Vec<String> {
    PUMP_CHANNELS.iter().map(|c| c.to_string()).collect()
}

fn rows() -> Vec<[f64; 8]> {
    generate(ROWS, 7, START_NS, PERIOD_NS, None).values
}

/// The simulator's messages for asset `pump-001`: (topic, payload) per row.
fn json_frames() -> Vec<(String, String)> {
    let f = MessageFormatter::new(
        "sensors/{asset}",
        Layout::JsonFrame,
        &["pump-001".to_string()],
        &channels(),
    )
    .expect("valid template");
    let mut out = Vec::with_capacity(ROWS);
    for (i, row) in rows().iter().enumerate() {
        f.format_row(0, START_NS / 1_000_000 + i as i64 * 1000, row, &mut out);
    }
    out
}

fn decoder() -> Decoder {
    let mapping = |filter: &str, payload| TopicMapping {
        pattern: TopicPattern::parse(filter, payload).expect("valid filter"),
        value_field: "value".into(),
        timestamp_field: "ts".into(),
    };
    Decoder::new(vec![
        mapping("plant/{asset}/{channel}", PayloadKind::Number),
        mapping("sensors/{asset}", PayloadKind::JsonObject),
    ])
}

fn normaliser() -> Normaliser {
    let rows: Vec<Vec<f64>> = rows().iter().map(|r| r.to_vec()).collect();
    Normaliser::new(&Normaliser::fit(&channels(), &rows))
}

fn frames() -> Vec<Frame> {
    let mut aligner = Aligner::new(8, AlignerConfig::for_period(PERIOD_NS));
    let mut out = Vec::new();
    for (i, row) in rows().iter().enumerate() {
        aligner.push_row(START_NS + i as i64 * PERIOD_NS, row, &mut out);
    }
    out
}

fn decode(c: &mut Criterion) {
    let d = decoder();
    let msgs = json_frames();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    // As the MQTT task decodes: into one reused message.
    let mut msg = Message::default();
    let mut i = 0;
    g.bench_function("json_frame_8ch_per_message", |b| {
        b.iter(|| {
            let (topic, payload) = &msgs[i % msgs.len()];
            i += 1;
            d.decode_into(topic, payload.as_bytes(), &mut msg)
                .expect("decodes");
            black_box(&msg);
        })
    });
    g.bench_function("bare_number_per_message", |b| {
        b.iter(|| {
            d.decode_into(
                black_box("plant/pump-001/current"),
                black_box(b"5.36553"),
                &mut msg,
            )
            .expect("decodes");
            black_box(&msg);
        })
    });
    g.finish();
}

fn align(c: &mut Criterion) {
    let rows = rows();
    let mut g = c.benchmark_group("align");
    g.throughput(Throughput::Elements(1));
    // As the daemon feeds it: one push per reading, 8 per frame.
    g.bench_function("8_readings_per_frame", |b| {
        let mut aligner = Aligner::new(8, AlignerConfig::for_period(PERIOD_NS));
        let mut out = Vec::with_capacity(4);
        let mut i = 0i64;
        b.iter(|| {
            let row = &rows[i as usize % ROWS];
            let ts = START_NS + i * PERIOD_NS;
            for (ch, v) in row.iter().enumerate() {
                aligner.push(ch, ts, *v, &mut out);
            }
            i += 1;
            out.clear();
        })
    });
    g.finish();
}

fn window(c: &mut Criterion) {
    let frames = frames();
    let norm = normaliser();
    let mut g = c.benchmark_group("window_normalise");
    g.throughput(Throughput::Elements(1));
    g.bench_function("stride1_per_window", |b| {
        let mut buf = WindowBuffer::new(8, T, 1, 0.2);
        for f in &frames[..T] {
            buf.push(f);
        }
        let mut i = T;
        b.iter(|| {
            let f = &frames[i % frames.len()];
            i += 1;
            if let Some(Ok(mut w)) = buf.push(f) {
                norm.apply_window(&mut w.data, T);
                black_box(w);
            }
        })
    });
    g.finish();
}

fn detect(c: &mut Criterion) {
    let settings = DetectorSettings {
        threshold: 0.1,
        raise_after: 3,
        clear_after: 5,
        clear_ratio: 0.8,
        adapt: Default::default(),
    };
    let errors = [0.03f32, 0.02, 0.05, 0.04, 0.01, 0.02, 0.03, 0.02];
    let mut g = c.benchmark_group("detect");
    g.throughput(Throughput::Elements(1));
    g.bench_function("per_window", |b| {
        let mut d = Detector::new(settings, channels().into());
        let mut i = 0i64;
        b.iter(|| {
            i += 1;
            // Mostly normal, an excursion every 500 windows.
            let score = if i % 500 < 10 { 0.3 } else { 0.03 };
            black_box(d.observe(START_NS + i * PERIOD_NS, score, &errors))
        })
    });
    g.finish();
}

fn source_side(c: &mut Criterion) {
    let path = std::env::var_os("ANOMALYD_BENCH_CONV_MODEL")
        .map_or_else(|| "models/pump.onnx".into(), std::path::PathBuf::from);
    let model = match LoadedModel::load(&path, &RuntimeOptions::cpu()) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("source_side skipped: {e}");
            return;
        }
    };
    let d = decoder();
    let msgs = json_frames();
    let mut g = c.benchmark_group("source_side");
    g.throughput(Throughput::Elements(1));
    // decode -> align -> window -> normalise, one JSON frame message in,
    // one normalised window out (stride 1), as the MQTT task runs it.
    g.bench_function("json_frame_to_window_per_message", |b| {
        let mut stage = FeatureStage::new(
            vec![ModelSlot::new("pump", model.metadata.clone())],
            Binder::single("pump"),
            StageSettings::default(),
            Arc::new(Metrics::default()),
        );
        let mut out = Vec::with_capacity(4);
        let mut msg = Message::default();
        let mut i = 0usize;
        let mut ts = START_NS;
        b.iter(|| {
            let (topic, payload) = &msgs[i % msgs.len()];
            i += 1;
            d.decode_into(topic, payload.as_bytes(), &mut msg)
                .expect("decodes");
            // Keep event time moving forward when the rows wrap around.
            ts += PERIOD_NS;
            msg.ts = Some(ts);
            stage.push_message(&msg, ts, &mut out);
            black_box(&out);
            out.clear();
        })
    });
    g.finish();
}

fn sink(c: &mut Criterion) {
    let binding = Arc::new(AssetBinding {
        asset: "pump-001".into(),
        model: "pump".into(),
        detector: DetectorSettings {
            threshold: 0.1,
            raise_after: 3,
            clear_after: 5,
            clear_ratio: 0.8,
            adapt: Default::default(),
        },
        channels: channels().into(),
    });
    let out = Output::Score(ScoreRecord {
        binding,
        ts: START_NS,
        score: 0.031_234_5,
        threshold: 0.102_339_51,
        anomalous: false,
        probability: 0.123_456_789,
        channel_error: vec![0.031, 0.022, 0.051, 0.043, 0.012, 0.027, 0.035, 0.021],
    });
    let m = Measurements {
        score: "anomaly_score".into(),
        alert: "anomaly_alert".into(),
        host: None,
        record: "anomalyd_frames".into(),
    };
    let mut g = c.benchmark_group("sink");
    g.throughput(Throughput::Elements(1));
    g.bench_function("line_protocol_per_point", |b| {
        let mut buf = String::with_capacity(512);
        b.iter(|| {
            buf.clear();
            format_output(black_box(&out), &m, &mut buf);
            black_box(buf.len())
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
}

criterion_group! {
    name = stages;
    config = config();
    targets = decode, align, window, detect, source_side, sink
}
criterion_main!(stages);
