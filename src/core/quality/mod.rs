//! Data-quality alarms of one asset (docs/alerts.md §1): `stale` (an asset
//! or one channel silent for a while of wall-clock time), `stuck` (a
//! channel that keeps one value while it varied in training) and
//! `out_of_range` (a channel far outside its training range). Each is its
//! own raise/clear state per asset and channel; transitions come out as
//! [`QualityEvent`]s. No I/O: the caller passes the clock.

use crate::core::contract::NormaliserParams;
use crate::core::detect::AlertKind;

/// Which data-quality condition an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QualityKind {
    /// No reading from the asset (no channel named) or from one channel.
    Stale,
    /// A channel constant (within its tolerance) for too long.
    Stuck,
    /// A channel far outside the range seen in training.
    OutOfRange,
}

impl QualityKind {
    /// The alarm's name in outputs, metrics and InfluxDB tags.
    pub fn as_str(self) -> &'static str {
        match self {
            QualityKind::Stale => "stale",
            QualityKind::Stuck => "stuck",
            QualityKind::OutOfRange => "out_of_range",
        }
    }

    /// The alarm named `name` ([`QualityKind::as_str`]).
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Stale, Self::Stuck, Self::OutOfRange]
            .into_iter()
            .find(|k| k.as_str() == name)
    }
}

/// A raise or clear of one data-quality alarm.
#[derive(Debug, Clone, PartialEq)]
pub struct QualityEvent {
    pub kind: QualityKind,
    pub state: AlertKind,
    /// The channel concerned; `None` for the whole asset.
    pub channel: Option<String>,
    /// When the condition began (ns): for `stale` the receive time of the
    /// last reading, for `stuck` the event time the value stopped changing.
    pub start_ts: i64,
    /// When this transition was decided (ns): wall clock for `stale`, the
    /// reading's event time for `stuck`.
    pub ts: i64,
    /// The value a `stuck` channel holds (or the value that ended it).
    pub value: Option<f64>,
}

impl QualityEvent {
    /// Seconds from the start of the condition to this transition.
    pub fn duration_s(&self) -> f64 {
        (self.ts - self.start_ts) as f64 / 1e9
    }
}

/// Thresholds of one asset's data-quality alarms, in nanoseconds; 0 turns
/// an alarm off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QualitySettings {
    /// Silence (wall clock) after which `stale` is raised.
    pub stale_after_ns: i64,
    /// Time (event time) a value must hold before `stuck` is raised.
    pub stuck_after_ns: i64,
    /// Largest change that still counts as "the same value" (its
    /// quantisation step); 0 means exactly equal.
    pub stuck_tolerance: f64,
    /// How far outside the training range, as a fraction of that range's
    /// width, a value must be for `out_of_range`; 0 = off.
    pub out_of_range_margin: f64,
}

impl QualitySettings {
    /// Alarms off.
    pub const OFF: QualitySettings = QualitySettings {
        stale_after_ns: 0,
        stuck_after_ns: 0,
        stuck_tolerance: 0.0,
        out_of_range_margin: 0.0,
    };
}

/// The `stale` alarm of one asset and of each of its channels.
///
/// Silence is measured from the later of the last reading's receive time
/// and `since` (when the source last connected): a broker outage or a
/// restart is not the sensor's silence. An alarm clears only when a
/// reading arrives after it was raised, so a reconnect does not clear it.
/// While the whole asset is stale its channel alarms keep their state, so
/// one alarm names the asset instead of one per channel.
#[derive(Debug, Clone)]
pub struct StaleWatch {
    asset_recv: Option<i64>,
    channel_recv: Vec<Option<i64>>,
    /// Receive time of the asset's first reading.
    created: i64,
    /// Open alarms: (start, receive-time after which a reading clears it).
    asset_open: Option<(i64, i64)>,
    channel_open: Vec<Option<(i64, i64)>>,
}

impl StaleWatch {
    /// A watch over `channels` channels, created at `now` (ns).
    pub fn new(channels: usize, now: i64) -> Self {
        Self {
            asset_recv: None,
            channel_recv: vec![None; channels],
            created: now,
            asset_open: None,
            channel_open: vec![None; channels],
        }
    }

    /// Records a reading of `channel` received at `recv_ts`.
    pub fn seen(&mut self, channel: usize, recv_ts: i64) {
        if self.asset_recv.is_none_or(|t| recv_ts > t) {
            self.asset_recv = Some(recv_ts);
        }
        if let Some(c) = self.channel_recv.get_mut(channel)
            && c.is_none_or(|t| recv_ts > t)
        {
            *c = Some(recv_ts);
        }
    }

