//! What a decoded message is, and why a message or a reading could not be
//! used. Sources produce [`Message`]s; the pipeline consumes them; every
//! [`DropReason`] is counted (docs/architecture.md §2: nothing is dropped
//! silently).

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
