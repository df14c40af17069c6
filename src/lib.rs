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
//! - [`state`]    — the state directory: intake journal, spool, dead
//!   letters, refused points, open alerts, alert outbox.
//! - [`sinks`]    — where results go: InfluxDB, alert outputs (MQTT,
//!   webhook), `replay`'s CSV.
//! - [`ops`]      — metrics, the HTTP listener and status page, systemd.
//! - [`cmd`]      — one module per subcommand; the only place that wires
//!   components together.
//! - [`manual`]   — man pages and shell completions from a clap definition
//!   (feature `docs`; the binaries' hidden option for the package build).
//!
//! # Layer rules
//!
//! Each folder imports only the folders before it in this table (checked by
//! `tests/layers.rs`, which reads every `crate::` path):
//!
//! | folder | may import |
//! |---|---|
//! | `core` | nothing outside `core` |
//! | `model`, `config`, `ops::metrics` | `core` |
//! | `pipeline` | `core`, `config`, `model`, `ops::metrics` |
//! | `state` | `core`, `config`, `ops::metrics` |
//! | `sources`, `sinks` | `core`, `config`, `pipeline`, `state`, `ops::metrics` |
//! | `ops` | `core`, `config`, `model`, `pipeline` |
//! | `cmd` | everything: only `cmd` wires components together |
//! | `manual` | nothing |
//!
//! Without the default `daemon` feature only `core` and `model` are built:
//! that is what the trainer links, so the compiler keeps the core free of
//! MQTT, HTTP, InfluxDB and the async runtime.
//!
//! Folders are the public surface: the files inside them are crate-private
//! and each folder's `mod.rs` re-exports what other crates use.

#[cfg(feature = "daemon")]
pub mod cmd;
#[cfg(feature = "daemon")]
pub mod config;
pub mod core;
#[cfg(feature = "docs")]
pub mod manual;
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
