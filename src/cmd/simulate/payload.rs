//! Rows into MQTT messages: asset names, topics rendered from the template
//! and JSON or bare payloads. Pure, so benchmarks time it without a broker.

use super::{ChannelPayload, Layout, SimulateError, invalid};

/// The name of asset `index` (0-based): `pump-001` for prefix `pump-`.
pub fn asset_name(prefix: &str, index: usize) -> String {
    format!("{prefix}{:03}", index + 1)
}

/// Turns rows into `(topic, payload)` messages; topics and JSON keys are
/// rendered once up front.
#[derive(Debug, Clone)]
pub struct MessageFormatter {
    layout: Layout,
    /// JsonFrame: one topic per asset. PerChannel: `assets x channels`.
    topics: Vec<String>,
    /// Channel names as JSON string literals (quoted and escaped).
    json_keys: Vec<String>,
}

impl MessageFormatter {
    /// # Errors
    /// [`SimulateError::InvalidOption`] when the template lacks a placeholder
    /// the layout needs, or renders a topic MQTT cannot publish to (empty,
    /// `+`/`#`, or a channel or asset name containing `/`).
    pub fn new(
        template: &str,
        layout: Layout,
        assets: &[String],
        channels: &[String],
    ) -> Result<Self, SimulateError> {
        const OPT: &str = "topic template";
        if assets.len() > 1 && !template.contains("{asset}") {
            return Err(invalid(
                OPT,
                format!(
                    "{template:?} needs {{asset}} to tell {} assets apart",
                    assets.len()
                ),
            ));
        }
        let per_channel = matches!(layout, Layout::PerChannel(_));
        if per_channel != template.contains("{channel}") {
            return Err(invalid(
                OPT,
                if per_channel {
                    format!("{template:?} needs {{channel}} for one message per channel")
                } else {
                    format!("{template:?} has {{channel}} but one JSON object per row is sent")
                },
            ));
        }
        for name in assets
            .iter()
            .chain(per_channel.then_some(channels).into_iter().flatten())
        {
            if name.contains(['/', '+', '#', '\0']) {
                return Err(invalid(
                    OPT,
                    format!("name {name:?} cannot be part of a topic (contains / + # or NUL)"),
                ));
            }
        }
        let mut topics = Vec::new();
        for asset in assets {
            let t = template.replace("{asset}", asset);
            if per_channel {
                topics.extend(channels.iter().map(|c| t.replace("{channel}", c)));
            } else {
                topics.push(t);
            }
        }
        if let Some(bad) = topics
            .iter()
            .find(|t| t.is_empty() || t.contains(['+', '#', '\0']) || t.len() > 65535)
        {
            return Err(invalid(OPT, format!("renders the invalid topic {bad:?}")));
        }
        let json_keys = channels
            .iter()
            .map(|c| serde_json::to_string(c).unwrap_or_else(|_| format!("\"{c}\"")))
            .collect();
        Ok(Self {
            layout,
            topics,
            json_keys,
        })
    }

