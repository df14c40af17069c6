//! Topic filters with named segments (`plant/{asset}/{channel}`), parsed
//! once when the configuration is validated. The MQTT source subscribes to
//! their subscription filters and its decoder matches topics against them.

use super::Problem;
use super::schema::{PayloadKind, TopicConfig};

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
        "filter {0:?}: segment {1:?} is not allowed (use {{asset}}, {{channel}}, {{partition}} with [partitions], + or a literal; # is not supported)"
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

/// One configured mapping: the pattern and where to find value and time.
#[derive(Debug, Clone)]
pub struct TopicMapping {
    pub pattern: TopicPattern,
    pub value_field: String,
    pub timestamp_field: String,
}

/// Parses every `[[topics]]` entry, `{partition}` replaced by `partition`
/// where given; a filter that does not parse is a problem at its key path.
pub(super) fn parse_topics(
    topics: &[TopicConfig],
    partition: Option<u32>,
    problems: &mut Vec<Problem>,
) -> Vec<TopicMapping> {
    let mut mappings = Vec::with_capacity(topics.len());
    for (i, t) in topics.iter().enumerate() {
        let filter = super::partitions::filter_for(&t.filter, partition);
        match TopicPattern::parse(&filter, t.payload) {
            Ok(pattern) => mappings.push(TopicMapping {
                pattern,
                value_field: t.value_field.clone(),
                timestamp_field: t.timestamp_field.clone(),
            }),
            Err(e) => problems.push(Problem {
                key: format!("topics[{i}].filter"),
                message: e.to_string(),
            }),
        }
    }
    mappings
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
