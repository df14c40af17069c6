//! What `anomalyd tap` saw, and the report it prints: per asset, the
//! channels seen with their rates and value ranges, the bound model, and
//! what that model is missing or does not know (docs/alerts.md §7).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::core::reading::Message;

/// One channel's readings.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelSeen {
    pub count: u64,
    pub min: f64,
    pub max: f64,
}

/// Everything the tap saw.
#[derive(Debug, Default)]
pub struct TapLog {
    pub assets: BTreeMap<String, BTreeMap<String, ChannelSeen>>,
    pub messages: u64,
    /// Messages on a subscribed topic that no mapping decodes, or whose
    /// payload does not parse: (reason, example).
    pub skipped: BTreeMap<String, (u64, String)>,
}

impl TapLog {
    /// Records one decoded message.
    pub fn add(&mut self, msg: &Message) {
        self.messages += 1;
        let channels = self.assets.entry(msg.asset.clone()).or_default();
        for (name, v) in &msg.values {
            let c = channels.entry(name.clone()).or_insert(ChannelSeen {
                count: 0,
                min: f64::INFINITY,
                max: f64::NEG_INFINITY,
            });
            c.count += 1;
            if v.is_finite() {
                c.min = c.min.min(*v);
                c.max = c.max.max(*v);
            }
        }
    }

    /// Records a message that could not be used.
    pub fn skip(&mut self, reason: &str, example: String) {
        self.messages += 1;
        let e = self
            .skipped
            .entry(reason.to_string())
            .or_insert((0, example));
        e.0 += 1;
    }
}

/// A bound model as the report needs it.
#[derive(Debug, Clone)]
pub struct ModelView {
    pub name: String,
    pub channels: Vec<String>,
    pub sample_period_ms: u64,
}

/// The report for `seconds` of listening; `model_for(asset)` is the model
/// bound to an asset, if any.
pub fn render<'a>(
    log: &TapLog,
    seconds: f64,
    model_for: impl Fn(&str) -> Option<&'a ModelView>,
) -> String {
    let mut s = String::new();
    let secs = seconds.max(1e-9);
    let _ = writeln!(
        s,
        "{} message(s) in {seconds:.0} s, {} asset(s)",
        log.messages,
        log.assets.len()
    );
    for (asset, channels) in &log.assets {
        let _ = writeln!(s, "\nasset {asset}");
        let model = model_for(asset);
        match model {
            Some(m) => {
                let _ = writeln!(
                    s,
                    "  model {} ({} channels, one sample every {} ms = {:.2}/s)",
                    m.name,
                    m.channels.len(),
                    m.sample_period_ms,
                    1000.0 / m.sample_period_ms.max(1) as f64
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "  NO MODEL BOUND: no [[assets]] rule matches and there is no default_model; its readings are dropped"
                );
            }
        }
        let _ = writeln!(
            s,
            "  {:<24} {:>8} {:>8} {:>14} {:>14}",
            "channel", "readings", "rate/s", "min", "max"
        );
        for (name, c) in channels {
            let known = model.is_none_or(|m| m.channels.contains(name));
            let _ = writeln!(
                s,
                "  {:<24} {:>8} {:>8.2} {:>14} {:>14}{}",
                name,
                c.count,
                c.count as f64 / secs,
                fmt_num(c.min),
                fmt_num(c.max),
                if known {
                    ""
                } else {
                    "  <- unknown to the model"
                }
            );
        }
        if let Some(m) = model {
            let missing: Vec<&str> = m
                .channels
                .iter()
                .filter(|c| !channels.contains_key(*c))
                .map(String::as_str)
                .collect();
            let unknown: Vec<&str> = channels
                .keys()
                .filter(|c| !m.channels.contains(c))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                let _ = writeln!(
                    s,
                    "  MISSING: the model needs {missing:?}, not seen: no window can be scored"
                );
            }
            if !unknown.is_empty() {
                let _ = writeln!(
                    s,
                    "  UNKNOWN: {unknown:?} are not channels of the model and are dropped (unknown_channel)"
                );
            }
            if missing.is_empty() && unknown.is_empty() {
                let _ = writeln!(s, "  ok: every channel of the model is seen");
            }
        }
    }
    for (reason, (n, example)) in &log.skipped {
        let _ = writeln!(s, "\n{n} message(s) skipped ({reason}), e.g. {example}");
    }
    s
}

fn fmt_num(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.4}")
    } else {
        "-".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_missing_and_unknown_channels_and_unbound_assets() {
        let mut log = TapLog::default();
        for v in [1.0, 3.0] {
            log.add(&Message {
                asset: "pump-1".into(),
                ts: None,
                values: vec![("flow".into(), v), ("Temp".into(), 20.0)],
                non_finite: 0,
            });
        }
        log.add(&Message {
            asset: "fan-1".into(),
            ts: None,
            values: vec![("rpm".into(), 900.0)],
            non_finite: 0,
        });
        log.skip("unknown_topic", "\"x/y\"".into());
        let pump = ModelView {
            name: "pump".into(),
            channels: vec!["flow".into(), "temp".into()],
            sample_period_ms: 1000,
        };
        let text = render(&log, 2.0, |a| a.starts_with("pump").then_some(&pump));
        assert!(text.contains("4 message(s) in 2 s, 2 asset(s)"), "{text}");
        assert!(
            text.contains("MISSING: the model needs [\"temp\"]"),
            "{text}"
        );
        assert!(text.contains("UNKNOWN: [\"Temp\"]"), "{text}");
        assert!(text.contains("asset fan-1\n  NO MODEL BOUND"), "{text}");
        assert!(text.contains("flow"), "{text}");
        assert!(text.contains("1.0000         3.0000"), "{text}");
        assert!(
            text.contains("1 message(s) skipped (unknown_topic)"),
            "{text}"
        );
    }
}
