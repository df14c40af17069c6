//! The alert message every output sends (docs/alerts.md §4): one JSON
//! document per transition of an anomaly or data-quality alarm, carrying
//! what an HMI or an on-call person needs, and the asset's alarms active
//! after it, so the last message per asset is its current state.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::core::timestamp::{format_rfc3339, now_ns};
use crate::pipeline::Output;

/// A channel and its reconstruction error, largest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelError {
    pub channel: String,
    pub error: f32,
}

/// The JSON an output sends for one alarm transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertMessage {
    pub asset: String,
    pub model: String,
    /// `anomaly`, `stale`, `stuck` or `out_of_range`.
    pub alarm: String,
    /// `raised` or `cleared`.
    pub state: String,
    /// The channel a data-quality alarm is about; absent for the asset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// When the transition happened (RFC 3339 and ns since the epoch).
    pub time: String,
    pub time_ns: i64,
    /// When the episode began.
    pub episode_start: String,
    pub episode_start_ns: i64,
    pub duration_s: f64,
    /// Anomaly alarms: the score of the window that caused the
    /// transition, the episode's peak, the threshold and the anomaly
    /// probability of that score under the model's error distribution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_channels: Vec<ChannelError>,
    /// `stuck`, `out_of_range`: the channel's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The asset's alarms active after this transition (`anomaly`,
    /// `stale`, `stale:<channel>`, `stuck:<channel>`,
    /// `out_of_range:<channel>`); empty = all clear.
    pub active: Vec<String>,
    /// Wall-clock time the daemon decided the transition (ns).
    pub decided_ns: i64,
}

fn finite32(v: f32) -> Option<f32> {
    v.is_finite().then_some(v)
}

/// The alarms active per asset, each with the start of its episode (ns),
/// kept by the scoring thread so every message can say which remain, and
/// saved so a restart can pick them up (docs/alerts.md §5).
#[derive(Debug, Default)]
pub struct ActiveAlarms {
    active: HashMap<Arc<str>, BTreeMap<String, i64>>,
}

