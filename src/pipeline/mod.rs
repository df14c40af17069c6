//! The synchronous heart of the daemon, shared by `run` and `replay`:
//! [`FeatureStage`] turns decoded messages into normalised windows per asset
//! (align -> window -> normalise), and [`Scorer`] scores windows in batches
//! with the loaded models and runs each asset's detector. No async, no
//! network: `run` puts the two on different threads, `replay` calls them
//! in line.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use crate::config::{AssetRule, Config};
use crate::core::align::{Aligner, AlignerConfig, Frame, PushOutcome};
use crate::core::contract::ModelMetadata;
use crate::core::detect::{AlertEvent, Detector, DetectorSettings};
use crate::core::normalise::Normaliser;
use crate::core::window::WindowBuffer;
use crate::model::{LoadedModel, RuntimeError};
use crate::ops::metrics::Metrics;
use crate::sources::mqtt::decode::{DropReason, Message};

/// How far ahead of the receive time an event time may be before the
/// reading is treated as a clock fault (one jump would otherwise make every
/// later reading look late).
pub const MAX_FUTURE_NS: i64 = 300 * 1_000_000_000;

/// What the pipeline needs to know about one model.
#[derive(Debug)]
pub struct ModelSlot {
    pub name: Arc<str>,
    pub meta: Arc<ModelMetadata>,
    pub channels: Arc<[String]>,
    normaliser: Normaliser,
    channel_index: HashMap<String, usize>,
}

impl ModelSlot {
    pub fn new(name: &str, meta: ModelMetadata) -> Self {
        let channel_index = meta
            .channels
            .iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), i))
            .collect();
        Self {
            name: name.into(),
            normaliser: Normaliser::new(&meta.normaliser),
            channels: meta.channels.clone().into(),
            channel_index,
            meta: Arc::new(meta),
        }
    }
}

/// Which model an asset uses and its detector settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AssetBinding {
    pub asset: Arc<str>,
    pub model: Arc<str>,
    pub detector: DetectorSettings,
    pub channels: Arc<[String]>,
}

/// Resolves asset ids to models (first matching `[[assets]]` rule, then the
/// default model).
#[derive(Debug, Clone, Default)]
pub struct Binder {
    rules: Vec<AssetRule>,
    default_model: Option<String>,
}

impl Binder {
    pub fn from_config(cfg: &Config) -> Self {
        let default_model = cfg
            .default_model
            .clone()
            .or_else(|| (cfg.models.len() == 1).then(|| cfg.models[0].name.clone()));
        Self {
            rules: cfg.assets.clone(),
            default_model,
        }
    }

    /// Every asset uses `model` with its stored detector defaults.
    pub fn single(model: &str) -> Self {
        Self {
            rules: Vec::new(),
            default_model: Some(model.to_string()),
        }
    }

    /// Adds a rule in front of the others (e.g. a CLI threshold override).
    pub fn with_rule(mut self, rule: AssetRule) -> Self {
        self.rules.insert(0, rule);
        self
    }

    fn bind(&self, asset: &str, slots: &[ModelSlot]) -> Option<(usize, AssetBinding)> {
        let rule = self
            .rules
            .iter()
            .find(|r| crate::config::glob_match(&r.pattern, asset));
        let model = rule
            .and_then(|r| r.model.as_deref())
            .or(self.default_model.as_deref())?;
        let idx = slots.iter().position(|s| &*s.name == model)?;
        let slot = &slots[idx];
        let mut d = DetectorSettings::from_model(slot.meta.threshold.value, &slot.meta.detector);
        if let Some(r) = rule {
            d.threshold = r.threshold.unwrap_or(d.threshold);
            d.raise_after = r.raise_after.unwrap_or(d.raise_after);
            d.clear_after = r.clear_after.unwrap_or(d.clear_after);
            d.clear_ratio = r.clear_ratio.unwrap_or(d.clear_ratio);
        }
        Some((
            idx,
            AssetBinding {
                asset: asset.into(),
                model: slot.name.clone(),
                detector: d,
                channels: slot.channels.clone(),
            },
        ))
    }
}

/// A normalised window waiting for its score.
#[derive(Debug, Clone)]
pub struct ScoreRequest {
    pub binding: Arc<AssetBinding>,
    pub end_ts: i64,
    /// `C x T`, channel-major, normalised.
    pub data: Vec<f32>,
}

/// Settings of the aligner and window stages.
#[derive(Debug, Clone, Copy)]
pub struct StageSettings {
    pub max_age_periods: u32,
    pub allowed_lateness_ns: i64,
    pub max_imputed_fraction: f32,
    pub max_assets: usize,
}

