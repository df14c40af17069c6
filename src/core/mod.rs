//! The pure core: everything that must compute the same numbers in the
//! daemon and in the trainer. No I/O beyond reading a log file the caller
//! names, no async, no network crates; it imports nothing outside `core/`.

pub mod align;
pub mod contract;
pub mod detect;
pub mod execution_provider;
pub mod log;
pub mod normalise;
pub mod reading;
pub mod synth;
pub mod timestamp;
pub mod window;
