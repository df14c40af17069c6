//! Event-time alignment (docs/architecture.md §3): readings of one asset's channels,
//! each with its own timestamp, become [`Frame`]s on a fixed tick grid, one
//! value per channel, with a mask of the values that were imputed.
//!
//! Ticks are the multiples of the period since the epoch. The frame at tick
//! `k` holds, per channel, the latest reading with `ts <= k`; a value older
//! than `max_age` is still used (the last known value) but marked imputed.
//! A frame is closed, i.e. emitted or dropped, exactly once and in tick
//! order: when every channel has a reading at or after the tick, or when the
//! watermark (newest timestamp seen minus `allowed_lateness`, or the clock
//! given to [`Aligner::advance_to`]) has reached it. Readings for a tick
//! already emitted are late and dropped (counted). Frames before every
//! channel has spoken are dropped as warm-up; silences longer than
//! `max_gap_frames` ticks are not filled in: the next frame carries
//! `gap_before` so consumers restart their windows.
//!
//! Closing a tick once every channel has reached it assumes that each
//! channel's own readings arrive in time order (as MQTT delivers one topic);
//! readings of different channels may interleave freely within the lateness.
//! So a frame whose channels all report exactly on the tick closes with its
//! last reading, not one period later; a second reading with that very
//! timestamp then arrives late and is counted.
//!
//! Memory is bounded by `allowed_lateness / period` ticks times the number of
//! channels: only ticks that can still change are buffered, and closed ticks
//! leave just the last value per channel behind.

use std::collections::VecDeque;

/// Lateness is capped at this many periods so that a mistyped configuration
/// cannot make the pending buffer grow without bound.
pub const MAX_LATENESS_PERIODS: i64 = 100_000;
/// `max_gap_frames` is capped at this, so that one wild timestamp cannot
/// make the aligner emit frames for ever.
pub const MAX_GAP_FRAMES: usize = 1_000_000;

/// Timing rules of an [`Aligner`], all in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlignerConfig {
    /// Tick spacing (the model's sample period); at least 1.
    pub period_ns: i64,
    /// A value older than this at a tick is imputed (and marked).
    pub max_age_ns: i64,
    /// How far behind the newest timestamp a reading may arrive and still
    /// count; the watermark is `newest - allowed_lateness`.
    pub allowed_lateness_ns: i64,
    /// A silence of more than this many ticks is a gap: its frames are not
    /// emitted and the next frame has `gap_before`.
    pub max_gap_frames: usize,
}

impl AlignerConfig {
    /// The defaults for a period: values may be 3 periods old, readings 2
    /// periods late, and silences up to 60 frames are bridged.
    pub fn for_period(period_ns: i64) -> Self {
        let p = period_ns.max(1);
        Self {
            period_ns: p,
            max_age_ns: p.saturating_mul(3),
            allowed_lateness_ns: p.saturating_mul(2),
            max_gap_frames: 60,
        }
    }

    /// The configuration as the aligner applies it: period at least 1 ns,
    /// ages and lateness not negative, lateness at most
    /// [`MAX_LATENESS_PERIODS`] periods, gap at most [`MAX_GAP_FRAMES`].
    fn sanitised(self) -> Self {
        let p = self.period_ns.max(1);
        Self {
            period_ns: p,
            max_age_ns: self.max_age_ns.max(0),
            allowed_lateness_ns: self
                .allowed_lateness_ns
                .clamp(0, p.saturating_mul(MAX_LATENESS_PERIODS)),
            max_gap_frames: self.max_gap_frames.min(MAX_GAP_FRAMES),
        }
    }
}

/// One aligned sample of every channel at a tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The tick, nanoseconds since the epoch.
    pub ts: i64,
    /// One value per channel, in the aligner's channel order.
    pub values: Vec<f32>,
    /// True where the value is older than `max_age` (carried forward).
    pub imputed: Vec<bool>,
    /// Frames were left out just before this one (a gap): restart windows.
    pub gap_before: bool,
}

/// Counters of an [`Aligner`] since it was created.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlignStats {
    /// Values offered for known channels, including late and non-finite ones.
    pub readings: u64,
    /// Readings dropped because their tick was already emitted.
    pub late: u64,
    /// NaN or infinite values (and empty CSV cells), not stored.
    pub non_finite: u64,
    /// Frames emitted.
    pub frames: u64,
    /// Values in emitted frames that were imputed.
    pub imputed_values: u64,
    /// Ticks dropped because some channel had never had a value.
    pub warmup_frames: u64,
    /// Silences longer than `max_gap_frames` (each counted once).
    pub gaps: u64,
}

