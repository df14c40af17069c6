//! The sink's write rate, measured (not asserted) against real databases:
//! score points of eight channels through the runner and the InfluxDB
//! writer, in batches of 1,000, to influxd 1.6.7 (v1 API) and to
//! VictoriaMetrics (v2 API). Ignored by default; run with
//! `cargo test -p anomalyd --test integration sink_rate:: -- --ignored --nocapture`.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anomalyd::config::{InfluxAuth, InfluxConfig};
use anomalyd::core::DetectorSettings;
use anomalyd::core::synth::PUMP_CHANNELS;
use anomalyd::ops::Metrics;
use anomalyd::pipeline::{AssetBinding, Output, ScoreRecord};
use anomalyd::sinks::SinkStore;
use anomalyd::sinks::influx::{InfluxWriter, SinkSettings, run_sink};

use crate::util::*;

const POINTS: usize = 200_000;

/// Writes `POINTS` score points through the sink; returns points/s.
fn points_per_second(cfg: serde_json::Value) -> f64 {
    let cfg: InfluxConfig = serde_json::from_value(cfg).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let metrics = Arc::new(Metrics::default());
    let binding = Arc::new(AssetBinding {
        asset: "pump-rate".into(),
        model: "pump".into(),
        detector: DetectorSettings {
            threshold: 0.1,
            raise_after: 3,
            clear_after: 3,
            clear_ratio: 0.8,
            adapt: Default::default(),
        },
        channels: PUMP_CHANNELS
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .into(),
    });
    let start = Instant::now();
    rt.block_on(async {
        let (_auth, auth_rx) = tokio::sync::watch::channel(InfluxAuth::None);
        let writer = InfluxWriter::new(&cfg, auth_rx).unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(cfg.queue_capacity);
        let sink = tokio::spawn(run_sink(
            writer,
            SinkSettings::from_config(&cfg),
            rx,
            metrics.clone(),
            tokio_util::sync::CancellationToken::new(),
            SinkStore::default(),
        ));
        for i in 0..POINTS as i64 {
            let out = Output::Score(ScoreRecord {
                binding: binding.clone(),
                ts: START_NS + i * 1_000_000,
                score: 0.03 + (i % 97) as f32 * 1e-4,
                threshold: 0.1,
                anomalous: false,
                probability: 0.5,
                channel_error: vec![0.031, 0.022, 0.051, 0.043, 0.012, 0.027, 0.035, 0.021],
            });
            tx.send(out).await.unwrap();
        }
        drop(tx);
        sink.await.unwrap();
    });
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(metrics.points_written.load(Relaxed), POINTS as u64);
    POINTS as f64 / secs
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn sink_rate_to_influxd_and_victoria_metrics() {
    let influx = Influxd::start("anomalyd");
    let vm = VictoriaMetrics::start();
    for round in 1..=3 {
        let v1 = points_per_second(serde_json::json!({
            "url": influx.url(), "api": "v1", "database": "anomalyd", "batch_size": 1000
        }));
        let v2 = points_per_second(serde_json::json!({
            "url": vm.url(), "bucket": "anomalyd", "batch_size": 1000
        }));
        eprintln!(
            "round {round}: {POINTS} points in batches of 1,000: influxd 1.6.7 (v1) {v1:.0} points/s, VictoriaMetrics (v2) {v2:.0} points/s"
        );
    }
    let rows = influx.wait_for_rows(
        "anomalyd",
        "SELECT count(score) FROM anomaly_score",
        1,
        Duration::from_secs(30),
    );
    assert_eq!(rows[0].1[0].as_u64(), Some(POINTS as u64));
}
