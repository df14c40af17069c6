//! The live status board behind the built-in status page (`/` and
//! `/api/status`): the latest score per asset with a short history, the
//! recent alert transitions, and the loaded models. The scoring thread
//! records each batch under one short lock.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use crate::ops::metrics::Metrics;
use crate::pipeline::Output;

/// Scores kept per asset for the page's small chart.
pub const HISTORY: usize = 120;
/// Alert transitions kept, newest first.
pub const RECENT_ALERTS: usize = 100;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelStatus {
    pub name: String,
    pub version: String,
    pub provider: String,
    pub channels: Vec<String>,
    pub window: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct AssetStatus {
    pub asset: String,
    pub model: String,
    pub ts_ms: i64,
    pub score: f32,
    pub threshold: f32,
    pub anomalous: bool,
    pub top_channel: Option<String>,
    pub history: VecDeque<(i64, f32)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AlertStatus {
    pub asset: String,
    pub state: &'static str,
    pub ts_ms: i64,
    pub start_ms: i64,
    pub score: f32,
    pub peak: f32,
    pub threshold: f32,
    pub top_channel: Option<String>,
    /// `anomaly`, `stale`, `stuck` or `out_of_range`.
    pub alarm: &'static str,
    /// The channel a data-quality alarm names.
    pub channel: Option<String>,
}

#[derive(Debug, Default)]
struct Board {
    assets: HashMap<Arc<str>, AssetStatus>,
    alerts: VecDeque<AlertStatus>,
    models: Vec<ModelStatus>,
}

/// Shared between the scoring thread (writer) and the HTTP listener (reader).
#[derive(Debug)]
pub struct StatusBoard {
    board: Mutex<Board>,
    started: Instant,
}

impl Default for StatusBoard {
    fn default() -> Self {
        Self {
            board: Mutex::default(),
            started: Instant::now(),
        }
    }
}

/// The `/api/status` document.
#[derive(Debug, Serialize)]
pub struct StatusDoc {
    pub version: &'static str,
    pub uptime_s: f64,
    pub mqtt_connected: bool,
    pub sink_queue_points: u64,
    pub spool_points: u64,
    pub last_write_unix_s: u64,
    /// Why the daemon is not ready (`/readyz`); empty when it is. Filled in
    /// by the listener, which knows the configured limits.
    pub degraded: Vec<String>,
    /// Why the database refuses every write, while it does.
    pub sink_refusal: Option<String>,
    pub models: Vec<ModelStatus>,
    pub assets: Vec<AssetStatus>,
    pub alerts: Vec<AlertStatus>,
    /// Why assets get no scores: drops per asset and reason, with names.
    pub drops: Vec<crate::ops::metrics::AssetDrops>,
}

impl StatusBoard {
    pub fn set_models(&self, models: Vec<ModelStatus>) {
        if let Ok(mut b) = self.board.lock() {
            b.models = models;
        }
    }

    /// Records a batch of scorer outputs.
    pub fn record(&self, outputs: &[Output]) {
        let Ok(mut b) = self.board.lock() else {
            return;
        };
        for o in outputs {
            match o {
                Output::Score(r) => {
                    let top = r
                        .channel_error
                        .iter()
                        .enumerate()
                        .max_by(|a, b| a.1.total_cmp(b.1))
                        .and_then(|(i, _)| r.binding.channels.get(i));
                    let ts_ms = r.ts.div_euclid(1_000_000);
                    let entry =
                        b.assets
                            .entry(r.binding.asset.clone())
                            .or_insert_with(|| AssetStatus {
                                asset: r.binding.asset.to_string(),
                                model: r.binding.model.to_string(),
                                ts_ms,
                                score: r.score,
                                threshold: r.threshold,
                                anomalous: r.anomalous,
                                top_channel: None,
                                history: VecDeque::with_capacity(HISTORY),
                            });
                    entry.model.clear();
                    entry.model.push_str(&r.binding.model);
                    entry.ts_ms = ts_ms;
                    entry.score = r.score;
                    entry.threshold = r.threshold;
                    entry.anomalous = r.anomalous;
                    // Mostly the same channel as before: no new string then.
                    if entry.top_channel.as_ref() != top {
                        entry.top_channel = top.cloned();
                    }
                    if entry.history.len() == HISTORY {
                        entry.history.pop_front();
                    }
                    entry.history.push_back((ts_ms, r.score));
                }
                Output::Alert { binding, event } => {
                    if b.alerts.len() == RECENT_ALERTS {
                        b.alerts.pop_back();
                    }
                    b.alerts.push_front(AlertStatus {
                        asset: binding.asset.to_string(),
                        state: event.kind.as_str(),
                        ts_ms: event.ts.div_euclid(1_000_000),
                        start_ms: event.start_ts.div_euclid(1_000_000),
                        score: event.score,
                        peak: event.peak,
                        threshold: event.threshold,
                        top_channel: event.top_channels.first().map(|c| c.0.clone()),
                        alarm: "anomaly",
                        channel: None,
                    });
                }
                Output::Quality(q) => {
                    if b.alerts.len() == RECENT_ALERTS {
                        b.alerts.pop_back();
                    }
                    b.alerts.push_front(AlertStatus {
                        asset: q.binding.asset.to_string(),
                        state: q.event.state.as_str(),
                        ts_ms: q.event.ts.div_euclid(1_000_000),
                        start_ms: q.event.start_ts.div_euclid(1_000_000),
                        // Not scores: written as null.
                        score: f32::NAN,
                        peak: f32::NAN,
                        threshold: f32::NAN,
                        top_channel: None,
                        alarm: q.event.kind.as_str(),
                        channel: q.event.channel.clone(),
                    });
                }
                Output::Barrier(_) | Output::Frame(_) => {}
            }
        }
    }

    /// A snapshot for `/api/status`, assets sorted by name.
    pub fn snapshot(&self, metrics: &Metrics) -> StatusDoc {
        let (mut assets, alerts, models) = match self.board.lock() {
            Ok(b) => (
                b.assets.values().cloned().collect::<Vec<_>>(),
                b.alerts.iter().cloned().collect(),
                b.models.clone(),
            ),
            Err(_) => (Vec::new(), Vec::new(), Vec::new()),
        };
        assets.sort_by(|a, b| a.asset.cmp(&b.asset));
        StatusDoc {
            version: env!("CARGO_PKG_VERSION"),
            uptime_s: self.started.elapsed().as_secs_f64(),
            mqtt_connected: metrics.mqtt_connected.load(Relaxed) == 1,
            sink_queue_points: metrics.sink_queue_depth.load(Relaxed),
            spool_points: metrics.spool_points.load(Relaxed),
            last_write_unix_s: metrics.last_write_unix_s.load(Relaxed),
            degraded: Vec::new(),
            sink_refusal: metrics.sink_refusal(),
            models,
            assets,
            alerts,
            drops: metrics.asset_drops(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::detect::{AlertEvent, AlertKind, DetectorSettings};
    use crate::pipeline::{AssetBinding, ScoreRecord};

    #[test]
    fn keeps_latest_score_bounded_history_and_recent_alerts() {
        let b = StatusBoard::default();
        let binding = Arc::new(AssetBinding {
            asset: "p1".into(),
            model: "pump".into(),
            detector: DetectorSettings {
                threshold: 1.0,
                raise_after: 1,
                clear_after: 1,
                clear_ratio: 0.5,
                adapt: Default::default(),
            },
            channels: vec!["a".to_string(), "b".to_string()].into(),
        });
        let outs: Vec<Output> = (0..(HISTORY as i64 + 5))
            .map(|i| {
                Output::Score(ScoreRecord {
                    binding: binding.clone(),
                    ts: i * 1_000_000_000,
                    score: i as f32,
                    threshold: 1.0,
                    anomalous: i > 2,
                    probability: 0.5,
                    channel_error: vec![0.1, 0.9],
                })
            })
            .chain(std::iter::once(Output::Alert {
                binding: binding.clone(),
                event: AlertEvent {
                    kind: AlertKind::Raised,
                    start_ts: 1_000_000_000,
                    ts: 3_000_000_000,
                    score: 3.0,
                    peak: 3.0,
                    threshold: 1.0,
                    top_channels: vec![("b".into(), 0.9)],
                },
            }))
            .collect();
        b.record(&outs);
        let doc = b.snapshot(&Metrics::default());
        assert_eq!(doc.assets.len(), 1);
        let a = &doc.assets[0];
        assert_eq!(a.history.len(), HISTORY);
        assert_eq!(a.history.back().unwrap().0, (HISTORY as i64 + 4) * 1000);
        assert_eq!(a.top_channel.as_deref(), Some("b"));
        assert!(a.anomalous);
        assert_eq!(doc.alerts[0].state, "raised");
        assert_eq!(doc.alerts[0].start_ms, 1000);
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(json["assets"][0]["history"][0][1], 5.0);
        // Another channel takes the lead: the top channel follows it.
        b.record(&[Output::Score(ScoreRecord {
            binding,
            ts: 100_000_000_000,
            score: 0.5,
            threshold: 1.0,
            anomalous: false,
            probability: 0.5,
            channel_error: vec![0.7, 0.2],
        })]);
        let doc = b.snapshot(&Metrics::default());
        assert_eq!(doc.assets[0].top_channel.as_deref(), Some("a"));
    }
}
