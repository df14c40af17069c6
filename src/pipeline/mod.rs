//! The synchronous heart of the daemon, shared by `run` and `replay`: no
//! async, no network, no files. `run` puts the feature stage and the scorer
//! on different threads; `replay` calls them in line.
//!
//! - `binding.rs`: which model and detector settings an asset gets.
//! - `features/`: messages -> aligned frames -> normalised windows; the
//!   clock and the data-quality alarms.
//! - `scorer.rs`: windows -> scores and alert transitions.
//! - `output.rs`: what the sinks receive.

mod binding;
mod features;
mod output;
mod scorer;

pub use binding::{AssetBinding, Binder, ModelSlot, QualityRules, glob_match};
pub use features::{FeatureStage, MAX_FUTURE_NS, ScoreRequest, StageSettings};
pub use output::{Barrier, FrameRecord, Output, QualityRecord, ScoreRecord, ScoredBatch, SinkItem};
pub use scorer::{InferenceMsg, NamedModel, Scorer, WindowReceiver, WindowSender};
