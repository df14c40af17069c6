//! anomalyd-train: trains the autoencoder from normal-operation logs and
//! exports the one model file the daemon loads.
//!
//! # Code map
//!
//! In data-flow order (docs/architecture.md, "Data flow"):
//!
//! - [`data`]      — logs (or the synthetic pump) -> aligned, normalised
//!   training and validation windows.
//! - [`centering`] — which channels are scored on their shape within each
//!   window, decided from the training data.
//! - [`model`]     — the network: the exported description (`network`), the
//!   burn autoencoder (`autoencoder`) and the training loop (`train`).
//! - [`calibrate`] — validation scores -> threshold (to a target
//!   false-alarm rate), error distribution and detector defaults, with the
//!   daemon's own smoother and detector.
//! - [`export`]    — network + metadata -> the ONNX model file, and the
//!   plain-loop reference forward pass it is checked against.
//! - [`report`]    — `report.json` and the plots of `--report DIR`, and the
//!   replay plot of the benchmark.
//! - [`eval`]      — detection quality of `anomalyd replay` outputs against
//!   labelled logs (the scorers `src/bin/anomalyd-skab-score.rs` and
//!   `src/bin/anomalyd-tep-score.rs`).
//!
//! Wiring:
//!
//! - [`cli`]       — the command line, validated into [`run::TrainOptions`].
//! - [`run`]       — one training run, start to finish: the steps above in
//!   order, the parity check, the exit codes.
//!
//! From the daemon the trainer uses only its pure core (`anomalyd::core`)
//! and, for the parity check, its ONNX Runtime wrapper (`anomalyd::model`).

pub mod calibrate;
pub mod centering;
pub mod cli;
pub mod data;
pub mod eval;
pub mod export;
pub mod model;
pub mod report;
pub mod run;