/// What happened to one reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    Accepted,
    /// Its tick was already emitted; dropped and counted.
    Late,
    /// NaN or infinite; dropped and counted.
    NonFinite,
    /// The channel index is not below the aligner's channel count.
    UnknownChannel,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    ts: i64,
    value: f64,
}

/// One pending tick: per channel, the newest reading in `(tick - period, tick]`.
type Bucket = Vec<Option<Slot>>;

/// Turns timestamped readings of `C` channels into frames on a tick grid.
/// See the module documentation for the rules.
#[derive(Debug, Clone)]
pub struct Aligner {
    cfg: AlignerConfig,
    channels: usize,
    /// Per channel, the newest reading at or before the last closed tick.
    carry: Vec<Option<Slot>>,
    /// Per channel, the newest timestamp accepted.
    channel_max: Vec<Option<i64>>,
    /// Newest timestamp accepted on any channel.
    max_ts: Option<i64>,
    /// Index (ts / period) of the last closed tick; `None` before the first reading.
    closed: Option<i64>,
    /// Index of the last emitted tick.
    last_emitted: Option<i64>,
    /// `pending[i]` is tick index `closed + 1 + i`.
    pending: VecDeque<Bucket>,
    /// Emptied buckets kept for reuse.
    spare: Vec<Bucket>,
    /// Inside a gap: the next emitted frame gets `gap_before`.
    gap_open: bool,
    stats: AlignStats,
}

