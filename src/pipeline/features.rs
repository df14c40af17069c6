//! [`FeatureStage`]: decoded messages in, normalised windows out, per asset
//! (align -> window -> normalise, docs/architecture.md §2-§3). Synchronous
//! and without I/O: the MQTT source calls it in line, `replay` too.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use super::binding::{AssetBinding, Binder, ModelSlot};
use super::output::{FrameRecord, Output};
use crate::config::Config;
use crate::core::align::{Aligner, AlignerConfig, Frame, PushOutcome};
use crate::core::reading::{DropReason, Message};
use crate::core::window::WindowBuffer;
use crate::ops::metrics::Metrics;

/// How far ahead of the receive time an event time may be before the
/// reading is treated as a clock fault (one jump would otherwise make every
/// later reading look late).
pub const MAX_FUTURE_NS: i64 = 300 * 1_000_000_000;

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
    /// Where aligned frames go for `[record]`, if it is on.
    record: Option<tokio::sync::mpsc::Sender<Output>>,
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
            record: None,
        }
    }

    /// Sends every aligned frame to `tx` too (`[record]`); a frame that
    /// finds the queue full is counted, never waited for: recording must
    /// not slow scoring down.
    pub fn record_to(&mut self, tx: tokio::sync::mpsc::Sender<Output>) {
        self.record = Some(tx);
    }

    fn record(
        tx: Option<&tokio::sync::mpsc::Sender<Output>>,
        metrics: &Metrics,
        binding: &Arc<AssetBinding>,
        frames: &[Frame],
    ) {
        let Some(tx) = tx else {
            return;
        };
        for f in frames {
            let frame = FrameRecord {
                binding: binding.clone(),
                ts: f.ts,
                values: f.values.clone(),
                imputed: f.imputed.clone(),
            };
            if tx.try_send(Output::Frame(frame)).is_err() {
                metrics.frames_not_recorded.fetch_add(1, Relaxed);
            }
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
                Self::feed_message(&self.metrics, slot, state, &mut self.frames, msg, ts);
                Self::record(
                    self.record.as_ref(),
                    &self.metrics,
                    &state.binding,
                    &self.frames,
                );
                Self::drain_frames(&self.metrics, slot, state, &mut self.frames, out);
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
            record,
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
        Self::record(record.as_ref(), metrics, &state.binding, frames);
        Self::drain_frames(metrics, slot, state, frames, out);
    }

    /// End of input for every asset: closes pending frames.
    pub fn flush(&mut self, out: &mut Vec<ScoreRequest>) {
        for state in self.assets.values_mut() {
            state.aligner.flush(&mut self.frames);
            Self::record(
                self.record.as_ref(),
                &self.metrics,
                &state.binding,
                &self.frames,
            );
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
