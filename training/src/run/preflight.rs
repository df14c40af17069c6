//! The checks before any data is read: detector and training settings,
//! the architecture against the window, the output folder, the training
//! device and ONNX Runtime (which the parity check needs).

use std::path::PathBuf;

use anomalyd::core::contract::DetectorDefaults;
use burn::tensor::Device;

use super::{DeviceKind, RunError, TrainOptions};
use crate::calibrate;
use crate::model::autoencoder::ModelConfig;

/// Everything that can fail without data, checked before spending time on
/// it; returns the detector defaults and the training device.
pub(super) fn preflight(opts: &TrainOptions) -> Result<(DetectorDefaults, Device), RunError> {
    let detector = calibrate::detector_defaults(
        opts.raise_after,
        opts.clear_after,
        opts.clear_ratio,
        opts.smoothing,
    )?;
    opts.train.validate()?;
    // Check the architecture against the window, and that the model can be
    // written, before reading any data or training.
    model_config(opts, 1).validate()?;
    let out_dir = match opts.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !out_dir.is_dir() {
        return Err(RunError::OutputDir {
            out: opts.out.clone(),
            dir: out_dir,
        });
    }
    let device = make_device(opts.device)?;
    // The parity check needs ONNX Runtime: find it before spending time.
    anomalyd::model::init_runtime(opts.ort_library.as_deref()).map_err(RunError::Runtime)?;
    Ok((detector, device))
}

pub(super) fn model_config(opts: &TrainOptions, channels: usize) -> ModelConfig {
    ModelConfig {
        arch: opts.arch.clone(),
        channels,
        window: opts.data.window,
        dropout: opts.dropout,
        batch_norm: opts.batch_norm,
    }
}

pub(super) fn make_device(kind: DeviceKind) -> Result<Device, RunError> {
    match kind {
        DeviceKind::Cpu => Ok(Device::flex()),
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda => Ok(Device::cuda(0)),
        #[cfg(not(feature = "cuda"))]
        DeviceKind::Cuda => Err(RunError::Options(
            "--device cuda needs a trainer built with `--features cuda`".into(),
        )),
    }
}

pub(super) fn device_name(kind: DeviceKind) -> &'static str {
    match kind {
        DeviceKind::Cpu => "cpu (burn flex)",
        DeviceKind::Cuda => "cuda:0 (burn cuda)",
    }
}