    /// How long the asset has been silent at `now`, counted from `since`
    /// at the earliest.
    pub fn silent_for(&self, now: i64, since: i64) -> i64 {
        now - self.asset_recv.unwrap_or(self.created).max(since)
    }

    /// Whether the asset-level alarm is raised.
    pub fn is_stale(&self) -> bool {
        self.asset_open.is_some()
    }

    /// Marks the asset (`None`) or a channel stale since `start`, the
    /// receive time of its last reading (an alarm open before a restart),
    /// so a reading received after that clears it.
    pub fn restore(&mut self, channel: Option<usize>, start: i64) {
        match channel {
            None => self.asset_open = Some((start, start)),
            Some(c) => {
                if let Some(o) = self.channel_open.get_mut(c) {
                    *o = Some((start, start));
                }
            }
        }
    }

    /// Raises or clears alarms for the silence at `now`; `names` are the
    /// channel names in order.
    pub fn check(
        &mut self,
        now: i64,
        since: i64,
        after_ns: i64,
        names: &[String],
        out: &mut Vec<QualityEvent>,
    ) {
        if after_ns <= 0 {
            return;
        }
        let created = self.created;
        let silent = |t: Option<i64>| now - t.unwrap_or(created).max(since) >= after_ns;
        let event = |state, channel: Option<&String>, start_ts| QualityEvent {
            kind: QualityKind::Stale,
            state,
            channel: channel.cloned(),
            start_ts,
            ts: now,
            value: None,
        };
        // A reading received after the raise ends the alarm.
        let heard = |t: Option<i64>, raised: i64| t.is_some_and(|t| t > raised);
        match self.asset_open {
            Some((start, raised)) if heard(self.asset_recv, raised) => {
                self.asset_open = None;
                out.push(event(AlertKind::Cleared, None, start));
            }
            Some(_) => return,
            None if silent(self.asset_recv) => {
                let start = self.asset_recv.unwrap_or(created);
                self.asset_open = Some((start, now));
                out.push(event(AlertKind::Raised, None, start));
                return;
            }
            None => {}
        }
        for (c, name) in names.iter().enumerate().take(self.channel_recv.len()) {
            let recv = self.channel_recv[c];
            match self.channel_open[c] {
                Some((start, raised)) if heard(recv, raised) => {
                    self.channel_open[c] = None;
                    out.push(event(AlertKind::Cleared, Some(name), start));
                }
                None if silent(recv) => {
                    let start = recv.unwrap_or(created);
                    self.channel_open[c] = Some((start, now));
                    out.push(event(AlertKind::Raised, Some(name), start));
                }
                _ => {}
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Run {
    value: f64,
    start_ts: i64,
}

/// The `stuck` alarm of each channel: raised once a channel's readings
/// have stayed within `tolerance` of one value for `after_ns` of event
/// time, only for channels that varied in the training data; cleared by
/// the first reading that differs.
#[derive(Debug, Clone)]
pub struct StuckWatch {
    varied: Vec<bool>,
    runs: Vec<Option<Run>>,
    open: Vec<bool>,
    /// Start of an alarm restored after a restart, until the first reading.
    restored: Vec<Option<i64>>,
}

impl StuckWatch {
    /// `varied[c]`: channel `c` was not constant in the training data.
    pub fn new(varied: Vec<bool>) -> Self {
        let n = varied.len();
        Self {
            varied,
            runs: vec![None; n],
            open: vec![false; n],
            restored: vec![None; n],
        }
    }

    /// Marks `channel` stuck since `start` (an alarm open before a
    /// restart): the first value that differs from the next reading clears
    /// it.
    pub fn restore(&mut self, channel: usize, start: i64) {
        if let (Some(o), Some(r)) = (self.open.get_mut(channel), self.restored.get_mut(channel)) {
            *o = true;
            *r = Some(start);
        }
    }

    /// Feeds one reading of `channel` (event time `ts`).
    pub fn push(
        &mut self,
        channel: usize,
        ts: i64,
        value: f64,
        settings: &QualitySettings,
        name: &str,
        out: &mut Vec<QualityEvent>,
    ) {
        if settings.stuck_after_ns <= 0 || !value.is_finite() {
            return;
        }
        let (Some(run), Some(open), Some(&varied), Some(restored)) = (
            self.runs.get_mut(channel),
            self.open.get_mut(channel),
            self.varied.get(channel),
            self.restored.get_mut(channel),
        ) else {
            return;
        };
        let event = |state, start_ts| QualityEvent {
            kind: QualityKind::Stuck,
            state,
            channel: Some(name.to_string()),
            start_ts,
            ts,
            value: Some(value),
        };
        match run {
            Some(r) if (value - r.value).abs() <= settings.stuck_tolerance => {
                if !*open && varied && ts - r.start_ts >= settings.stuck_after_ns {
                    *open = true;
                    out.push(event(AlertKind::Raised, r.start_ts));
                }
            }
            Some(r) if ts < r.start_ts => {} // an older reading changes nothing
            _ => {
                if let Some(r) = run.as_ref()
                    && *open
                {
                    *open = false;
                    out.push(event(AlertKind::Cleared, r.start_ts));
                }
                // A restored alarm's run starts with the first reading.
                let start_ts = match (run.is_none() && *open, restored.take()) {
                    (true, Some(s)) => s,
                    _ => ts,
                };
                *run = Some(Run { value, start_ts });
            }
        }
    }
}

/// Consecutive readings outside (or back inside) the allowed range that
/// raise (or clear) `out_of_range`: one wild reading is not an alarm.
pub const RANGE_CONFIRM: u32 = 3;

/// The `out_of_range` alarm of each channel.
///
/// The allowed range is the training range (`normaliser.min`/`max`)
/// widened by `margin` times its width on both sides. A model file without
/// a recorded range falls back to mean ± 4 standard deviations as the
/// training range. Channels constant in training have no range.
#[derive(Debug, Clone)]
pub struct RangeWatch {
    bounds: Vec<Option<(f64, f64)>>,
    /// Consecutive readings on the other side of the current state.
    runs: Vec<u32>,
    /// Event time of the first out-of-range reading of the open alarm.
    open: Vec<Option<i64>>,
    first_out: Vec<i64>,
}

impl RangeWatch {
    /// Bounds from the model's normaliser for `names`; `margin <= 0` turns
    /// the alarm off.
    pub fn new(n: &NormaliserParams, names: &[String], margin: f64) -> Self {
        let recorded = n.min.len() == names.len() && n.max.len() == names.len();
        let bounds = names
            .iter()
            .enumerate()
            .map(|(c, name)| {
                if margin <= 0.0 || !margin.is_finite() || n.constant_channels.contains(name) {
                    return None;
                }
                let (mean, sd) = (f64::from(*n.mean.get(c)?), f64::from(*n.std.get(c)?));
                let (lo, hi) = if recorded {
                    (f64::from(n.min[c]), f64::from(n.max[c]))
                } else {
                    (mean - 4.0 * sd, mean + 4.0 * sd)
                };
                let width = (hi - lo).max(sd);
                (width.is_finite() && width > 0.0)
                    .then_some((lo - margin * width, hi + margin * width))
            })
            .collect::<Vec<_>>();
        let k = bounds.len();
        Self {
            bounds,
            runs: vec![0; k],
            open: vec![None; k],
            first_out: vec![0; k],
        }
    }

    /// Marks `channel` out of range since `start` (an alarm open before a
    /// restart).
    pub fn restore(&mut self, channel: usize, start: i64) {
        if let Some(o) = self.open.get_mut(channel) {
            *o = Some(start);
        }
    }

    /// Feeds one reading of `channel` (event time `ts`).
    pub fn push(
        &mut self,
        channel: usize,
        ts: i64,
        value: f64,
        name: &str,
        out: &mut Vec<QualityEvent>,
    ) {
        let Some(Some((lo, hi))) = self.bounds.get(channel).copied() else {
            return;
        };
        if !value.is_finite() {
            return;
        }
        let outside = value < lo || value > hi;
        let is_open = self.open[channel].is_some();
        if outside == is_open {
            self.runs[channel] = 0;
            return;
        }
        if self.runs[channel] == 0 && outside {
            self.first_out[channel] = ts;
        }
        self.runs[channel] += 1;
        if self.runs[channel] < RANGE_CONFIRM {
            return;
        }
        self.runs[channel] = 0;
        let (state, start_ts) = if outside {
            let start = self.first_out[channel];
            self.open[channel] = Some(start);
            (AlertKind::Raised, start)
        } else {
            let start = self.open[channel].take().unwrap_or(ts);
            (AlertKind::Cleared, start)
        };
        out.push(QualityEvent {
            kind: QualityKind::OutOfRange,
            state,
            channel: Some(name.to_string()),
            start_ts,
            ts,
            value: Some(value),
        });
    }
}

#[cfg(test)]
mod tests;
