//! The training loop: Adam on the MSE between the reconstruction and the
//! clean window, early stopping on the validation loss, best weights kept.
//!
//! A hand-written loop rather than burn's `Learner`: it is ~50 lines, adds no
//! dependencies, prints only what we want, and is deterministic for a seed
//! (the device seed drives weight init, dropout and input noise; a SplitMix64
//! seeded the same way shuffles the training windows each epoch).

use std::time::{Duration, Instant};

use burn::grad_clipping::GradientClippingConfig;
use burn::module::Module;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Tensor, TensorData};

use crate::data::WindowSet;
use crate::model::autoencoder::Autoencoder;

/// Windows per inference batch (validation loss, calibration, parity).
pub const INFERENCE_BATCH: usize = 256;

/// Why training stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(
        "training diverged at epoch {epoch}: the {which} loss is {value}; lower --learning-rate or set --clip-grad-norm"
    )]
    Diverged {
        epoch: usize,
        which: &'static str,
        value: f32,
    },
    #[error("cannot read a tensor back from the device: {0}")]
    Readback(String),
    #[error("{name} must be {expected}, got {value}")]
    Invalid {
        name: &'static str,
        expected: &'static str,
        value: String,
    },
}

/// Optimiser and schedule settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// Most epochs to run.
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    /// L2 penalty added to the gradient (Adam's classic weight decay); 0 = off.
    pub weight_decay: f32,
    /// Clip each parameter's gradient to this L2 norm; `None` = off.
    pub clip_grad_norm: Option<f32>,
    /// Stop after this many epochs without a better validation loss; 0 = never.
    pub patience: usize,
    /// Standard deviation of the Gaussian noise added to training inputs
    /// (denoising autoencoder); the target stays the clean window. 0 = off.
    pub noise_sigma: f64,
    pub seed: u64,
}

impl TrainConfig {
    /// Checks the ranges.
    ///
    /// # Errors
    /// Names the first bad setting.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |name, expected, value: String| {
            Err(TrainError::Invalid {
                name,
                expected,
                value,
            })
        };
        if self.epochs == 0 {
            return bad("--epochs", "at least 1", "0".into());
        }
        if self.batch_size == 0 {
            return bad("--batch-size", "at least 1", "0".into());
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad(
                "--learning-rate",
                "a positive number",
                self.learning_rate.to_string(),
            );
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(
                "--weight-decay",
                "0 or a positive number",
                self.weight_decay.to_string(),
            );
        }
        if let Some(c) = self.clip_grad_norm
            && !(c.is_finite() && c > 0.0)
        {
            return bad("--clip-grad-norm", "a positive number", c.to_string());
        }
        if !(self.noise_sigma.is_finite() && self.noise_sigma >= 0.0) {
            return bad(
                "--noise-sigma",
                "0 or a positive number",
                self.noise_sigma.to_string(),
            );
        }
        Ok(())
    }
}

/// One finished epoch, for progress display.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochStats {
    /// 1-based.
    pub epoch: usize,
    pub train_loss: f32,
    pub validation_loss: f32,
    /// True when this epoch set a new best validation loss.
    pub improved: bool,
    pub elapsed: Duration,
}

/// The result of [`train`].
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// The weights of the best epoch, in inference mode (no autodiff,
    /// dropout off, batch norm on its running statistics).
    pub model: Autoencoder,
    pub train_loss: Vec<f32>,
    pub validation_loss: Vec<f32>,
    /// 1-based epoch of `model`.
    pub best_epoch: usize,
    pub epochs_run: usize,
    pub stopped_early: bool,
    pub elapsed: Duration,
}

