//! anomalyd-train as a library: the trainer's modules, so that its binary and
//! its tests share them.

pub mod export;
pub mod network;
pub mod onnx;
