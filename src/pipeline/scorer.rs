//! [`Scorer`]: owns the loaded models (ONNX Runtime sessions) and the
//! per-asset detectors; scores batches of windows across assets and runs
//! each asset's alert state machine (docs/architecture.md §5). It reports
//! the open alerts and writes nothing: persisting them is the caller's.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use super::features::ScoreRequest;
use super::output::{Output, ScoreRecord};
use crate::core::detect::{AlertKind, Decision, Detector, OpenAlert};
use crate::model::{BatchOutput, LoadedModel, RuntimeError};
use crate::ops::metrics::Metrics;

/// A message to the scoring thread.
#[derive(Debug)]
pub enum InferenceMsg {
    Windows(Vec<ScoreRequest>),
    Swap(Vec<NamedModel>),
    /// Another daemon's open alerts, taken over with a partition.
    AdoptAlerts(HashMap<String, OpenAlert>),
    /// A partition leaves: answer these assets' open alerts once every
    /// window sent before is scored, and forget the assets when `true`
    /// (given up; at shutdown they stay in the open-alerts file, for a
    /// restart).
    ReleaseAssets(
        Vec<String>,
        bool,
        tokio::sync::oneshot::Sender<HashMap<String, OpenAlert>>,
    ),
    /// Data-quality alarm transitions, passed on to the sinks in order.
    Quality(Vec<super::output::QualityRecord>),
    /// Journal segments up to its sequence are behind every window sent
    /// before it (docs/architecture.md §12).
    Barrier(super::output::Barrier),
}

/// The bounded channel of [`InferenceMsg`]: the source awaits room on it
/// (`send_async`), the scoring thread waits on it with a deadline
/// (`recv_deadline`, a plain thread park: no async timer, no extra
/// wake-up of the runtime per batch).
pub type WindowSender = flume::Sender<InferenceMsg>;
/// See [`WindowSender`].
pub type WindowReceiver = flume::Receiver<InferenceMsg>;

/// A loaded model under its configured name.
#[derive(Debug)]
pub struct NamedModel {
    pub name: Arc<str>,
    pub model: LoadedModel,
}

/// Owns the ONNX Runtime sessions and the detectors; scores batches.
#[derive(Debug)]
pub struct Scorer {
    models: Vec<NamedModel>,
    detectors: HashMap<Arc<str>, Detector>,
    metrics: Arc<Metrics>,
    batch: Vec<f32>,
    /// The last call's outputs, its vectors reused by the next.
    out: BatchOutput,
    /// Open alerts from before a restart, for assets not seen since.
    restore: HashMap<String, OpenAlert>,
    /// Start of each restored alert: windows before it (history replayed
    /// from the intake journal) were judged before the restart and do not
    /// drive the detector again.
    restored_from: HashMap<Arc<str>, i64>,
}

impl Scorer {
    pub fn new(models: Vec<NamedModel>, metrics: Arc<Metrics>) -> Self {
        Self {
            models,
            detectors: HashMap::new(),
            metrics,
            batch: Vec::new(),
            out: BatchOutput::default(),
            restore: HashMap::new(),
            restored_from: HashMap::new(),
        }
    }

    /// Starts each asset in these open alerts in the anomalous state, so an
    /// alert open before a restart is not raised again.
    pub fn restore_open_alerts(&mut self, open: HashMap<String, OpenAlert>) {
        if !open.is_empty() {
            tracing::info!(assets = open.len(), "restoring open alerts");
        }
        self.restore = open;
    }

    /// Takes over open alerts of assets another daemon scored before (a
    /// partition's handover, docs/scale-out.md §4); an asset this scorer
    /// already judges keeps its own state.
    pub fn adopt_open_alerts(&mut self, open: HashMap<String, OpenAlert>) {
        for (asset, alert) in open {
            if !self.detectors.contains_key(asset.as_str()) {
                self.restore.insert(asset, alert);
            }
        }
    }

    /// The open alerts of `assets`, to go with their partition; with
    /// `forget` (the partition moved to another daemon) the assets are
    /// dropped here.
    pub fn release_assets(
        &mut self,
        assets: &[String],
        forget: bool,
    ) -> HashMap<String, OpenAlert> {
        let open = self.open_alerts();
        let mut out = HashMap::new();
        for a in assets {
            if forget {
                self.detectors.remove(a.as_str());
                self.restore.remove(a);
                self.restored_from.remove(a.as_str());
            }
            if let Some(o) = open.get(a) {
                out.insert(a.clone(), *o);
            }
        }
        out
    }

    /// The alerts open now, per asset, for the caller to persist. Assets
    /// not seen since a restart keep their restored alert.
    pub fn open_alerts(&self) -> HashMap<String, OpenAlert> {
        let mut open: HashMap<String, OpenAlert> = self
            .detectors
            .iter()
            .filter_map(|(a, d)| {
                d.open_alert()
                    .map(|(start_ts, peak)| (a.to_string(), OpenAlert { start_ts, peak }))
            })
            .collect();
        for (a, o) in &self.restore {
            open.entry(a.clone()).or_insert(*o);
        }
        open
    }

    /// Installs reloaded models; detectors keep their state and pick up new
    /// settings from the requests' bindings.
    pub fn replace_models(&mut self, models: Vec<NamedModel>) {
        self.models = models;
    }

