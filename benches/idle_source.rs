//! What the source side costs per message when the thread was idle before
//! it, as at a low rate (docs/low-rate.md §7): 200 assets of the shipped
//! pump model send one JSON frame each per second, and every 240 ms pace
//! tick the source decodes the next 48 and feeds them to the feature stage
//! (align, window, normalise), each asset's state touched once a second.
//! Four ways, 60 ticks each, median and 10th/90th percentiles per
//! message:
//! - `back to back`: one tick right after another;
//! - `caches evicted`: after 16 MiB were written;
//! - `after 240 ms idle`: after the thread slept a pace tick;
//! - `after 240 ms spinning`: after it spun as long, never leaving its
//!   core.
//!
//! Compare with `idle_call` (the same for an ONNX Runtime call) and with
//! `stages` (`source_side`: one asset, always hot).
//!
//! `cargo bench -p anomalyd --bench idle_source` (about 20 s); needs the
//! ONNX Runtime library (`ORT_DYLIB_PATH` or `./.ort/`) for the model's
//! metadata.

mod idle;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use anomalyd::cmd::simulate::{Layout, MessageFormatter};
use anomalyd::config::{PayloadKind, TopicMapping, TopicPattern};
use anomalyd::core::Message;
use anomalyd::core::synth::{PUMP_CHANNELS, generate};
use anomalyd::ops::Metrics;
use anomalyd::pipeline::{Binder, FeatureStage, ModelSlot, StageSettings};
use anomalyd::sources::mqtt::Decoder;

const ASSETS: usize = 200;
const PER_TICK: usize = 48;
const TICKS: usize = 60;
const IDLE: Duration = Duration::from_millis(240);
const PERIOD_MS: i64 = 1000;
const START_MS: i64 = 1_767_225_600_000;

fn main() {
    let Some((_, model)) = idle::bench_model() else {
        return;
    };
    let window = model.window_len() / PUMP_CHANNELS.len();
    let channels: Vec<String> = PUMP_CHANNELS.iter().map(|c| c.to_string()).collect();
    let assets: Vec<String> = (1..=ASSETS).map(|i| format!("pump-{i:03}")).collect();
    let formatter = MessageFormatter::new("sensors/{asset}", Layout::JsonFrame, &assets, &channels)
        .expect("valid template");
    let rows = generate(4096, 7, START_MS * 1_000_000, PERIOD_MS * 1_000_000, None).values;
    let decoder = Decoder::new(vec![TopicMapping {
        pattern: TopicPattern::parse("sensors/{asset}", PayloadKind::JsonObject)
            .expect("valid filter"),
        value_field: "value".into(),
        timestamp_field: "ts".into(),
    }]);
    let mut stage = FeatureStage::new(
        vec![ModelSlot::new("pump", model.metadata.clone())],
        Binder::single("pump"),
        StageSettings::default(),
        Arc::new(Metrics::default()),
    );
    // Messages in arrival order: every asset's row r, then row r + 1.
    let mut next = 0usize;
    let mut payloads = Vec::with_capacity(1);
    let mut msg = Message::default();
    let mut out = Vec::new();
    let mut windows = 0usize;
    let mut feed = |n: usize, windows: &mut usize| {
        for _ in 0..n {
            let (asset, row) = (next % ASSETS, next / ASSETS);
            next += 1;
            let ts_ms = START_MS + row as i64 * PERIOD_MS;
            payloads.clear();
            formatter.format_row(asset, ts_ms, &rows[row % rows.len()], &mut payloads);
            let (topic, payload) = &payloads[0];
            decoder
                .decode_into(topic, payload.as_bytes(), &mut msg)
                .expect("decodes");
            stage.push_message(&msg, ts_ms * 1_000_000, &mut out);
            *windows += out.len();
            black_box(&out);
            out.clear();
        }
    };
    // Every asset's window full before timing.
    feed(ASSETS * (window + 2), &mut windows);
    windows = 0;
    println!(
        "{ASSETS} assets, {PER_TICK} JSON frames per tick (decode, align, window, normalise), microseconds per message: median (p10-p90)"
    );
    let row = idle::four_ways(IDLE, TICKS, PER_TICK, || {
        feed(PER_TICK, &mut windows);
        Ok::<(), ()>(())
    });
    println!("{}", row.unwrap_or_default());
    println!(
        "  windows cut: {windows} of {} messages",
        3 * TICKS * PER_TICK
    );
}
