//! anomalyd: streaming anomaly detection for industrial sensors.
//!
//! The pure stages (decode, align, window, normalise, detect) and the model
//! file contract have no I/O and are shared with the trainer; the daemon's
//! I/O edges (MQTT, ONNX Runtime thread, InfluxDB, HTTP) build on them.

pub mod alert_state;
pub mod align;
pub mod config;
pub mod daemon;
pub mod decode;
pub mod detect;
pub mod http;
pub mod journal;
pub mod loader;
pub mod metadata;
pub mod metrics;
pub mod mqtt;
pub mod normalise;
pub mod notify;
pub mod onnxrt;
pub mod pipeline;
pub mod replay;
pub mod simulate;
pub mod sink;
pub mod spool;
pub mod status;
pub mod synth;
pub mod timestamp;
pub mod window;