/// SplitMix64, for the per-epoch shuffle (reproducible, no dependency).
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Fisher-Yates.
    fn shuffle(&mut self, v: &mut [usize]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// Trains `model` (built on `device`, which must have autodiff) on the
/// training windows, validating after every epoch.
///
/// `device.seed(seed)` must have been called before the model was built so
/// that initialisation is reproducible too; this function seeds the shuffle.
/// burn's CPU generator is process-wide, so a run is reproducible when it is
/// the only training in its process (as in `anomalyd-train`).
///
/// # Errors
/// Invalid settings; a non-finite loss (diverged); a tensor that cannot be
/// read back.
pub fn train(
    mut model: Autoencoder,
    train_set: &WindowSet,
    validation: &WindowSet,
    shape: (usize, usize),
    cfg: &TrainConfig,
    device: &Device,
    mut on_epoch: impl FnMut(&EpochStats),
) -> Result<TrainOutcome, TrainError> {
    cfg.validate()?;
    let started = Instant::now();
    let (c, t) = shape;
    let per_window = c * t;
    let mut optimiser = AdamConfig::new()
        .with_weight_decay(
            (cfg.weight_decay > 0.0).then(|| WeightDecayConfig::new(cfg.weight_decay)),
        )
        .with_grad_clipping(cfg.clip_grad_norm.map(GradientClippingConfig::Norm))
        .init();
    let mut rng = SplitMix64(cfg.seed ^ 0x5EED_5EED_5EED_5EED);
    let mut order: Vec<usize> = (0..train_set.len()).collect();
    let mut batch_buf: Vec<f32> = Vec::with_capacity(cfg.batch_size * per_window);
    let inference_device = device.clone().without_autodiff();

    let mut best: Option<(f32, Autoencoder, usize)> = None;
    let mut train_losses = Vec::new();
    let mut val_losses = Vec::new();
    let mut since_best = 0;
    let mut stopped_early = false;

    for epoch in 1..=cfg.epochs {
        let epoch_start = Instant::now();
        rng.shuffle(&mut order);
        let mut loss_sum = 0.0f64;
        let mut seen = 0usize;
        for chunk in order.chunks(cfg.batch_size) {
            // Batch statistics of a single window are meaningless (variance
            // 0); a lone last window is left for the next epoch's shuffle.
            if chunk.len() < 2 && order.len() >= 2 {
                continue;
            }
            batch_buf.clear();
            for &i in chunk {
                batch_buf.extend_from_slice(&train_set.data[i * per_window..(i + 1) * per_window]);
            }
            let clean = Tensor::<3>::from_data(
                TensorData::new(batch_buf.clone(), [chunk.len(), c, t]),
                device,
            );
            let input = if cfg.noise_sigma > 0.0 {
                let noise = Tensor::<3>::random(
                    [chunk.len(), c, t],
                    Distribution::Normal(0.0, cfg.noise_sigma),
                    device,
                );
                clean.clone() + noise
            } else {
                clean.clone()
            };
            let loss = (model.forward(input) - clean).square().mean();
            let value: f32 = loss
                .clone()
                .try_into_scalar()
                .map_err(|e| TrainError::Readback(e.to_string()))?;
            if !value.is_finite() {
                return Err(TrainError::Diverged {
                    epoch,
                    which: "training",
                    value,
                });
            }
            loss_sum += f64::from(value) * chunk.len() as f64;
            seen += chunk.len();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optimiser.step(cfg.learning_rate, model, grads);
        }
        let train_loss = (loss_sum / seen.max(1) as f64) as f32;

        let snapshot = model.valid();
        let recon = reconstruct(&snapshot, validation, shape, &inference_device)?;
        let val_loss = mse(&validation.data, &recon) as f32;
        if !val_loss.is_finite() {
            return Err(TrainError::Diverged {
                epoch,
                which: "validation",
                value: val_loss,
            });
        }
        train_losses.push(train_loss);
        val_losses.push(val_loss);
        let improved = best.as_ref().is_none_or(|(b, _, _)| val_loss < *b);
        if improved {
            // `valid()` is a detached snapshot: later steps do not touch it.
            best = Some((val_loss, snapshot, epoch));
            since_best = 0;
        } else {
            since_best += 1;
        }
        on_epoch(&EpochStats {
            epoch,
            train_loss,
            validation_loss: val_loss,
            improved,
            elapsed: epoch_start.elapsed(),
        });
        if cfg.patience > 0 && since_best >= cfg.patience {
            stopped_early = epoch < cfg.epochs;
            break;
        }
    }

    let epochs_run = train_losses.len();
    let (_, model, best_epoch) = best.ok_or(TrainError::Invalid {
        name: "--epochs",
        expected: "at least 1",
        value: "0".into(),
    })?;
    Ok(TrainOutcome {
        model,
        train_loss: train_losses,
        validation_loss: val_losses,
        best_epoch,
        epochs_run,
        stopped_early,
        elapsed: started.elapsed(),
    })
}

/// Reconstructs every window of `set` with `model` (inference mode) on
/// `device` (no autodiff), in batches of [`INFERENCE_BATCH`].
///
/// # Errors
/// A tensor that cannot be read back from the device.
pub fn reconstruct(
    model: &Autoencoder,
    set: &WindowSet,
    shape: (usize, usize),
    device: &Device,
) -> Result<Vec<f32>, TrainError> {
    let (c, t) = shape;
    let per_window = c * t;
    let mut out = Vec::with_capacity(set.data.len());
    for chunk in set.data.chunks(INFERENCE_BATCH * per_window) {
        let n = chunk.len() / per_window;
        let x = Tensor::<3>::from_data(TensorData::new(chunk.to_vec(), [n, c, t]), device);
        let y = model
            .forward(x)
            .try_into_data()
            .map_err(|e| TrainError::Readback(e.to_string()))?
            .try_into_vec_as::<f32>()
            .map_err(|e| TrainError::Readback(format!("{e:?}")))?;
        out.extend_from_slice(&y);
    }
    Ok(out)
}

/// Mean squared difference of two equally long slices (0 when empty).
pub fn mse(a: &[f32], b: &[f32]) -> f64 {
    if a.is_empty() {
        return 0.0;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = f64::from(*x) - f64::from(*y);
            d * d
        })
        .sum::<f64>()
        / a.len() as f64
}