    /// Appends the messages of one row of asset `asset` (index) to `out`;
    /// returns the number of readings (finite values) they carry.
    pub fn format_row(
        &self,
        asset: usize,
        ts_ms: i64,
        values: &[f64],
        out: &mut Vec<(String, String)>,
    ) -> usize {
        let mut readings = 0;
        match self.layout {
            Layout::JsonFrame => {
                let mut payload = String::with_capacity(16 + values.len() * 24);
                payload.push_str("{\"ts\":");
                payload.push_str(&ts_ms.to_string());
                for (key, v) in self.json_keys.iter().zip(values) {
                    if v.is_finite() {
                        payload.push(',');
                        payload.push_str(key);
                        payload.push(':');
                        payload.push_str(&v.to_string());
                        readings += 1;
                    }
                }
                payload.push('}');
                out.push((self.topics[asset].clone(), payload));
            }
            Layout::PerChannel(kind) => {
                let topics = &self.topics[asset * self.json_keys.len()..];
                for (topic, v) in topics.iter().zip(values) {
                    if !v.is_finite() {
                        continue;
                    }
                    let payload = match kind {
                        ChannelPayload::Bare => v.to_string(),
                        ChannelPayload::Json => format!("{{\"value\":{v},\"ts\":{ts_ms}}}"),
                    };
                    out.push((topic.clone(), payload));
                    readings += 1;
                }
            }
        }
        readings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn json_frame_topic_and_payload() {
        let f = MessageFormatter::new(
            "plant/{asset}",
            Layout::JsonFrame,
            &names(&["pump-001", "pump-002"]),
            &names(&["current", "flow rate"]),
        )
        .unwrap();
        let mut out = Vec::new();
        let n = f.format_row(1, 1_700_000_000_000, &[2.5, 0.1], &mut out);
        assert_eq!(n, 2);
        assert_eq!(
            out,
            [(
                "plant/pump-002".to_string(),
                r#"{"ts":1700000000000,"current":2.5,"flow rate":0.1}"#.to_string()
            )]
        );
        let json: serde_json::Value = serde_json::from_str(&out[0].1).unwrap();
        assert_eq!(json["flow rate"], 0.1);
    }

    #[test]
    fn json_frame_leaves_out_missing_values_and_escapes_names() {
        let f = MessageFormatter::new(
            "s/{asset}",
            Layout::JsonFrame,
            &names(&["a"]),
            &names(&["x\"y", "gap", "z"]),
        )
        .unwrap();
        let mut out = Vec::new();
        let n = f.format_row(0, -5, &[1e-7, f64::NAN, 3.0], &mut out);
        assert_eq!(n, 2);
        // Shortest round-trip decimals, never NaN or exponent-free garbage.
        assert_eq!(out[0].1, r#"{"ts":-5,"x\"y":0.0000001,"z":3}"#);
        let json: serde_json::Value = serde_json::from_str(&out[0].1).unwrap();
        assert_eq!(json, serde_json::json!({"ts": -5, "x\"y": 1e-7, "z": 3}));
    }

    #[test]
    fn per_channel_topics_and_payloads() {
        let assets = names(&["p1", "p2"]);
        let channels = names(&["current", "pressure"]);
        let json = MessageFormatter::new(
            "plant/{asset}/{channel}",
            Layout::PerChannel(ChannelPayload::Json),
            &assets,
            &channels,
        )
        .unwrap();
        let mut out = Vec::new();
        assert_eq!(json.format_row(1, 42, &[1.5, f64::NAN], &mut out), 1);
        assert_eq!(
            out,
            [(
                "plant/p2/current".to_string(),
                r#"{"value":1.5,"ts":42}"#.to_string()
            )]
        );
        let bare = MessageFormatter::new(
            "{channel}/{asset}",
            Layout::PerChannel(ChannelPayload::Bare),
            &assets,
            &channels,
        )
        .unwrap();
        out.clear();
        bare.format_row(0, 42, &[1.0, -0.25], &mut out);
        assert_eq!(
            out,
            [
                ("current/p1".to_string(), "1".to_string()),
                ("pressure/p1".to_string(), "-0.25".to_string())
            ]
        );
    }

    #[test]
    fn templates_are_checked_against_the_layout() {
        let two = names(&["a", "b"]);
        let ch = names(&["c"]);
        let err = |t: &str, layout, assets: &[String], channels: &[String]| {
            MessageFormatter::new(t, layout, assets, channels)
                .unwrap_err()
                .to_string()
        };
        let per = Layout::PerChannel(ChannelPayload::Bare);
        assert!(err("s/x", Layout::JsonFrame, &two, &ch).contains("{asset}"));
        assert!(err("s/{asset}", per, &two, &ch).contains("{channel}"));
        assert!(err("s/{asset}/{channel}", Layout::JsonFrame, &two, &ch).contains("{channel}"));
        assert!(err("s/+/{asset}", Layout::JsonFrame, &two, &ch).contains("invalid topic"));
        assert!(err("s/{asset}/{channel}", per, &two, &names(&["a/b"])).contains("\"a/b\""));
        // One asset may use a fixed topic.
        MessageFormatter::new("s/only", Layout::JsonFrame, &names(&["a"]), &ch).unwrap();
    }

    #[test]
    fn asset_names_are_numbered_from_one() {
        assert_eq!(asset_name("pump-", 0), "pump-001");
        assert_eq!(asset_name("m", 1233), "m1234");
    }
}
