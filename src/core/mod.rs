//! The pure core: everything that must compute the same numbers in the
//! daemon and in the trainer. No I/O beyond reading a log file the caller
//! names, no async, no network crates; it imports nothing outside `core/`.

pub(crate) mod align;
pub mod contract;
pub(crate) mod detect;
pub(crate) mod execution_provider;
pub mod log;
pub(crate) mod normalise;
pub(crate) mod quality;
pub(crate) mod reading;
pub mod synth;
pub mod timestamp;
pub(crate) mod window;

pub use align::{
    AlignStats, Aligner, AlignerConfig, Frame, MAX_GAP_FRAMES, MAX_LATENESS_PERIODS, PushOutcome,
};
pub use detect::{
    Adaptation, AlertEvent, AlertKind, Decision, Detector, DetectorSettings, OpenAlert, Smoother,
    TOP_CHANNELS,
};
pub use execution_provider::ExecutionProvider;
pub use normalise::Normaliser;
pub use quality::{QualityEvent, QualityKind, QualitySettings, RangeWatch, StaleWatch, StuckWatch};
pub use reading::{DropReason, Message};
pub use window::{Window, WindowBuffer, WindowSkip, windows_from_frames};
