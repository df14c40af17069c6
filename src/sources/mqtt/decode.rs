//! MQTT topic mapping and payload decoding: topic + payload in, readings
//! (asset, channel, optional event time, value) out. Pure; no I/O.

use crate::config::{PayloadKind, TopicMapping};
use crate::core::reading::{DropReason, Message};
use crate::core::timestamp::{epoch_to_nanos, parse_timestamp};

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

/// Decodes messages with the first mapping whose pattern matches.
#[derive(Debug, Clone, Default)]
pub struct Decoder {
    mappings: Vec<TopicMapping>,
}

impl Decoder {
    pub fn new(mappings: Vec<TopicMapping>) -> Self {
        Self { mappings }
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
        let mut msg = Message::default();
        self.decode_into(topic, payload, &mut msg)?;
        Ok(msg)
    }

    /// Like [`decode`](Self::decode), but fills `msg`, reusing its
    /// allocations: the MQTT task keeps one [`Message`], so a JSON frame of
    /// known channels decodes without allocating. After an error `msg`
    /// holds no meaningful content.
    ///
    /// A JSON object payload is read in one pass, without building a JSON
    /// tree: values keep the payload's order, and a key given twice yields
    /// two values (the aligner keeps the later one).
    ///
    /// # Errors
    /// As [`decode`](Self::decode).
    pub fn decode_into(
        &self,
        topic: &str,
        payload: &[u8],
        msg: &mut Message,
    ) -> Result<(), DecodeError> {
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
        msg.asset.clear();
        msg.asset.push_str(asset);
        msg.ts = None;
        msg.non_finite = 0;
        let mut values = ValueWriter::new(&mut msg.values);
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
                values.push(channel, v);
            }
            PayloadKind::Json => {
                let channel = channel.unwrap_or_default();
                let obj = parse_object(text).map_err(bad)?;
                msg.ts = read_ts(obj.get(&m.timestamp_field), &m.timestamp_field).map_err(bad)?;
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
                values.push(channel, v);
            }
            PayloadKind::JsonObject => {
                let scan = scan_object(text, &m.timestamp_field, &mut values).map_err(bad)?;
                msg.non_finite = scan.non_finite;
                msg.ts = scan.ts.map_err(bad)?;
                if values.used == 0 && msg.non_finite == 0 {
                    return Err(bad("the JSON object holds no numeric field".into()));
                }
            }
        }
        values.finish();
        Ok(())
    }
}

/// Writes `(channel, value)` pairs into a vector, reusing the strings of
/// its earlier contents; [`finish`](Self::finish) drops what was not reused.
struct ValueWriter<'a> {
    values: &'a mut Vec<(String, f64)>,
    used: usize,
}

impl<'a> ValueWriter<'a> {
    fn new(values: &'a mut Vec<(String, f64)>) -> Self {
        Self { values, used: 0 }
    }

    fn push(&mut self, channel: &str, value: f64) {
        match self.values.get_mut(self.used) {
            Some((name, v)) => {
                name.clear();
                name.push_str(channel);
                *v = value;
            }
            None => self.values.push((channel.to_string(), value)),
        }
        self.used += 1;
    }

    fn finish(self) {
        self.values.truncate(self.used);
    }
}

/// What [`scan_object`] found besides the values.
struct ObjectScan {
    non_finite: usize,
    /// The timestamp field (the last one, if given twice).
    ts: Result<Option<i64>, String>,
}

/// Reads a JSON object payload in one pass: numbers become values, `null`s
/// and non-finite numbers are counted, text and nested fields are skipped,
/// and the timestamp field is read as [`read_ts`] does.
fn scan_object(
    text: &str,
    ts_field: &str,
    values: &mut ValueWriter<'_>,
) -> Result<ObjectScan, String> {
    use serde::Deserializer as _;
    let mut de = serde_json::Deserializer::from_str(text);
    let scan = de
        .deserialize_any(ObjectVisitor { ts_field, values })
        .and_then(|scan| de.end().map(|()| scan))
        .map_err(|e| format!("payload is not JSON: {e}"))?;
    scan.ok_or_else(|| "payload is JSON but not an object".to_string())
}

/// Visits the top-level JSON value; `None` when it is not an object.
struct ObjectVisitor<'a, 'v> {
    ts_field: &'a str,
    values: &'a mut ValueWriter<'v>,
}

impl<'de> serde::de::Visitor<'de> for ObjectVisitor<'_, '_> {
    type Value = Option<ObjectScan>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut scan = ObjectScan {
            non_finite: 0,
            ts: Ok(None),
        };
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let key = key.as_str();
            if key == self.ts_field {
                let v: serde_json::Value = map.next_value()?;
                scan.ts = read_ts(Some(&v), self.ts_field);
                continue;
            }
            match map.next_value::<Field>()? {
                Field::Number(x) if x.is_finite() => self.values.push(key, x),
                // JSON has no NaN literal; sensors send null for "no value".
                Field::Number(_) | Field::Null => scan.non_finite += 1,
                // Text and nested fields are metadata, not channels.
                Field::Other => {}
            }
        }
        Ok(Some(scan))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// An object key, borrowed from the payload unless it holds escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }
}

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(s))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key::Owned(s))
            }
        }
        d.deserialize_str(V)
    }
}

