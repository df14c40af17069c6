//! [`FeatureStage`]: decoded messages in, normalised windows out, per asset
//! (align -> window -> normalise, docs/architecture.md §2-§3), and each
//! asset's data-quality alarms (docs/alerts.md §1). Synchronous and without
//! I/O: the MQTT source calls it in line, `replay` too; the source's clock
//! calls [`FeatureStage::tick`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use super::binding::{AssetBinding, Binder, ModelSlot, QualityRules};
use super::output::{FrameRecord, Output, QualityRecord};
use crate::core::align::{Aligner, AlignerConfig, Frame, PushOutcome};
use crate::core::quality::{
    QualityEvent, QualityKind, QualitySettings, RangeWatch, StaleWatch, StuckWatch,
};
use crate::core::reading::{DropReason, Message};
use crate::core::window::WindowBuffer;
use crate::ops::metrics::Metrics;

mod request;
pub use request::{ScoreRequest, StageSettings};

/// How far ahead of the receive time an event time may be before the
/// reading is treated as a clock fault (one jump would otherwise make every
/// later reading look late).
pub const MAX_FUTURE_NS: i64 = 300 * 1_000_000_000;

#[derive(Debug)]
struct AssetState {
    binding: Arc<AssetBinding>,
    slot: usize,
    aligner: Aligner,
    windows: WindowBuffer,
    quality: QualitySettings,
    stale: StaleWatch,
    stuck: StuckWatch,
    range: RangeWatch,
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
    quality_rules: QualityRules,
    /// Data-quality transitions not yet taken by the caller.
    quality: Vec<QualityRecord>,
    /// Data-quality alarms open before a restart, per asset not seen since:
    /// (alarm, channel, start ns).
    restore: HashMap<String, Vec<(QualityKind, Option<String>, i64)>>,
    /// Where aligned frames go for `[record]`, if it is on.
    record: Option<tokio::sync::mpsc::Sender<Output>>,
    /// This stage's share of the `assets` gauge (one stage per session).
    counted: u64,
}

