//! The validated configuration: the file's values plus what validation
//! turned into types, so no later stage parses a string or a number range
//! again.

use std::time::Duration;

use super::schema::Config;
use super::topics::TopicMapping;

/// MQTT quality of service, as validated from `mqtt.qos` (0, 1 or 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Qos {
    AtMostOnce,
    AtLeastOnce,
    ExactlyOnce,
}

impl Qos {
    /// The level as MQTT numbers it; `None` for anything but 0, 1 or 2.
    pub fn from_level(level: u8) -> Option<Self> {
        match level {
            0 => Some(Qos::AtMostOnce),
            1 => Some(Qos::AtLeastOnce),
            2 => Some(Qos::ExactlyOnce),
            _ => None,
        }
    }

    /// Whether the broker redelivers what we did not acknowledge.
    pub fn acknowledged(self) -> bool {
        self != Qos::AtMostOnce
    }
}

/// A configuration that passed validation.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The values as written (paths resolved against the file's folder).
    pub config: Config,
    /// `[[topics]]`, parsed.
    pub topics: Vec<TopicMapping>,
    /// `mqtt.qos`, checked.
    pub qos: Qos,
}

impl Settings {
    /// Only validation builds one, after it found no problem.
    pub(super) fn new(config: Config, topics: Vec<TopicMapping>) -> Self {
        // Validation refused any other level.
        let qos = Qos::from_level(config.mqtt.qos).unwrap_or(Qos::AtLeastOnce);
        Self {
            config,
            topics,
            qos,
        }
    }

    /// The parsed `[[topics]]` of one partition (`{partition}` replaced),
    /// or of the whole daemon without `[partitions]`.
    pub fn topics_for(&self, partition: Option<u32>) -> Vec<TopicMapping> {
        match partition {
            None => self.topics.clone(),
            Some(p) => super::topics::parse_topics(&self.config.topics, Some(p), &mut Vec::new()),
        }
    }

    /// The sessions this daemon runs: one per owned partition, or one.
    pub fn sessions(&self) -> Vec<Option<u32>> {
        match &self.config.partitions {
            None => vec![None],
            Some(p) => p.owned_set().into_iter().map(Some).collect(),
        }
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.config.shutdown.timeout_s)
    }
}
