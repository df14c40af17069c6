//! MQTT topic mapping and payload decoding: topic + payload in, readings
//! (asset, channel, optional event time, value) out. Pure; no I/O.

use crate::config::PayloadKind;
use crate::timestamp::{epoch_to_nanos, parse_timestamp};

/// A topic filter with named segments, e.g. `plant/{asset}/{channel}`.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicPattern {
    segments: Vec<Segment>,
    payload: PayloadKind,
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Literal(String),
    Asset,
    Channel,
    /// `+`: any single segment, ignored.
    Any,
}

/// Why a topic filter is not usable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TopicError {
    #[error("filter {0:?} is empty")]
    Empty(String),
    #[error("filter {0:?} has no {{asset}} segment")]
    NoAsset(String),
    #[error(
        "filter {0:?} needs a {{channel}} segment for payload \"number\"/\"json\" (or use payload = \"json_object\")"
    )]
    NoChannel(String),
    #[error("filter {0:?} names {{{1}}} twice")]
    Twice(String, &'static str),
    #[error(
        "filter {0:?}: segment {1:?} is not allowed (use {{asset}}, {{channel}}, + or a literal; # is not supported)"
    )]
    BadSegment(String, String),
}

impl TopicPattern {
    /// Parses a filter for the given payload layout.
    ///
    /// # Errors
    /// Missing `{asset}`, a missing `{channel}` where the layout needs one,
    /// duplicates, wildcards inside a segment or `#`.
    pub fn parse(filter: &str, payload: PayloadKind) -> Result<Self, TopicError> {
        if filter.is_empty() {
            return Err(TopicError::Empty(filter.into()));
        }
        let mut segments = Vec::new();
        let (mut asset, mut channel) = (false, false);
        for seg in filter.split('/') {
            let s = match seg {
                "{asset}" if asset => return Err(TopicError::Twice(filter.into(), "asset")),
                "{asset}" => {
                    asset = true;
                    Segment::Asset
                }
                "{channel}" if channel => {
                    return Err(TopicError::Twice(filter.into(), "channel"));
                }
                "{channel}" => {
                    channel = true;
                    Segment::Channel
                }
                "+" => Segment::Any,
                s if s.contains(['{', '}', '+', '#']) => {
                    return Err(TopicError::BadSegment(filter.into(), s.into()));
                }
                s => Segment::Literal(s.into()),
            };
            segments.push(s);
        }
        if !asset {
            return Err(TopicError::NoAsset(filter.into()));
        }
        if !channel && payload != PayloadKind::JsonObject {
            return Err(TopicError::NoChannel(filter.into()));
        }
        Ok(Self { segments, payload })
    }

    /// The MQTT subscription filter (named segments become `+`).
    pub fn subscription(&self) -> String {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Literal(l) => l.as_str(),
                _ => "+",
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    pub fn payload(&self) -> PayloadKind {
        self.payload
    }

    /// `(asset, channel)` when `topic` matches.
    pub fn matches<'t>(&self, topic: &'t str) -> Option<(&'t str, Option<&'t str>)> {
        let mut asset = None;
        let mut channel = None;
        let mut parts = topic.split('/');
        for seg in &self.segments {
            let part = parts.next()?;
            match seg {
                Segment::Literal(l) if l != part => return None,
                Segment::Asset if part.is_empty() => return None,
                Segment::Asset => asset = Some(part),
                Segment::Channel if part.is_empty() => return None,
                Segment::Channel => channel = Some(part),
                _ => {}
            }
        }
        if parts.next().is_some() {
            return None;
        }
        asset.map(|a| (a, channel))
    }
}

/// Why a message yielded no (or fewer) readings. Each is counted by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    UnknownTopic,
    BadPayload,
    NonFinite,
    Oversize,
    UnknownAsset,
    UnknownChannel,
    Late,
    TooManyAssets,
    Overload,
    /// Event time too far ahead of the receive time (a sensor clock jump).
    Future,
}

impl DropReason {
    pub const ALL: [DropReason; 10] = [
        DropReason::UnknownTopic,
        DropReason::BadPayload,
        DropReason::NonFinite,
        DropReason::Oversize,
        DropReason::UnknownAsset,
        DropReason::UnknownChannel,
        DropReason::Late,
        DropReason::TooManyAssets,
        DropReason::Overload,
        DropReason::Future,
    ];

    /// Label value used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::UnknownTopic => "unknown_topic",
            DropReason::BadPayload => "bad_payload",
            DropReason::NonFinite => "non_finite",
            DropReason::Oversize => "oversize",
            DropReason::UnknownAsset => "unknown_asset",
            DropReason::UnknownChannel => "unknown_channel",
            DropReason::Late => "late",
            DropReason::TooManyAssets => "too_many_assets",
            DropReason::Overload => "overload",
            DropReason::Future => "future_timestamp",
        }
    }
}

/// A decoded message: one asset, an optional event time, one or more
/// channel values.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Message {
    pub asset: String,
    /// Event time in ns, when the payload carries one.
    pub ts: Option<i64>,
    pub values: Vec<(String, f64)>,
    /// Fields that were present but not usable (non-finite numbers), counted.
    pub non_finite: usize,
}