impl Drop for FeatureStage {
    fn drop(&mut self) {
        let n = self.counted;
        let _ = self
            .metrics
            .assets
            .fetch_update(Relaxed, Relaxed, |a| Some(a.saturating_sub(n)));
    }
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
            quality_rules: QualityRules::default(),
            quality: Vec::new(),
            restore: HashMap::new(),
            record: None,
            counted: 0,
        }
    }

    /// Keeps the `assets` gauge the sum over every session's stage.
    fn count_assets(&mut self) {
        let n = self.assets.len() as u64;
        if n >= self.counted {
            self.metrics.assets.fetch_add(n - self.counted, Relaxed);
        } else {
            let less = self.counted - n;
            let _ = self
                .metrics
                .assets
                .fetch_update(Relaxed, Relaxed, |a| Some(a.saturating_sub(less)));
        }
        self.counted = n;
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

    /// Data-quality alarms open before a restart: (asset, alarm key as
    /// `stale` or `stuck:<channel>`, start ns). Each asset starts with them
    /// open, so the data that ends them clears them (docs/alerts.md §5).
    pub fn restore_quality(&mut self, open: Vec<(String, String, i64)>) {
        for (asset, key, start) in open {
            let (kind, channel) = match key.split_once(':') {
                Some((k, c)) => (k, Some(c.to_string())),
                None => (key.as_str(), None),
            };
            if let Some(kind) = QualityKind::parse(kind) {
                self.restore
                    .entry(asset)
                    .or_default()
                    .push((kind, channel, start));
            }
        }
    }

    /// Turns on the data-quality alarms with these thresholds (off by
    /// default); also applies to assets already tracked (reload).
    pub fn set_quality_rules(&mut self, rules: QualityRules) {
        for (name, st) in &mut self.assets {
            st.quality = rules.settings_for(name, st.aligner.config().period_ns);
            let meta = &self.slots[st.slot].meta;
            let margin = st.quality.out_of_range_margin;
            st.range = RangeWatch::new(&meta.normaliser, &meta.channels, margin);
        }
        self.quality_rules = rules;
    }

    /// Takes the data-quality transitions decided since the last call.
    pub fn take_quality(&mut self) -> Vec<QualityRecord> {
        std::mem::take(&mut self.quality)
    }

    /// The clock (docs/alerts.md §2): at receive time `now` (ns), closes the
    /// pending frames of every asset silent for longer than the allowed
    /// lateness (their windows go to `out`, or count as gaps), and raises or
    /// clears `stale` alarms. `since` is when the source last connected;
    /// `None` while disconnected, when silence says nothing about sensors.
    pub fn tick(&mut self, now: i64, since: Option<i64>, out: &mut Vec<ScoreRequest>) {
        let Some(since) = since else {
            return;
        };
        let lateness = self.settings.allowed_lateness_ns;
        let mut events = Vec::new();
        for state in self.assets.values_mut() {
            if state.stale.silent_for(now, since) > lateness {
                state.aligner.flush(&mut self.frames);
                let slot = &self.slots[state.slot];
                Self::drain_frames(
                    &self.metrics,
                    self.record.as_ref(),
                    slot,
                    state,
                    &mut self.frames,
                    out,
                );
            }
            state.stale.check(
                now,
                since,
                state.quality.stale_after_ns,
                &state.binding.channels,
                &mut events,
            );
            Self::collect(&state.binding, &mut events, &mut self.quality);
        }
    }

    fn collect(
        binding: &Arc<AssetBinding>,
        events: &mut Vec<QualityEvent>,
        into: &mut Vec<QualityRecord>,
    ) {
        into.extend(events.drain(..).map(|event| QualityRecord {
            binding: binding.clone(),
            event,
        }));
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
        self.count_assets();
    }

    /// Bindings of every tracked asset.
    /// The assets this stage has seen (bound or not).
    pub fn asset_names(&self) -> Vec<String> {
        self.assets
            .keys()
            .chain(self.unbound.iter())
            .cloned()
            .collect()
    }

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
                let times = (ts, recv_ts);
                Self::feed_message(
                    &self.metrics,
                    slot,
                    state,
                    &mut self.frames,
                    msg,
                    times,
                    &mut self.quality,
                );
                Self::drain_frames(
                    &self.metrics,
                    self.record.as_ref(),
                    slot,
                    state,
                    &mut self.frames,
                    out,
                );
                return;
            }
            if !first || !self.ensure_asset(&msg.asset, recv_ts) {
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
        (ts, recv_ts): (i64, i64),
        quality: &mut Vec<QualityRecord>,
    ) {
        let mut used = 0u64;
        let mut events = Vec::new();
        for (i, (channel, value)) in msg.values.iter().enumerate() {
            // Frames usually list the channels in the model's order: compare
            // in place before hashing.
            let ci = if slot.meta.channels.get(i) == Some(channel) {
                i
            } else if let Some(&ci) = slot.channel_index.get(channel) {
                ci
            } else {
                metrics.count_drop(DropReason::UnknownChannel, 1);
                note_drop(
                    metrics,
                    slot,
                    &msg.asset,
                    "unknown_channel",
                    Some(channel.as_str()),
                );
                continue;
            };
            match state.aligner.push(ci, ts, *value, frames) {
                PushOutcome::Accepted => {
                    used += 1;
                    state.stale.seen(ci, recv_ts);
                    let name = &slot.meta.channels[ci];
                    let q = &state.quality;
                    state.stuck.push(ci, ts, *value, q, name, &mut events);
                    state.range.push(ci, ts, *value, name, &mut events);
                }
                PushOutcome::Late => {
                    // Late, but the sensor is not silent.
                    state.stale.seen(ci, recv_ts);
                    metrics.count_drop(DropReason::Late, 1);
                    note_drop(metrics, slot, &msg.asset, "late", Some(channel.as_str()));
                }
                PushOutcome::NonFinite => metrics.count_drop(DropReason::NonFinite, 1),
                PushOutcome::UnknownChannel => metrics.count_drop(DropReason::UnknownChannel, 1),
            }
        }
        metrics.readings_used.fetch_add(used, Relaxed);
        Self::collect(&state.binding, &mut events, quality);
    }

    /// Feeds one row of a log (every channel at `ts`, in the model's
    /// channel order; NaN = missing) for `asset`.
    pub fn push_row(&mut self, asset: &str, ts: i64, values: &[f64], out: &mut Vec<ScoreRequest>) {
        self.metrics
            .readings_received
            .fetch_add(values.len() as u64, Relaxed);
        if !self.ensure_asset(asset, ts) {
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
        Self::drain_frames(metrics, record.as_ref(), slot, state, frames, out);
    }

    /// End of input for every asset: closes pending frames.
    pub fn flush(&mut self, out: &mut Vec<ScoreRequest>) {
        for state in self.assets.values_mut() {
            state.aligner.flush(&mut self.frames);
            let slot = &self.slots[state.slot];
            Self::drain_frames(
                &self.metrics,
                self.record.as_ref(),
                slot,
                state,
                &mut self.frames,
                out,
            );
        }
    }

    /// Creates the asset's state on first sight; false when the asset is
    /// not served (no model bound, too many assets), counted.
    fn ensure_asset(&mut self, asset: &str, now: i64) -> bool {
        if !self.assets.contains_key(asset) {
            if self.unbound.contains(asset) {
                self.metrics.count_drop(DropReason::UnknownAsset, 1);
                self.metrics
                    .note_asset_drop(asset, "unknown_asset", None, 1);
                return false;
            }
            if self.assets.len() >= self.settings.max_assets {
                self.metrics.count_drop(DropReason::TooManyAssets, 1);
                if let Some(d) = self
                    .metrics
                    .note_asset_drop(asset, "too_many_assets", None, 1)
                {
                    tracing::warn!(
                        asset,
                        count = d.count,
                        max_assets = self.settings.max_assets,
                        "pipeline.max_assets reached; this asset's readings are dropped"
                    );
                }
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
                self.metrics
                    .note_asset_drop(asset, "unknown_asset", None, 1);
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
            let varied = meta
                .channels
                .iter()
                .zip(&meta.normaliser.std)
                .map(|(c, sd)| *sd > 0.0 && !meta.normaliser.constant_channels.contains(c))
                .collect();
            let quality = self.quality_rules.settings_for(asset, period);
            let margin = quality.out_of_range_margin;
            let mut state = AssetState {
                range: RangeWatch::new(&meta.normaliser, &meta.channels, margin),
                quality,
                stale: StaleWatch::new(meta.channels.len(), now),
                stuck: StuckWatch::new(varied),
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
            for (kind, channel, start) in self.restore.remove(asset).unwrap_or_default() {
                let ci = channel
                    .as_ref()
                    .and_then(|c| self.slots[idx].channel_index.get(c).copied());
                match (kind, ci) {
                    (QualityKind::Stale, ci) if channel.is_none() || ci.is_some() => {
                        state.stale.restore(ci, start);
                    }
                    (QualityKind::Stuck, Some(c)) => state.stuck.restore(c, start),
                    (QualityKind::OutOfRange, Some(c)) => state.range.restore(c, start),
                    _ => {}
                }
            }
            tracing::info!(asset, model = %state.binding.model, "tracking new asset");
            self.assets.insert(asset.to_string(), state);
            self.count_assets();
        }
        true
    }

    /// Turns closed frames into windows (recording them first with
    /// `[record]`).
    fn drain_frames(
        metrics: &Metrics,
        record: Option<&tokio::sync::mpsc::Sender<Output>>,
        slot: &ModelSlot,
        state: &mut AssetState,
        frames: &mut Vec<Frame>,
        out: &mut Vec<ScoreRequest>,
    ) {
        Self::record(record, metrics, &state.binding, frames);
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
                    note_drop(metrics, slot, &state.binding.asset, "gap", None);
                }
                Some(Ok(mut w)) => {
                    slot.normaliser.apply_window(&mut w.data, slot.meta.window);
                    out.push(ScoreRequest {
                        binding: state.binding.clone(),
                        end_ts: w.end_ts,
                        data: w.data,
                        rebuild: false,
                        cut_ns: crate::core::timestamp::now_ns(),
                    });
                }
            }
        }
    }
}

/// Counts a drop of `asset` for `reason` in the per-asset table and logs
/// it, rate-limited, with the names involved and what the model expects
/// (docs/alerts.md §7: why no scores).
fn note_drop(
    metrics: &Metrics,
    slot: &ModelSlot,
    asset: &str,
    reason: &'static str,
    name: Option<&str>,
) {
    if let Some(d) = metrics.note_asset_drop(asset, reason, name, 1) {
        tracing::warn!(
            asset,
            reason,
            count = d.count,
            names = ?d.names,
            model = %slot.name,
            model_channels = ?slot.meta.channels,
            "readings or windows of this asset give no score"
        );
    }
}

#[cfg(test)]
mod tests;