impl ActiveAlarms {
    /// The state saved by [`ActiveAlarms::to_json`].
    ///
    /// # Errors
    /// The text is not such a document.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        let m: HashMap<String, BTreeMap<String, i64>> = serde_json::from_str(text)?;
        Ok(Self {
            active: m.into_iter().map(|(k, v)| (Arc::from(k), v)).collect(),
        })
    }

    /// `{asset: {alarm key: episode start ns}}`, assets without an active
    /// alarm left out.
    pub fn to_json(&self) -> String {
        let m: BTreeMap<&str, &BTreeMap<String, i64>> = self
            .active
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (&**k, v))
            .collect();
        serde_json::to_string(&m).unwrap_or_default()
    }

    /// Marks `asset` in an anomaly alert that began at `start_ns`
    /// (restored after a restart).
    pub fn restore_anomaly(&mut self, asset: &str, start_ns: i64) {
        self.active
            .entry(Arc::from(asset))
            .or_default()
            .insert("anomaly".to_string(), start_ns);
    }

    /// The data-quality alarms active now: (asset, alarm key such as
    /// `stale` or `stuck:<channel>`, episode start ns).
    pub fn quality(&self) -> Vec<(String, String, i64)> {
        let mut v: Vec<_> = self
            .active
            .iter()
            .flat_map(|(a, m)| {
                m.iter()
                    .filter(|(k, _)| k.as_str() != "anomaly")
                    .map(move |(k, s)| (a.to_string(), k.clone(), *s))
            })
            .collect();
        v.sort();
        v
    }

    /// The messages for the alarm transitions in `outputs`, in order.
    pub fn messages(&mut self, outputs: &[Output]) -> Vec<AlertMessage> {
        let mut probability: HashMap<&str, f64> = HashMap::new();
        let mut msgs = Vec::new();
        let decided_ns = now_ns();
        for o in outputs {
            let (binding, mut m, key) = match o {
                Output::Score(r) => {
                    // The score record of a window precedes its alert.
                    probability.insert(&r.binding.asset, r.probability);
                    continue;
                }
                Output::Barrier(_) | Output::Frame(_) => continue,
                Output::Alert { binding, event } => {
                    let m = AlertMessage {
                        asset: binding.asset.to_string(),
                        model: binding.model.to_string(),
                        alarm: "anomaly".into(),
                        state: event.kind.as_str().into(),
                        channel: None,
                        time: format_rfc3339(event.ts),
                        time_ns: event.ts,
                        episode_start: format_rfc3339(event.start_ts),
                        episode_start_ns: event.start_ts,
                        duration_s: event.duration_s(),
                        score: finite32(event.score),
                        peak: finite32(event.peak),
                        threshold: finite32(event.threshold),
                        probability: probability
                            .get(&*binding.asset)
                            .copied()
                            .filter(|p| p.is_finite()),
                        top_channels: event
                            .top_channels
                            .iter()
                            .map(|(c, e)| ChannelError {
                                channel: c.clone(),
                                error: *e,
                            })
                            .collect(),
                        value: None,
                        active: Vec::new(),
                        decided_ns,
                    };
                    (binding, m, "anomaly".to_string())
                }
                Output::Quality(q) => {
                    let e = &q.event;
                    let alarm = e.kind.as_str();
                    let key = match &e.channel {
                        Some(c) => format!("{alarm}:{c}"),
                        None => alarm.to_string(),
                    };
                    let m = AlertMessage {
                        asset: q.binding.asset.to_string(),
                        model: q.binding.model.to_string(),
                        alarm: alarm.into(),
                        state: e.state.as_str().into(),
                        channel: e.channel.clone(),
                        time: format_rfc3339(e.ts),
                        time_ns: e.ts,
                        episode_start: format_rfc3339(e.start_ts),
                        episode_start_ns: e.start_ts,
                        duration_s: e.duration_s(),
                        score: None,
                        peak: None,
                        threshold: None,
                        probability: None,
                        top_channels: Vec::new(),
                        value: e.value.filter(|v| v.is_finite()),
                        active: Vec::new(),
                        decided_ns,
                    };
                    (&q.binding, m, key)
                }
            };
            let set = self.active.entry(binding.asset.clone()).or_default();
            if m.state == "raised" {
                set.insert(key, m.episode_start_ns);
            } else {
                set.remove(&key);
            }
            m.active = set.keys().cloned().collect();
            msgs.push(m);
        }
        msgs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::detect::{AlertEvent, AlertKind, DetectorSettings};
    use crate::core::quality::{QualityEvent, QualityKind};
    use crate::pipeline::{AssetBinding, QualityRecord, ScoreRecord};

    fn binding() -> Arc<AssetBinding> {
        Arc::new(AssetBinding {
            asset: "pump-1".into(),
            model: "pump".into(),
            detector: DetectorSettings {
                threshold: 1.0,
                raise_after: 1,
                clear_after: 1,
                clear_ratio: 0.8,
                adapt: Default::default(),
            },
            channels: vec!["flow".to_string()].into(),
        })
    }

    #[test]
    fn messages_carry_the_alert_and_the_assets_active_alarms() {
        let b = binding();
        let outputs = vec![
            Output::Score(ScoreRecord {
                binding: b.clone(),
                ts: 2_000_000_000,
                score: 3.0,
                threshold: 1.0,
                anomalous: true,
                probability: 0.999,
                channel_error: vec![2.5],
            }),
            Output::Alert {
                binding: b.clone(),
                event: AlertEvent {
                    kind: AlertKind::Raised,
                    start_ts: 1_000_000_000,
                    ts: 2_000_000_000,
                    score: 3.0,
                    peak: 3.0,
                    threshold: 1.0,
                    top_channels: vec![("flow".into(), 2.5)],
                },
            },
            Output::Quality(QualityRecord {
                binding: b.clone(),
                event: QualityEvent {
                    kind: QualityKind::Stale,
                    state: AlertKind::Raised,
                    channel: Some("flow".into()),
                    start_ts: 0,
                    ts: 10_000_000_000,
                    value: None,
                },
            }),
        ];
        let mut active = ActiveAlarms::default();
        let msgs = active.messages(&outputs);
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].alarm, "anomaly");
        assert_eq!(msgs[0].probability, Some(0.999));
        assert_eq!(msgs[0].duration_s, 1.0);
        assert_eq!(msgs[0].time, "1970-01-01T00:00:02Z");
        assert_eq!(msgs[0].active, ["anomaly"]);
        assert_eq!(msgs[1].active, ["anomaly", "stale:flow"]);
        let json = serde_json::to_string(&msgs[1]).unwrap();
        let back: AlertMessage = serde_json::from_str(&json).unwrap();
        assert_eq!(back, msgs[1]);
        assert!(!json.contains("score"), "{json}");
        // Saved and loaded again (a restart): the stale alarm is known.
        let again = ActiveAlarms::from_json(&active.to_json()).unwrap();
        assert_eq!(again.quality(), [("pump-1".into(), "stale:flow".into(), 0)]);
    }
}
