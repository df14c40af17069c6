//! anomalyd-train as a library: the trainer's modules, so that its binary and
//! its tests share them.

pub mod export;
pub mod network;
pub mod onnx;

pub mod calibrate;
pub mod centering;
pub mod cli;
pub mod data;
pub mod eval;
pub mod model;
pub mod report;
pub mod run;
pub mod train;
