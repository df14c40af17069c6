//! anomalyd: streaming anomaly detection for industrial sensors.
//!
//! # Code map
//!
//! In data-flow order (docs/architecture.md, "Data flow"):
//!
//! - [`sources`]  — where readings come from: MQTT options, acknowledgements
//!   and payload decoders (`sources/mqtt/`).
//! - [`core`]     — pure and shared with the trainer: timestamps, log
//!   loading, alignment, windows, normalisation, detection (with the one
//!   score smoother), the model-file contract, the synthetic pump.
//! - [`config`]   — the configuration schema, topic patterns parsed once,
//!   and validation into typed settings.
//! - [`model`]    — the ONNX Runtime side: library loading, sessions,
//!   contract and pin checks, `inspect-model`.
//! - [`pipeline`] — features per asset, asset-to-model binding, the scorer
//!   and its output types. Synchronous, no I/O.
//! - [`state`]    — the state directory: intake journal, spool, open alerts.
//! - [`sinks`]    — where results go: InfluxDB, `replay`'s CSV.
//! - [`ops`]      — metrics, the HTTP listener and status page, systemd.
//! - [`cmd`]      — one module per subcommand; the only place that wires
//!   components together.
//!
//! # Layer rules
//!
//! Checked by `tests/layers.rs`, which reads every `use crate::` line:
//!
//! - `core` imports nothing outside `core`.
//! - `model` imports only `core`.
//! - `config` imports only `core` and `model` (for the execution
//!   provider's name); its schema imports nothing from the crate.
//! - `pipeline` imports `core`, `config`, `model` and `ops::metrics`.
//! - `state`, `sources` and `sinks` import the layers above and
//!   `pipeline`'s types, never each other's internals and never `cmd`.
//! - `ops::metrics` is a leaf every layer may count into.
//! - Only `cmd` wires components together.

#[cfg(feature = "daemon")]
pub mod cmd;
#[cfg(feature = "daemon")]
pub mod config;
pub mod core;
pub mod model;
#[cfg(feature = "daemon")]
pub mod ops;
#[cfg(feature = "daemon")]
pub mod pipeline;
#[cfg(feature = "daemon")]
pub mod sinks;
#[cfg(feature = "daemon")]
pub mod sources;
#[cfg(feature = "daemon")]
pub mod state;