/// burn's CPU random generator is process-wide: tests that seed it and draw
/// from it (weight init, dropout, noise) at the same time in one process
/// would draw from each other's stream, so they take turns.
#[cfg(test)]
pub(crate) fn rng_turn() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::autoencoder::{Architecture, ModelConfig};

    fn sine_set(n: usize, c: usize, t: usize, phase: usize) -> WindowSet {
        let mut s = WindowSet::default();
        for w in 0..n {
            for ch in 0..c {
                for i in 0..t {
                    let x = ((w + phase + i) as f32 * 0.3 + ch as f32).sin();
                    s.data.push(x);
                }
            }
            s.end_ts.push(w as i64);
            s.source.push(0);
        }
        s
    }

    fn run(seed: u64) -> TrainOutcome {
        run_with(seed, false)
    }

    fn run_with(seed: u64, batch_norm: bool) -> TrainOutcome {
        let _turn = rng_turn();
        let device = Device::flex().autodiff();
        device.seed(seed);
        let model = ModelConfig {
            arch: Architecture::Conv {
                filters: [8, 4],
                kernel: 3,
            },
            channels: 2,
            window: 8,
            dropout: 0.1,
            batch_norm,
        }
        .init(&device)
        .unwrap();
        let cfg = TrainConfig {
            epochs: 8,
            batch_size: 8,
            learning_rate: 1e-2,
            weight_decay: 0.0,
            clip_grad_norm: Some(1.0),
            patience: 0,
            noise_sigma: 0.05,
            seed,
        };
        train(
            model,
            &sine_set(40, 2, 8, 0),
            &sine_set(10, 2, 8, 50),
            (2, 8),
            &cfg,
            &device,
            |_| {},
        )
        .unwrap()
    }

    #[test]
    fn loss_goes_down_and_runs_are_reproducible() {
        let a = run(7);
        assert_eq!(a.epochs_run, 8);
        assert!(a.train_loss[7] < a.train_loss[0], "{:?}", a.train_loss);
        let best = a.validation_loss[a.best_epoch - 1];
        assert!(a.validation_loss.iter().all(|v| *v >= best));
        let b = run(7);
        assert_eq!(a.train_loss, b.train_loss);
        assert_eq!(a.validation_loss, b.validation_loss);
        let c = run(8);
        assert_ne!(a.train_loss, c.train_loss);
    }

    /// The kept model is a snapshot: training on after the best epoch must
    /// not move it (a plain `clone()` would share batch-norm running
    /// statistics with the model still being trained).
    #[test]
    fn best_model_keeps_its_epoch_weights_and_batch_norm_statistics() {
        let a = run_with(3, true);
        assert!(a.best_epoch < a.epochs_run || a.epochs_run == 8);
        let val = sine_set(10, 2, 8, 50);
        let recon = reconstruct(&a.model, &val, (2, 8), &Device::flex()).unwrap();
        let loss = mse(&val.data, &recon) as f32;
        assert_eq!(loss, a.validation_loss[a.best_epoch - 1], "{a:?}");
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut v: Vec<usize> = (0..100).collect();
        SplitMix64(1).shuffle(&mut v);
        assert_ne!(v, (0..100).collect::<Vec<_>>());
        v.sort_unstable();
        assert_eq!(v, (0..100).collect::<Vec<_>>());
    }
}
