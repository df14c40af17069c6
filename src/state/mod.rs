//! What the daemon keeps on disk in its state directory so that nothing is
//! lost across a restart or a `kill -9`: the intake journal, the sink's
//! spool, the open alerts, the dead letters, the points the database
//! refused and the alert outbox (docs/architecture.md, "Delivery guarantees").

pub(crate) mod dead_letter;
pub(crate) mod journal;
pub(crate) mod open_alerts;
pub(crate) mod outbox;
pub(crate) mod refused_points;
pub(crate) mod spool;

pub use dead_letter::DeadLetters;
pub use journal::{Journal, JournalError, JournalSettings, Record, ReplayReport};
pub use open_alerts::AlertStore;
pub use outbox::{Outbox, OutboxError, OutboxReport, write_atomic};
pub use refused_points::{REFUSED_POINTS_FILE, RefusedPoints, RefusedPointsError};
pub use spool::{OpenReport, Spool, SpoolError, SpooledBatch};