    /// Scores `requests` (any mix of assets and models; order within an
    /// asset is kept) and appends records and alerts to `out` in request order.
    /// Returns true when an alert was raised or cleared: [`Scorer::open_alerts`]
    /// then changed.
    pub fn score(&mut self, requests: &mut Vec<ScoreRequest>, out: &mut Vec<Output>) -> bool {
        if requests.is_empty() {
            return false;
        }
        let now = crate::core::timestamp::now_ns();
        for r in requests.iter().filter(|r| !r.rebuild) {
            let waited = (now - r.cut_ns).max(0) as f64 / 1e9;
            self.metrics.window_wait.observe(waited);
        }
        // Group by model, keeping request order within each model; each
        // request's model is looked up once.
        let model_of: Vec<usize> = requests
            .iter()
            .map(|r| self.model_index(&r.binding.model))
            .collect();
        let mut order: Vec<usize> = (0..requests.len()).collect();
        order.sort_by_key(|&i| model_of[i]);
        let mut results: Vec<Option<(f32, Vec<f32>)>> = vec![None; requests.len()];
        for group in order.chunk_by(|&i, &j| model_of[i] == model_of[j]) {
            self.score_group(model_of[group[0]], group, requests, &mut results);
        }
        let mut changed_alerts = false;
        for ((req, res), mi) in requests.drain(..).zip(results).zip(model_of) {
            let Some((score, channel_error)) = res else {
                continue;
            };
            let b = &req.binding;
            let restore = &mut self.restore;
            let restored_from = &mut self.restored_from;
            let det = self.detectors.entry(b.asset.clone()).or_insert_with(|| {
                let mut d = Detector::new(b.detector, b.channels.clone());
                if let Some(o) = restore.remove(&*b.asset) {
                    d.restore_open_alert(o.start_ts, o.peak);
                    restored_from.insert(b.asset.clone(), o.start_ts);
                }
                d
            });
            if det.settings() != &b.detector {
                det.set_settings(b.detector);
            }
            let meta = self.models.get(mi).map(|m| &m.model.metadata);
            // The model's score smoothing (its threshold was calibrated on
            // the smoothed validation scores); a reload may change it.
            if let Some(m) = meta {
                det.set_smoothing(m.detector.smoothing);
            }
            let decision = match self.restored_from.get(&b.asset) {
                Some(&from) if req.end_ts < from => Decision {
                    score,
                    // Before the alert began no alert was open.
                    anomalous: false,
                    threshold: det.threshold(),
                    alert: None,
                },
                _ => det.observe(req.end_ts, score, &channel_error),
            };
            // The record carries the score the threshold was compared with.
            let score = decision.score;
            let probability = meta
                .map(|m| m.error_distribution.probability(f64::from(score)))
                .unwrap_or(f64::NAN);
            out.push(Output::Score(ScoreRecord {
                binding: b.clone(),
                ts: req.end_ts,
                score,
                threshold: decision.threshold,
                anomalous: decision.anomalous,
                probability,
                channel_error,
            }));
            if let Some(event) = decision.alert {
                changed_alerts = true;
                match event.kind {
                    AlertKind::Raised => &self.metrics.alerts_raised,
                    AlertKind::Cleared => &self.metrics.alerts_cleared,
                }
                .fetch_add(1, Relaxed);
                out.push(Output::Alert {
                    binding: b.clone(),
                    event,
                });
            }
        }
        changed_alerts
    }

    fn model_index(&self, name: &str) -> usize {
        self.models
            .iter()
            .position(|m| &*m.name == name)
            .unwrap_or(usize::MAX)
    }

    fn score_group(
        &mut self,
        mi: usize,
        idx: &[usize],
        requests: &[ScoreRequest],
        results: &mut [Option<(f32, Vec<f32>)>],
    ) {
        let Some(NamedModel { model, .. }) = self.models.get_mut(mi) else {
            self.metrics
                .windows_dropped
                .fetch_add(idx.len() as u64, Relaxed);
            return;
        };
        let c = model.metadata.channels.len();
        let want = c * model.metadata.window;
        self.batch.clear();
        let mut used = Vec::with_capacity(idx.len());
        for &i in idx {
            if requests[i].data.len() == want {
                self.batch.extend_from_slice(&requests[i].data);
                used.push(i);
            } else {
                // A window cut for a model that a reload replaced.
                self.metrics.windows_dropped.fetch_add(1, Relaxed);
            }
        }
        if used.is_empty() {
            return;
        }
        let t0 = Instant::now();
        let outp = &mut self.out;
        match model.run_into(&self.batch, used.len(), outp) {
            Ok(()) => {
                self.metrics
                    .inference_latency
                    .observe(t0.elapsed().as_secs_f64());
                self.metrics.inference_batches.fetch_add(1, Relaxed);
                self.metrics
                    .windows_scored
                    .fetch_add(used.len() as u64, Relaxed);
                for (k, &i) in used.iter().enumerate() {
                    results[i] = Some((
                        outp.score[k],
                        outp.channel_error[k * c..(k + 1) * c].to_vec(),
                    ));
                }
            }
            Err(e) => {
                self.metrics.inference_errors.fetch_add(1, Relaxed);
                self.metrics
                    .windows_dropped
                    .fetch_add(used.len() as u64, Relaxed);
                log_inference_error(&e);
            }
        }
    }
}

fn log_inference_error(e: &RuntimeError) {
    tracing::error!(error = %e, "inference failed; the batch is dropped and counted");
}
