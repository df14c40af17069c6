//! What the source task is given: its broker nodes and settings, its
//! feature stage, its journal, its partition (if any), and what a reload
//! hands it.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use rumqttc::MqttOptions;
use tokio::sync::watch;

use super::Decoder;
use crate::pipeline::{Binder, FeatureStage, ModelSlot, QualityRules, StageSettings};
use crate::state::DeadLetters;
use crate::state::journal::Journal;

/// New models and mappings for the source after a reload.
#[derive(Debug)]
pub struct SourceReload {
    pub slots: Vec<ModelSlot>,
    pub binder: Binder,
    pub settings: StageSettings,
    pub decoder: Decoder,
    pub quality: QualityRules,
}

/// Everything the source task needs.
#[derive(Debug)]
pub struct SourceParts {
    /// One per broker node, tried in order (never empty).
    pub brokers: Vec<MqttOptions>,
    pub qos: crate::config::Qos,
    pub max_payload: usize,
    /// Longest a window waits here for others to share its inference call.
    pub max_wait: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub decoder: Decoder,
    pub stage: FeatureStage,
    /// The intake journal (QoS 1/2 with a state directory); the options
    /// then have manual acks on.
    pub journal: Option<JournalParts>,
    /// Where oversize messages are kept (with a state directory).
    pub dead_letters: Option<DeadLetters>,
    /// Set when this session consumes one partition of a fleet.
    pub partition: Option<PartitionParts>,
}

/// One partition's session (docs/scale-out.md §4): which partition, and
/// where its handover record lives.
#[derive(Debug, Clone)]
pub struct PartitionParts {
    pub index: u32,
    /// Retained topic of its handover record.
    pub handover_topic: String,
    /// This daemon's client id: the owner named in the records it leaves.
    pub owner: String,
    /// How far back a record's messages reach: the longest window span
    /// plus the allowed lateness.
    pub span_ns: i64,
    /// Set before the session is stopped when the partition is given up
    /// (not a shutdown): the scorer then forgets its assets.
    pub given_up: Arc<AtomicBool>,
}

/// The journal, the segments an earlier run left to replay, and where the
/// sink confirms barriers.
#[derive(Debug)]
pub struct JournalParts {
    pub journal: Journal,
    pub replay: Vec<std::path::PathBuf>,
    /// Where the sink confirms this journal's barriers.
    pub confirm: Arc<watch::Sender<Option<u64>>>,
    /// Commit (sync and acknowledge) at most once per this interval ...
    pub sync_interval: Duration,
    /// ... unless this many messages wait for their acknowledgement.
    pub sync_max_pending: usize,
}