/// A field value of a JSON object payload, as far as decoding cares.
enum Field {
    Number(f64),
    Null,
    Other,
}

impl<'de> serde::Deserialize<'de> for Field {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Field;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_f64<E>(self, v: f64) -> Result<Field, E> {
                Ok(Field::Number(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Field, E> {
                Ok(Field::Number(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Field, E> {
                Ok(Field::Number(v as f64))
            }
            fn visit_unit<E>(self) -> Result<Field, E> {
                Ok(Field::Null)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Field, E> {
                Ok(Field::Other)
            }
            fn visit_str<E>(self, _: &str) -> Result<Field, E> {
                Ok(Field::Other)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Field, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Field::Other)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Field, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Field::Other)
            }
        }
        d.deserialize_any(V)
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

fn read_ts(value: Option<&serde_json::Value>, field: &str) -> Result<Option<i64>, String> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(crate::core::timestamp::epoch_int_to_nanos(i)))
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
    use crate::config::TopicPattern;

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

    type TreeReading = (Vec<(String, f64)>, usize, Option<i64>);

    /// The tree-based reading the one-pass decoder replaced: values sorted
    /// by channel, the count of nulls and non-finite numbers, the timestamp.
    fn tree_reading(payload: &str) -> Option<TreeReading> {
        let obj = parse_object(payload).ok()?;
        let ts = read_ts(obj.get("ts"), "ts").ok()?;
        let mut values = Vec::new();
        let mut non_finite = 0;
        for (k, v) in &obj {
            match v {
                serde_json::Value::Number(n) if k != "ts" => match n.as_f64() {
                    Some(x) if x.is_finite() => values.push((k.clone(), x)),
                    _ => non_finite += 1,
                },
                serde_json::Value::Null if k != "ts" => non_finite += 1,
                _ => {}
            }
        }
        values.sort_by(|a, b| a.0.cmp(&b.0));
        Some((values, non_finite, ts))
    }

    #[test]
    fn one_pass_json_object_reads_what_the_tree_did() {
        let d = decoder();
        for payload in [
            r#"{"ts":1767225600000,"vibration_1":1.607,"vibration_2":1.2862,"current":5,"pressure":-2.5e-3}"#,
            r#"{"b": 2, "a": 1, "ts": "2023-11-14T22:13:20Z"}"#,
            r#"{"a": 1, "nested": {"x": [1, {"y": 2}], "z": null}, "list": [1, 2], "ok": true, "s": "t"}"#,
            r#"{"ts": 1700000000.5, "a\u00e9\"q": 3, "x": null}"#,
            r#"{"big": 18446744073709551615, "neg": -9223372036854775808, "f": 1e300}"#,
            r#" { "ts" : null , "a" : 0 } "#,
        ] {
            let m = d.decode("sensors/p1", payload.as_bytes()).unwrap();
            let mut got = m.values.clone();
            got.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(
                Some((got, m.non_finite, m.ts)),
                tree_reading(payload),
                "{payload}"
            );
        }
        // Not JSON, not an object, trailing bytes, nothing numeric.
        for (payload, says) in [
            (r#"{"a": 1"#, "not JSON"),
            (r#"{"a": 1} x"#, "not JSON"),
            (r#"{"a": 1e999}"#, "not JSON"),
            ("[1, 2]", "not an object"),
            ("12", "not an object"),
            (r#""text""#, "not an object"),
            (r#"{"ts": 1, "s": "x"}"#, "no numeric field"),
            (r#"{"ts": [1], "a": 1}"#, "neither a number nor a string"),
        ] {
            let err = d.decode("sensors/p1", payload.as_bytes()).unwrap_err();
            assert_eq!(err.reason(), DropReason::BadPayload, "{payload}");
            assert!(err.to_string().contains(says), "{payload}: {err}");
        }
    }

    #[test]
    fn decode_into_reuses_the_message() {
        let d = decoder();
        let mut m = Message::default();
        d.decode_into(
            "sensors/pump-1",
            br#"{"ts": 1700000000000, "a": 1, "b": 2, "c": 3}"#,
            &mut m,
        )
        .unwrap();
        assert_eq!(m.values.len(), 3);
        d.decode_into("sensors/p2", br#"{"x": 7, "y": null}"#, &mut m)
            .unwrap();
        assert_eq!(m.asset, "p2");
        assert_eq!(m.ts, None);
        assert_eq!(m.values, vec![("x".to_string(), 7.0)]);
        assert_eq!(m.non_finite, 1);
        d.decode_into("plant/p3/temp", b"21.5", &mut m).unwrap();
        assert_eq!(
            m,
            Message {
                asset: "p3".into(),
                ts: None,
                values: vec![("temp".to_string(), 21.5)],
                non_finite: 0,
            }
        );
        assert_eq!(m, d.decode("plant/p3/temp", b"21.5").unwrap());
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
