//! What the daemon keeps on disk in its state directory so that nothing is
//! lost across a restart or a `kill -9`: the intake journal, the sink's
//! spool and dead-letter file, and the open alerts (docs/architecture.md, "Delivery guarantees").

pub(crate) mod dead_letter;
pub(crate) mod journal;
pub(crate) mod open_alerts;
pub(crate) mod spool;

pub use dead_letter::{DEAD_LETTER_FILE, DeadLetter, DeadLetterError};
pub use journal::{Journal, JournalError, JournalSettings, Record, ReplayReport};
pub use open_alerts::AlertStore;
pub use spool::{OpenReport, Spool, SpoolError, SpooledBatch};