impl Aligner {
    /// An aligner for `num_channels` channels (indices `0..num_channels`).
    /// Out-of-range settings are clamped (see [`AlignerConfig`]).
    pub fn new(num_channels: usize, cfg: AlignerConfig) -> Self {
        Self {
            cfg: cfg.sanitised(),
            channels: num_channels,
            carry: vec![None; num_channels],
            channel_max: vec![None; num_channels],
            max_ts: None,
            closed: None,
            last_emitted: None,
            pending: VecDeque::new(),
            spare: Vec::new(),
            gap_open: false,
            stats: AlignStats::default(),
        }
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The configuration in effect (after clamping).
    pub fn config(&self) -> &AlignerConfig {
        &self.cfg
    }

    /// Offers one reading; frames it closes are appended to `out`.
    pub fn push(
        &mut self,
        channel: usize,
        ts: i64,
        value: f64,
        out: &mut Vec<Frame>,
    ) -> PushOutcome {
        if channel >= self.channels {
            return PushOutcome::UnknownChannel;
        }
        self.stats.readings += 1;
        if !value.is_finite() {
            self.stats.non_finite += 1;
            return PushOutcome::NonFinite;
        }
        if self.is_late(ts) {
            self.stats.late += 1;
            return PushOutcome::Late;
        }
        let tick = self.ceil_idx(ts);
        self.prepare_insert(ts, tick, out);
        self.insert(channel, ts, value, tick);
        self.close_through(self.close_target(), out);
        PushOutcome::Accepted
    }

    /// Offers a row of readings that share one timestamp (a CSV row), value
    /// `c` for channel `c`. Non-finite values (empty cells) are missing
    /// values: counted as non-finite, not errors. Values beyond the channel
    /// count are ignored.
    pub fn push_row(&mut self, ts: i64, values: &[f64], out: &mut Vec<Frame>) {
        let values = &values[..values.len().min(self.channels)];
        self.stats.readings += values.len() as u64;
        let finite = values.iter().filter(|v| v.is_finite()).count() as u64;
        self.stats.non_finite += values.len() as u64 - finite;
        if finite == 0 {
            return;
        }
        if self.is_late(ts) {
            self.stats.late += finite;
            return;
        }
        let tick = self.ceil_idx(ts);
        self.prepare_insert(ts, tick, out);
        for (c, &v) in values.iter().enumerate() {
            if v.is_finite() {
                self.insert(c, ts, v, tick);
            }
        }
        self.close_through(self.close_target(), out);
    }

    /// Closes every frame whose `tick + allowed_lateness <= watermark_ts`,
    /// for a watermark from a clock (receive time) rather than from the data:
    /// frames keep coming, with imputed values, while channels are silent,
    /// until the silence becomes a gap.
    pub fn advance_to(&mut self, watermark_ts: i64, out: &mut Vec<Frame>) {
        let target = self.floor_idx(watermark_ts.saturating_sub(self.cfg.allowed_lateness_ns));
        self.close_through(target, out);
    }

    /// End of input: closes every pending frame up to the tick of the newest
    /// reading.
    pub fn flush(&mut self, out: &mut Vec<Frame>) {
        if let Some(max) = self.max_ts {
            self.close_through(self.floor_idx(max), out);
        }
    }

    /// Counters since creation.
    pub fn stats(&self) -> &AlignStats {
        &self.stats
    }

    /// Forgets every reading and pending frame, as if new, but keeps the
    /// counters (they feed monotonic metrics).
    pub fn reset(&mut self) {
        while let Some(b) = self.pending.pop_front() {
            self.recycle(b);
        }
        self.carry.fill(None);
        self.channel_max.fill(None);
        self.max_ts = None;
        self.closed = None;
        self.last_emitted = None;
        self.gap_open = false;
    }

    /// Number of ticks buffered (for tests of the memory bound).
    #[cfg(test)]
    fn pending_ticks(&self) -> usize {
        self.pending.len()
    }

    fn floor_idx(&self, ts: i64) -> i64 {
        ts.div_euclid(self.cfg.period_ns)
    }

    /// Index of the first tick a reading at `ts` can appear in.
    fn ceil_idx(&self, ts: i64) -> i64 {
        self.floor_idx(ts) + i64::from(ts.rem_euclid(self.cfg.period_ns) != 0)
    }

    fn tick_ns(&self, idx: i64) -> i64 {
        idx.saturating_mul(self.cfg.period_ns)
    }

    fn max_gap(&self) -> i64 {
        i64::try_from(self.cfg.max_gap_frames).unwrap_or(i64::MAX)
    }

    fn is_late(&self, ts: i64) -> bool {
        self.last_emitted.is_some_and(|k| ts <= self.tick_ns(k))
    }

    /// Before a reading for tick index `tick` is stored: starts the grid at
    /// the first reading, turns a long jump forward into a gap, and closes
    /// the ticks the new watermark passes that the reading cannot change.
    fn prepare_insert(&mut self, ts: i64, tick: i64, out: &mut Vec<Frame>) {
        match (self.closed, self.max_ts) {
            (None, _) => self.closed = Some(tick.saturating_sub(1)),
            (Some(_), Some(prev_max)) => {
                let prev_idx = self.floor_idx(prev_max);
                if self.floor_idx(ts).saturating_sub(prev_idx) > self.max_gap() {
                    // Emit what the data before the silence supports, then
                    // skip the silence instead of filling it with old values.
                    self.close_through(prev_idx, out);
                    self.skip_to(tick.saturating_sub(1));
                }
            }
            (Some(_), None) => {}
        }
        if self.max_ts.is_none_or(|m| ts > m) {
            self.max_ts = Some(ts);
        }
        let target = self.close_target().min(tick.saturating_sub(1));
        self.close_through(target, out);
    }

    /// Stores an accepted reading (its tick is not emitted).
    fn insert(&mut self, channel: usize, ts: i64, value: f64, tick: i64) {
        if self.channel_max[channel].is_none_or(|m| ts > m) {
            self.channel_max[channel] = Some(ts);
        }
        let Some(closed) = self.closed else { return };
        let slot_new = Slot { ts, value };
        if tick <= closed {
            // Its tick was closed without being emitted (warm-up or gap):
            // it can still be the last known value for the frames to come.
            let carry = &mut self.carry[channel];
            if carry.is_none_or(|s| ts >= s.ts) {
                *carry = Some(slot_new);
            }
            return;
        }
        // Bounded: the caller closed everything up to the watermark, so this
        // is at most allowed_lateness / period + 1.
        let Some(offset) = tick
            .checked_sub(closed)
            .and_then(|d| usize::try_from(d - 1).ok())
        else {
            return;
        };
        while self.pending.len() <= offset {
            let bucket = self
                .spare
                .pop()
                .unwrap_or_else(|| vec![None; self.channels]);
            self.pending.push_back(bucket);
        }
        let slot = &mut self.pending[offset][channel];
        if slot.is_none_or(|s| ts >= s.ts) {
            *slot = Some(slot_new);
        }
    }

    /// Index of the last tick that may be closed now: the larger of the
    /// watermark's tick and the last tick every channel has passed.
    fn close_target(&self) -> i64 {
        let mut target = i64::MIN;
        if let Some(max) = self.max_ts {
            target = self.floor_idx(max.saturating_sub(self.cfg.allowed_lateness_ns));
        }
        let mut min_passed: Option<i64> = None;
        for m in &self.channel_max {
            match m {
                None => return target,
                Some(m) => min_passed = Some(min_passed.map_or(*m, |p: i64| p.min(*m))),
            }
        }
        if let Some(m) = min_passed {
            // The last tick at or before every channel's newest reading: its
            // values are known, as each channel's readings come in order.
            target = target.max(self.floor_idx(m));
        }
        target
    }

    /// Closes ticks up to index `target`, in order.
    fn close_through(&mut self, target: i64, out: &mut Vec<Frame>) {
        let Some(mut closed) = self.closed else {
            return;
        };
        while closed < target {
            let k = closed + 1;
            if let Some(bucket) = self.pending.pop_front() {
                self.close_tick(k, Some(bucket), out);
                closed = k;
                self.closed = Some(k);
                continue;
            }
            // Nothing buffered ahead: frames only repeat the last values,
            // until the silence becomes a gap; skip the rest in one step.
            let Some(newest) = self.newest_carry() else {
                self.closed = Some(target);
                return;
            };
            let last_bridged = self.floor_idx(newest).saturating_add(self.max_gap());
            if k > last_bridged {
                self.skip_to(target);
                return;
            }
            let until = target.min(last_bridged);
            for idx in k..=until {
                self.close_tick(idx, None, out);
            }
            closed = until;
            self.closed = Some(until);
        }
    }

    /// Closes tick `k` without emitting anything in between: buffered
    /// readings up to it only update the last values. Counts a gap.
    fn skip_to(&mut self, target: i64) {
        let Some(closed) = self.closed else { return };
        if target <= closed {
            return;
        }
        let mut k = closed;
        while k < target {
            let Some(bucket) = self.pending.pop_front() else {
                break;
            };
            self.merge(&bucket);
            self.recycle(bucket);
            k += 1;
        }
        self.closed = Some(target);
        self.open_gap();
    }

    fn open_gap(&mut self) {
        if !self.gap_open {
            self.gap_open = true;
            self.stats.gaps += 1;
        }
    }

    fn newest_carry(&self) -> Option<i64> {
        self.carry.iter().flatten().map(|s| s.ts).max()
    }

    fn merge(&mut self, bucket: &Bucket) {
        for (carry, slot) in self.carry.iter_mut().zip(bucket) {
            if let Some(s) = slot
                && carry.is_none_or(|c| s.ts >= c.ts)
            {
                *carry = Some(*s);
            }
        }
    }

    fn recycle(&mut self, mut bucket: Bucket) {
        bucket.fill(None);
        self.spare.push(bucket);
    }

    /// Decides tick `k`: gap, warm-up, or an emitted frame.
    fn close_tick(&mut self, k: i64, bucket: Option<Bucket>, out: &mut Vec<Frame>) {
        if let Some(bucket) = bucket {
            self.merge(&bucket);
            self.recycle(bucket);
        }
        let Some(newest) = self.newest_carry() else {
            return;
        };
        if k > self.floor_idx(newest).saturating_add(self.max_gap()) {
            self.open_gap();
            return;
        }
        if self.carry.iter().any(Option::is_none) {
            self.stats.warmup_frames += 1;
            return;
        }
        let tick = self.tick_ns(k);
        let mut values = Vec::with_capacity(self.channels);
        let mut imputed = Vec::with_capacity(self.channels);
        for s in self.carry.iter().flatten() {
            let stale = tick.saturating_sub(s.ts) > self.cfg.max_age_ns;
            values.push(s.value as f32);
            imputed.push(stale);
        }
        let n_imputed = imputed.iter().filter(|&&i| i).count() as u64;
        out.push(Frame {
            ts: tick,
            values,
            imputed,
            gap_before: self.gap_open && self.last_emitted.is_some(),
        });
        self.gap_open = false;
        self.last_emitted = Some(k);
        self.stats.frames += 1;
        self.stats.imputed_values += n_imputed;
    }
}

#[cfg(test)]
mod tests;