impl StageSettings {
    pub fn from_config(cfg: &Config) -> Self {
        Self {
            max_age_periods: cfg.pipeline.max_age_periods,
            allowed_lateness_ns: cfg.pipeline.allowed_lateness_ms as i64 * 1_000_000,
            max_imputed_fraction: cfg.pipeline.max_imputed_fraction,
            max_assets: cfg.pipeline.max_assets,
        }
    }
}

impl Default for StageSettings {
    fn default() -> Self {
        Self {
            max_age_periods: 3,
            allowed_lateness_ns: 2_000_000_000,
            max_imputed_fraction: 0.2,
            max_assets: 10_000,
        }
    }
}

#[derive(Debug)]
struct AssetState {
    binding: Arc<AssetBinding>,
    slot: usize,
    aligner: Aligner,
    windows: WindowBuffer,
}

/// Per-asset alignment, windowing and normalisation.
#[derive(Debug)]
pub struct FeatureStage {
    slots: Vec<ModelSlot>,
    binder: Binder,
    settings: StageSettings,
    assets: HashMap<String, AssetState>,
    unbound: std::collections::HashSet<String>,
    metrics: Arc<Metrics>,
    frames: Vec<Frame>,
}

impl FeatureStage {
    pub fn new(
        slots: Vec<ModelSlot>,
        binder: Binder,
        settings: StageSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            slots,
            binder,
            settings,
            assets: HashMap::new(),
            unbound: Default::default(),
            metrics,
            frames: Vec::new(),
        }
    }

    pub fn slots(&self) -> &[ModelSlot] {
        &self.slots
    }

    /// Installs new models and bindings (reload). Assets whose model keeps
    /// the same channels, period and window keep their aligner and window
    /// state; the others start afresh.
    pub fn replace_models(
        &mut self,
        slots: Vec<ModelSlot>,
        binder: Binder,
        settings: StageSettings,
    ) {
        let old_assets = std::mem::take(&mut self.assets);
        let old_slots = std::mem::replace(&mut self.slots, slots);
        self.binder = binder;
        self.settings = settings;
        self.unbound.clear();
        for (name, mut st) in old_assets {
            let Some((idx, binding)) = self.binder.bind(&name, &self.slots) else {
                continue;
            };
            let old = &old_slots[st.slot].meta;
            let new = &self.slots[idx].meta;
            if old.channels == new.channels
                && old.sample_period_ms == new.sample_period_ms
                && old.window == new.window
                && old.stride == new.stride
            {
                st.slot = idx;
                st.binding = Arc::new(binding);
                self.assets.insert(name, st);
            }
        }
        self.metrics.assets.store(self.assets.len() as u64, Relaxed);
    }

    /// Bindings of every tracked asset.
    pub fn bindings(&self) -> Vec<Arc<AssetBinding>> {
        self.assets.values().map(|a| a.binding.clone()).collect()
    }

    /// Feeds one decoded message; windows that became ready are appended to
    /// `out`. `recv_ts` (ns) stands in for a missing event time.
    pub fn push_message(&mut self, msg: &Message, recv_ts: i64, out: &mut Vec<ScoreRequest>) {
        let m = &self.metrics;
        m.readings_received
            .fetch_add(msg.values.len() as u64, Relaxed);
        if msg.non_finite > 0 {
            m.count_drop(DropReason::NonFinite, msg.non_finite as u64);
        }
        let ts = msg.ts.unwrap_or(recv_ts);
        if msg.ts.is_some() && ts > recv_ts.saturating_add(MAX_FUTURE_NS) {
            m.count_drop(DropReason::Future, msg.values.len() as u64);
            return;
        }
        // One hash lookup for a known asset; the first message of a new
        // one creates it and looks again.
        for first in [true, false] {
            if let Some(state) = self.assets.get_mut(msg.asset.as_str()) {
                let slot = &self.slots[state.slot];
                Self::feed_message(&self.metrics, slot, state, &mut self.frames, msg, ts, out);
                return;
            }
            if !first || !self.ensure_asset(&msg.asset) {
                return;
            }
        }
    }

    fn feed_message(
        metrics: &Metrics,
        slot: &ModelSlot,
        state: &mut AssetState,
        frames: &mut Vec<Frame>,
        msg: &Message,
        ts: i64,
        out: &mut Vec<ScoreRequest>,
    ) {
        let mut used = 0u64;
        for (i, (channel, value)) in msg.values.iter().enumerate() {
            // Frames usually list the channels in the model's order: compare
            // in place before hashing.
            let ci = if slot.meta.channels.get(i) == Some(channel) {
                i
            } else if let Some(&ci) = slot.channel_index.get(channel) {
                ci
            } else {
                metrics.count_drop(DropReason::UnknownChannel, 1);
                continue;
            };
            match state.aligner.push(ci, ts, *value, frames) {
                PushOutcome::Accepted => used += 1,
                PushOutcome::Late => metrics.count_drop(DropReason::Late, 1),
                PushOutcome::NonFinite => metrics.count_drop(DropReason::NonFinite, 1),
                PushOutcome::UnknownChannel => metrics.count_drop(DropReason::UnknownChannel, 1),
            }
        }
        metrics.readings_used.fetch_add(used, Relaxed);
        Self::drain_frames(metrics, slot, state, frames, out);
    }

    /// Feeds one row of a log (every channel at `ts`, in the model's
    /// channel order; NaN = missing) for `asset`.
    pub fn push_row(&mut self, asset: &str, ts: i64, values: &[f64], out: &mut Vec<ScoreRequest>) {
        self.metrics
            .readings_received
            .fetch_add(values.len() as u64, Relaxed);
        if !self.ensure_asset(asset) {
            return;
        }
        let Self {
            assets,
            slots,
            metrics,
            frames,
            ..
        } = self;
        let Some(state) = assets.get_mut(asset) else {
            return;
        };
        let slot = &slots[state.slot];
        let before = state.aligner.stats().clone();
        state.aligner.push_row(ts, values, frames);
        let after = state.aligner.stats();
        metrics.count_drop(DropReason::Late, after.late.saturating_sub(before.late));
        metrics.count_drop(
            DropReason::NonFinite,
            after.non_finite.saturating_sub(before.non_finite),
        );
        metrics
            .readings_used
            .fetch_add(after.readings.saturating_sub(before.readings), Relaxed);
        Self::drain_frames(metrics, slot, state, frames, out);
    }

    /// End of input for every asset: closes pending frames.
    pub fn flush(&mut self, out: &mut Vec<ScoreRequest>) {
        for state in self.assets.values_mut() {
            state.aligner.flush(&mut self.frames);
            let slot = &self.slots[state.slot];
            Self::drain_frames(&self.metrics, slot, state, &mut self.frames, out);
        }
    }

    /// Creates the asset's state on first sight; false when the asset is
    /// not served (no model bound, too many assets), counted.
    fn ensure_asset(&mut self, asset: &str) -> bool {
        if !self.assets.contains_key(asset) {
            if self.unbound.contains(asset) {
                self.metrics.count_drop(DropReason::UnknownAsset, 1);
                return false;
            }
            if self.assets.len() >= self.settings.max_assets {
                self.metrics.count_drop(DropReason::TooManyAssets, 1);
                return false;
            }
            let Some((idx, binding)) = self.binder.bind(asset, &self.slots) else {
                // Remember (bounded) so the rules are not re-evaluated per message.
                if self.unbound.len() < self.settings.max_assets {
                    self.unbound.insert(asset.to_string());
                }
                tracing::warn!(
                    asset,
                    "no model is bound to this asset; its readings are dropped"
                );
                self.metrics.count_drop(DropReason::UnknownAsset, 1);
                return false;
            };
            let meta = &self.slots[idx].meta;
            let period = meta.sample_period_ms as i64 * 1_000_000;
            let cfg = AlignerConfig {
                period_ns: period,
                max_age_ns: period * i64::from(self.settings.max_age_periods),
                allowed_lateness_ns: self.settings.allowed_lateness_ns,
                ..AlignerConfig::for_period(period)
            };
            let state = AssetState {
                aligner: Aligner::new(meta.channels.len(), cfg),
                windows: WindowBuffer::new(
                    meta.channels.len(),
                    meta.window,
                    meta.stride,
                    self.settings.max_imputed_fraction,
                ),
                binding: Arc::new(binding),
                slot: idx,
            };
            tracing::info!(asset, model = %state.binding.model, "tracking new asset");
            self.assets.insert(asset.to_string(), state);
            self.metrics.assets.store(self.assets.len() as u64, Relaxed);
        }
        true
    }

    fn drain_frames(
        metrics: &Metrics,
        slot: &ModelSlot,
        state: &mut AssetState,
        frames: &mut Vec<Frame>,
        out: &mut Vec<ScoreRequest>,
    ) {
        for frame in frames.drain(..) {
            metrics.frames.fetch_add(1, Relaxed);
            let imputed = frame.imputed.iter().filter(|b| **b).count() as u64;
            if imputed > 0 {
                metrics.frames_imputed_values.fetch_add(imputed, Relaxed);
            }
            match state.windows.push(&frame) {
                None => {}
                Some(Err(_)) => {
                    metrics.windows_skipped_gap.fetch_add(1, Relaxed);
                }
                Some(Ok(mut w)) => {
                    slot.normaliser.apply_window(&mut w.data, slot.meta.window);
                    out.push(ScoreRequest {
                        binding: state.binding.clone(),
                        end_ts: w.end_ts,
                        data: w.data,
                    });
                }
            }
        }
    }
}