/// A message that could not be decoded at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("no topic mapping matches {0:?}")]
    UnknownTopic(String),
    #[error("topic {topic:?}: {message}")]
    BadPayload { topic: String, message: String },
    #[error("topic {topic:?}: value is not finite")]
    NonFinite { topic: String },
}

impl DecodeError {
    pub fn reason(&self) -> DropReason {
        match self {
            DecodeError::UnknownTopic(_) => DropReason::UnknownTopic,
            DecodeError::BadPayload { .. } => DropReason::BadPayload,
            DecodeError::NonFinite { .. } => DropReason::NonFinite,
        }
    }
}

/// One configured mapping: the pattern and where to find value and time.
#[derive(Debug, Clone)]
pub struct TopicMapping {
    pub pattern: TopicPattern,
    pub value_field: String,
    pub timestamp_field: String,
}

/// Decodes messages with the first mapping whose pattern matches.
#[derive(Debug, Clone, Default)]
pub struct Decoder {
    mappings: Vec<TopicMapping>,
}

impl Decoder {
    pub fn new(mappings: Vec<TopicMapping>) -> Self {
        Self { mappings }
    }

    /// Builds the decoder from the `[[topics]]` config.
    ///
    /// # Errors
    /// A filter that does not parse (config validation catches it first).
    pub fn from_config(topics: &[crate::config::TopicConfig]) -> Result<Self, TopicError> {
        let mut mappings = Vec::with_capacity(topics.len());
        for t in topics {
            mappings.push(TopicMapping {
                pattern: TopicPattern::parse(&t.filter, t.payload)?,
                value_field: t.value_field.clone(),
                timestamp_field: t.timestamp_field.clone(),
            });
        }
        Ok(Self { mappings })
    }

    /// MQTT subscription filters, deduplicated.
    pub fn subscriptions(&self) -> Vec<String> {
        let mut subs: Vec<String> = self
            .mappings
            .iter()
            .map(|m| m.pattern.subscription())
            .collect();
        subs.dedup();
        subs
    }

    /// Decodes one message.
    ///
    /// # Errors
    /// Unknown topic, unparsable payload, or a single non-finite value.
    pub fn decode(&self, topic: &str, payload: &[u8]) -> Result<Message, DecodeError> {
        let Some((m, (asset, channel))) = self
            .mappings
            .iter()
            .find_map(|m| m.pattern.matches(topic).map(|hit| (m, hit)))
        else {
            return Err(DecodeError::UnknownTopic(topic.into()));
        };
        let bad = |message: String| DecodeError::BadPayload {
            topic: topic.into(),
            message,
        };
        let text = std::str::from_utf8(payload).map_err(|_| bad("payload is not UTF-8".into()))?;
        let mut msg = Message {
            asset: asset.to_string(),
            ..Message::default()
        };
        match m.pattern.payload() {
            PayloadKind::Number => {
                let channel = channel.unwrap_or_default();
                let v: f64 = text
                    .trim()
                    .parse()
                    .map_err(|_| bad(format!("{:?} is not a number", truncate(text))))?;
                if !v.is_finite() {
                    return Err(DecodeError::NonFinite {
                        topic: topic.into(),
                    });
                }
                msg.values.push((channel.to_string(), v));
            }
            PayloadKind::Json => {
                let channel = channel.unwrap_or_default();
                let obj = parse_object(text).map_err(bad)?;
                msg.ts = read_ts(&obj, &m.timestamp_field).map_err(bad)?;
                let v = match obj.get(&m.value_field) {
                    Some(serde_json::Value::Number(n)) => n.as_f64(),
                    Some(serde_json::Value::String(s)) => s.trim().parse::<f64>().ok(),
                    _ => None,
                }
                .ok_or_else(|| {
                    bad(format!(
                        "field {:?} is missing or not a number",
                        m.value_field
                    ))
                })?;
                if !v.is_finite() {
                    return Err(DecodeError::NonFinite {
                        topic: topic.into(),
                    });
                }
                msg.values.push((channel.to_string(), v));
            }
            PayloadKind::JsonObject => {
                let obj = parse_object(text).map_err(bad)?;
                msg.ts = read_ts(&obj, &m.timestamp_field).map_err(bad)?;
                for (k, v) in &obj {
                    if *k == m.timestamp_field {
                        continue;
                    }
                    match v {
                        serde_json::Value::Number(n) => match n.as_f64() {
                            Some(x) if x.is_finite() => msg.values.push((k.clone(), x)),
                            _ => msg.non_finite += 1,
                        },
                        // JSON has no NaN literal; sensors send null for "no value".
                        serde_json::Value::Null => msg.non_finite += 1,
                        // Text and nested fields are metadata, not channels.
                        _ => {}
                    }
                }
                if msg.values.is_empty() && msg.non_finite == 0 {
                    return Err(bad("the JSON object holds no numeric field".into()));
                }
            }
        }
        Ok(msg)
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn parse_object(text: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(o)) => Ok(o),
        Ok(_) => Err("payload is JSON but not an object".into()),
        Err(e) => Err(format!("payload is not JSON: {e}")),
    }
}

fn read_ts(
    obj: &serde_json::Map<String, serde_json::Value>,
    field: &str,
) -> Result<Option<i64>, String> {
    match obj.get(field) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(crate::timestamp::epoch_int_to_nanos(i)))
            } else {
                n.as_f64()
                    .and_then(epoch_to_nanos)
                    .map(Some)
                    .ok_or_else(|| format!("timestamp field {field:?} is not a usable number"))
            }
        }
        Some(serde_json::Value::String(s)) => parse_timestamp(s)
            .map(Some)
            .map_err(|e| format!("timestamp field {field:?}: {e}")),
        Some(_) => Err(format!(
            "timestamp field {field:?} is neither a number nor a string"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder() -> Decoder {
        let m = |f: &str, p| TopicMapping {
            pattern: TopicPattern::parse(f, p).unwrap(),
            value_field: "value".into(),
            timestamp_field: "ts".into(),
        };
        Decoder::new(vec![
            m("plant/{asset}/{channel}", PayloadKind::Number),
            m("json/{asset}/+/{channel}", PayloadKind::Json),
            m("sensors/{asset}", PayloadKind::JsonObject),
        ])
    }

    #[test]
    fn patterns_parse_and_subscribe() {
        let p = TopicPattern::parse("plant/{asset}/{channel}", PayloadKind::Number).unwrap();
        assert_eq!(p.subscription(), "plant/+/+");
        assert_eq!(p.matches("plant/p1/temp"), Some(("p1", Some("temp"))));
        assert_eq!(p.matches("plant/p1"), None);
        assert_eq!(p.matches("plant/p1/temp/x"), None);
        assert_eq!(p.matches("plant//temp"), None);
        assert!(matches!(
            TopicPattern::parse("plant/{channel}", PayloadKind::Number),
            Err(TopicError::NoAsset(_))
        ));
        assert!(matches!(
            TopicPattern::parse("sensors/{asset}", PayloadKind::Number),
            Err(TopicError::NoChannel(_))
        ));
        assert!(matches!(
            TopicPattern::parse("a/#", PayloadKind::JsonObject),
            Err(TopicError::BadSegment(..))
        ));
    }

    #[test]
    fn bare_number_payload() {
        let m = decoder().decode("plant/p1/pressure", b" 2.5\n").unwrap();
        assert_eq!(m.asset, "p1");
        assert_eq!(m.ts, None);
        assert_eq!(m.values, vec![("pressure".to_string(), 2.5)]);
    }

    #[test]
    fn json_value_payload_with_timestamps_in_every_unit() {
        let d = decoder();
        for ts in [
            "1700000000",
            "1700000000000",
            "1700000000000000",
            "1700000000000000000",
            "\"2023-11-14T22:13:20Z\"",
        ] {
            let payload = format!("{{\"value\": 3, \"ts\": {ts}}}");
            let m = d.decode("json/p2/x/flow", payload.as_bytes()).unwrap();
            assert_eq!(m.ts, Some(1_700_000_000_000_000_000), "{ts}");
            assert_eq!(m.values, vec![("flow".to_string(), 3.0)]);
        }
    }

    #[test]
    fn json_object_holds_several_channels() {
        let m = decoder()
            .decode(
                "sensors/pump-1",
                br#"{"ts": 1700000000123, "a": 1.5, "b": -2, "status": "ok", "c": null}"#,
            )
            .unwrap();
        assert_eq!(m.asset, "pump-1");
        assert_eq!(m.ts, Some(1_700_000_000_123_000_000));
        assert_eq!(
            m.values,
            vec![("a".to_string(), 1.5), ("b".to_string(), -2.0)]
        );
        assert_eq!(m.non_finite, 1);
    }

    #[test]
    fn bad_input_is_an_error_with_a_reason() {
        let d = decoder();
        let cases: [(&str, &[u8], DropReason); 7] = [
            ("other/p1", b"1", DropReason::UnknownTopic),
            ("plant/p1/t", b"abc", DropReason::BadPayload),
            ("plant/p1/t", b"NaN", DropReason::NonFinite),
            ("plant/p1/t", b"inf", DropReason::NonFinite),
            ("plant/p1/t", &[0xff, 0xfe], DropReason::BadPayload),
            ("json/p1/x/t", b"{\"val\": 1}", DropReason::BadPayload),
            ("sensors/p1", b"[1,2]", DropReason::BadPayload),
        ];
        for (topic, payload, reason) in cases {
            let err = d.decode(topic, payload).unwrap_err();
            assert_eq!(err.reason(), reason, "{topic} {payload:?}: {err}");
        }
        let err = d
            .decode("json/p1/x/t", b"{\"value\": 1, \"ts\": \"yesterday\"}")
            .unwrap_err();
        assert!(err.to_string().contains("timestamp field \"ts\""), "{err}");
    }
}