/// One scored window, ready for the sink.
#[derive(Debug, Clone)]
pub struct ScoreRecord {
    pub binding: Arc<AssetBinding>,
    pub ts: i64,
    pub score: f32,
    pub threshold: f32,
    pub anomalous: bool,
    pub probability: f64,
    pub channel_error: Vec<f32>,
}

/// What leaves the scorer: scores and alert transitions.
#[derive(Debug, Clone)]
pub enum Output {
    Score(ScoreRecord),
    Alert {
        binding: Arc<AssetBinding>,
        event: AlertEvent,
    },
    /// Everything before this came from journal segments up to this
    /// sequence; the sink confirms it once that is written or spooled.
    Barrier(u64),
}

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
    /// Where open alerts are persisted, and those still to be restored.
    alert_store: Option<crate::state::open_alerts::AlertStore>,
    restore: HashMap<String, crate::state::open_alerts::OpenAlert>,
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
            alert_store: None,
            restore: HashMap::new(),
            restored_from: HashMap::new(),
        }
    }

    /// Persists open alerts in `dir` and restores those saved there, so an
    /// alert open before a restart is not raised again.
    pub fn with_alert_state(mut self, dir: &std::path::Path) -> Self {
        let (store, open) = crate::state::open_alerts::AlertStore::open(dir);
        if !open.is_empty() {
            tracing::info!(assets = open.len(), "restoring open alerts");
        }
        self.restore = open;
        self.alert_store = Some(store);
        self
    }

    fn save_alert_state(&mut self) {
        let Some(store) = self.alert_store.as_mut() else {
            return;
        };
        let mut open: HashMap<String, crate::state::open_alerts::OpenAlert> = self
            .detectors
            .iter()
            .filter_map(|(a, d)| {
                d.open_alert().map(|(start_ts, peak)| {
                    (
                        a.to_string(),
                        crate::state::open_alerts::OpenAlert { start_ts, peak },
                    )
                })
            })
            .collect();
        // Assets not seen since the restart keep their saved alert.
        for (a, o) in &self.restore {
            open.entry(a.clone()).or_insert(*o);
        }
        store.save(open);
    }

    /// Installs reloaded models; detectors keep their state and pick up new
    /// settings from the requests' bindings.
    pub fn replace_models(&mut self, models: Vec<NamedModel>) {
        self.models = models;
    }

    /// Scores `requests` (any mix of assets and models; order within an
    /// asset is kept) and appends records and alerts to `out` in request order.
    pub fn score(&mut self, requests: &mut Vec<ScoreRequest>, out: &mut Vec<Output>) {
        if requests.is_empty() {
            return;
        }
        // Group by model, keeping request order within each model.
        let mut order: Vec<usize> = (0..requests.len()).collect();
        order.sort_by_key(|&i| self.model_index(&requests[i].binding.model));
        let mut results: Vec<Option<(f32, Vec<f32>)>> = vec![None; requests.len()];
        let mut start = 0;
        while start < order.len() {
            let mi = self.model_index(&requests[order[start]].binding.model);
            let mut end = start + 1;
            while end < order.len() && self.model_index(&requests[order[end]].binding.model) == mi {
                end += 1;
            }
            self.score_group(mi, &order[start..end], requests, &mut results);
            start = end;
        }
        let mut changed_alerts = false;
        for (req, res) in requests.drain(..).zip(results) {
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
            let meta = self
                .models
                .iter()
                .find(|m| m.name == b.model)
                .map(|m| &m.model.metadata);
            // The model's score smoothing (its threshold was calibrated on
            // the smoothed validation scores); a reload may change it.
            if let Some(m) = meta {
                det.set_smoothing(m.detector.smoothing);
            }
            let decision = match self.restored_from.get(&b.asset) {
                Some(&from) if req.end_ts < from => crate::core::detect::Decision {
                    score,
                    // Before the alert began no alert was open.
                    anomalous: false,
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
                threshold: b.detector.threshold,
                anomalous: decision.anomalous,
                probability,
                channel_error,
            }));
            if let Some(event) = decision.alert {
                changed_alerts = true;
                match event.kind {
                    crate::core::detect::AlertKind::Raised => &self.metrics.alerts_raised,
                    crate::core::detect::AlertKind::Cleared => &self.metrics.alerts_cleared,
                }
                .fetch_add(1, Relaxed);
                out.push(Output::Alert {
                    binding: b.clone(),
                    event,
                });
            }
        }
        if changed_alerts {
            self.save_alert_state();
        }
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
        match model.run(&self.batch, used.len()) {
            Ok(outp) => {
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
