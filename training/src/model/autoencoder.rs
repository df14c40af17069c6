//! The burn autoencoders the trainer fits (a 1-D convolutional one like
//! SKAB's Conv-AE, and a dense one), and their conversion to the exporter's
//! [`NetworkSpec`] with batch normalisation folded into the preceding layer.
//!
//! Both take a window `[batch, C, T]` and return its reconstruction of the
//! same shape. Dropout is only active on an autodiff device in training mode,
//! so the exported graph (inference mode) has no dropout node at all.

use burn::module::Module;
use burn::nn::conv::{Conv1d, Conv1dConfig, ConvTranspose1d, ConvTranspose1dConfig};
use burn::nn::{
    BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig1d,
};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use crate::model::network::{Layer, NetworkSpec};

/// Errors in the model configuration or while reading weights back.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "the conv autoencoder needs a window divisible by 4 (two stride-2 convolutions), got --window {0}; try {1} or {2}"
    )]
    WindowNotDivisibleBy4(usize, usize, usize),
    #[error(
        "the conv autoencoder needs an odd --kernel so that padding kernel/2 keeps lengths exact, got {0}"
    )]
    EvenKernel(usize),
    #[error("--filters needs exactly two widths (encoder layer 1, layer 2), got {0:?}")]
    FilterCount(Vec<usize>),
    #[error("{name} must be at least 1, got {value}")]
    Zero { name: &'static str, value: usize },
    #[error("--dropout must be in [0, 1), got {0}")]
    Dropout(f64),
    #[error("could not read the weights of layer {layer}: {reason}")]
    Weights { layer: &'static str, reason: String },
}

/// Which network to build.
#[derive(Debug, Clone, PartialEq)]
pub enum Architecture {
    /// Conv1d(C->f1) ReLU -> Conv1d(f1->f2) ReLU -> ConvT(f2->f1) ReLU -> ConvT(f1->C),
    /// every layer kernel `kernel`, stride 2, padding `kernel/2`.
    Conv { filters: [usize; 2], kernel: usize },
    /// Flatten C*T -> hidden ReLU -> latent ReLU -> hidden ReLU -> C*T.
    Dense { hidden: usize, latent: usize },
}

impl Architecture {
    /// Short name stored in the model metadata (`conv` / `dense`).
    pub fn name(&self) -> &'static str {
        match self {
            Architecture::Conv { .. } => "conv",
            Architecture::Dense { .. } => "dense",
        }
    }

    /// Builds the conv architecture from the `--filters` list.
    ///
    /// # Errors
    /// Not exactly two widths.
    pub fn conv(filters: &[usize], kernel: usize) -> Result<Self, ModelError> {
        match filters {
            [f1, f2] => Ok(Architecture::Conv {
                filters: [*f1, *f2],
                kernel,
            }),
            other => Err(ModelError::FilterCount(other.to_vec())),
        }
    }
}

/// Everything needed to build a fresh network.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub arch: Architecture,
    pub channels: usize,
    pub window: usize,
    /// Dropout probability after the first and third activation (0 = none).
    pub dropout: f64,
    /// Batch normalisation after each of the first three layers (before ReLU).
    pub batch_norm: bool,
}

impl ModelConfig {
    /// Checks the sizes against each other.
    ///
    /// # Errors
    /// Names the offending option.
    pub fn validate(&self) -> Result<(), ModelError> {
        let positive = |name: &'static str, value: usize| {
            if value == 0 {
                Err(ModelError::Zero { name, value })
            } else {
                Ok(())
            }
        };
        positive("the number of channels", self.channels)?;
        positive("--window", self.window)?;
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(ModelError::Dropout(self.dropout));
        }
        match &self.arch {
            Architecture::Conv { filters, kernel } => {
                positive("--filters", filters[0])?;
                positive("--filters", filters[1])?;
                positive("--kernel", *kernel)?;
                if kernel % 2 == 0 {
                    return Err(ModelError::EvenKernel(*kernel));
                }
                if !self.window.is_multiple_of(4) || self.window < 4 {
                    let below = (self.window / 4 * 4).max(4);
                    return Err(ModelError::WindowNotDivisibleBy4(
                        self.window,
                        below,
                        below + 4,
                    ));
                }
            }
            Architecture::Dense { hidden, latent } => {
                positive("--hidden", *hidden)?;
                positive("--latent", *latent)?;
            }
        }
        Ok(())
    }

    /// Builds a freshly initialised network on `device` (seed the device
    /// first for reproducible weights).
    ///
    /// # Errors
    /// An invalid configuration (see [`ModelConfig::validate`]).
    pub fn init(&self, device: &Device) -> Result<Autoencoder, ModelError> {
        self.validate()?;
        let bn = |features: usize| {
            self.batch_norm
                .then(|| BatchNormConfig::new(features).init(device))
        };
        let dropout = DropoutConfig::new(self.dropout).init();
        Ok(match &self.arch {
            Architecture::Conv { filters, kernel } => {
                let [f1, f2] = *filters;
                let k = *kernel;
                let conv = |cin: usize, cout: usize| {
                    Conv1dConfig::new(cin, cout, k)
                        .with_stride(2)
                        .with_padding(PaddingConfig1d::Explicit(k / 2, k / 2))
                        .init(device)
                };
                let deconv = |cin: usize, cout: usize| {
                    ConvTranspose1dConfig::new([cin, cout], k)
                        .with_stride(2)
                        .with_padding(k / 2)
                        .with_padding_out(1)
                        .init(device)
                };
                Autoencoder::Conv(ConvAutoencoder {
                    enc1: conv(self.channels, f1),
                    bn1: bn(f1),
                    enc2: conv(f1, f2),
                    bn2: bn(f2),
                    dec1: deconv(f2, f1),
                    bn3: bn(f1),
                    dec2: deconv(f1, self.channels),
                    dropout,
                })
            }
            Architecture::Dense { hidden, latent } => {
                let io = self.channels * self.window;
                let linear = |i: usize, o: usize| LinearConfig::new(i, o).init(device);
                Autoencoder::Dense(DenseAutoencoder {
                    enc1: linear(io, *hidden),
                    bn1: bn(*hidden),
                    enc2: linear(*hidden, *latent),
                    bn2: bn(*latent),
                    dec1: linear(*latent, *hidden),
                    bn3: bn(*hidden),
                    dec2: linear(*hidden, io),
                    dropout,
                })
            }
        })
    }
}

/// The 1-D convolutional autoencoder.
#[derive(Module, Debug)]
pub struct ConvAutoencoder {
    enc1: Conv1d,
    bn1: Option<BatchNorm>,
    enc2: Conv1d,
    bn2: Option<BatchNorm>,
    dec1: ConvTranspose1d,
    bn3: Option<BatchNorm>,
    dec2: ConvTranspose1d,
    dropout: Dropout,
}

/// The dense autoencoder on the flattened window.
#[derive(Module, Debug)]
pub struct DenseAutoencoder {
    enc1: Linear,
    bn1: Option<BatchNorm>,
    enc2: Linear,
    bn2: Option<BatchNorm>,
    dec1: Linear,
    bn3: Option<BatchNorm>,
    dec2: Linear,
    dropout: Dropout,
}

/// Either network, so the training loop is written once. (One lives at a
/// time; the size difference between the variants does not matter.)
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Autoencoder {
    Conv(ConvAutoencoder),
    Dense(DenseAutoencoder),
}

fn maybe_bn<const D: usize>(bn: &Option<BatchNorm>, x: Tensor<D>) -> Tensor<D> {
    match bn {
        Some(bn) => bn.forward(x),
        None => x,
    }
}

impl Autoencoder {
    /// Reconstructs a batch of windows `[batch, C, T]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        match self {
            Autoencoder::Conv(m) => {
                let h = relu(maybe_bn(&m.bn1, m.enc1.forward(x)));
                let h = m.dropout.forward(h);
                let h = relu(maybe_bn(&m.bn2, m.enc2.forward(h)));
                let h = relu(maybe_bn(&m.bn3, m.dec1.forward(h)));
                let h = m.dropout.forward(h);
                m.dec2.forward(h)
            }
            Autoencoder::Dense(m) => {
                let [b, c, t] = x.dims();
                let flat: Tensor<2> = x.reshape([b, c * t]);
                let h = relu(maybe_bn(&m.bn1, m.enc1.forward(flat)));
                let h = m.dropout.forward(h);
                let h = relu(maybe_bn(&m.bn2, m.enc2.forward(h)));
                let h = relu(maybe_bn(&m.bn3, m.dec1.forward(h)));
                let h = m.dropout.forward(h);
                m.dec2.forward(h).reshape([b, c, t])
            }
        }
    }

    /// The network as plain weights in ONNX layout, with batch
    /// normalisation folded into the layer before it:
    /// `W' = W * gamma / sqrt(var + eps)` along the output channels and
    /// `b' = (b - mean) * gamma / sqrt(var + eps) + beta`.
    ///
    /// # Errors
    /// A weight tensor that cannot be read back from the device.
    pub fn to_network_spec(
        &self,
        channels: usize,
        window: usize,
        channel_weights: Vec<f32>,
        centered: Vec<bool>,
    ) -> Result<NetworkSpec, ModelError> {
        let layers = match self {
            Autoencoder::Conv(m) => vec![
                conv_layer("enc1", &m.enc1, m.bn1.as_ref())?,
                Layer::Relu,
                conv_layer("enc2", &m.enc2, m.bn2.as_ref())?,
                Layer::Relu,
                deconv_layer("dec1", &m.dec1, m.bn3.as_ref())?,
                Layer::Relu,
                deconv_layer("dec2", &m.dec2, None)?,
            ],
            Autoencoder::Dense(m) => vec![
                dense_layer("enc1", &m.enc1, m.bn1.as_ref())?,
                Layer::Relu,
                dense_layer("enc2", &m.enc2, m.bn2.as_ref())?,
                Layer::Relu,
                dense_layer("dec1", &m.dec1, m.bn3.as_ref())?,
                Layer::Relu,
                dense_layer("dec2", &m.dec2, None)?,
            ],
        };
        Ok(NetworkSpec {
            channels,
            window,
            layers,
            channel_weights,
            centered,
            channel_error: crate::model::network::ChannelError::Mse,
            aggregation: crate::model::network::Aggregation::Mean,
        })
    }

    /// Number of trainable parameters (for the log and the report).
    pub fn parameter_count(&self) -> usize {
        self.num_params()
    }
}

/// Reads a tensor's values as `f32`, row-major.
fn read<const D: usize>(layer: &'static str, t: Tensor<D>) -> Result<Vec<f32>, ModelError> {
    let reason = |e: &dyn std::fmt::Display| ModelError::Weights {
        layer,
        reason: e.to_string(),
    };
    t.try_into_data()
        .map_err(|e| reason(&e))?
        .try_into_vec_as::<f32>()
        .map_err(|e| reason(&format!("{e:?}")))
}

/// Per-output-channel scale and shift of a batch norm in inference mode.
fn bn_affine(layer: &'static str, bn: &BatchNorm) -> Result<(Vec<f32>, Vec<f32>), ModelError> {
    let gamma = read(layer, bn.gamma.val())?;
    let beta = read(layer, bn.beta.val())?;
    let mean = read(layer, bn.running_mean.value())?;
    let var = read(layer, bn.running_var.value())?;
    let eps = bn.epsilon;
    let scale: Vec<f32> = gamma
        .iter()
        .zip(&var)
        .map(|(g, v)| (f64::from(*g) / (f64::from(*v) + eps).sqrt()) as f32)
        .collect();
    let shift = scale
        .iter()
        .zip(mean.iter().zip(&beta))
        .map(|(s, (m, b))| b - m * s)
        .collect();
    Ok((scale, shift))
}

/// Folds `bn` (if any) into weights whose output channel index is
/// `(i / inner) % outputs` for flat index `i`, and into the bias.
fn fold(
    layer: &'static str,
    weight: &mut [f32],
    bias: &mut [f32],
    bn: Option<&BatchNorm>,
    outputs: usize,
    inner: usize,
) -> Result<(), ModelError> {
    let Some(bn) = bn else { return Ok(()) };
    let (scale, shift) = bn_affine(layer, bn)?;
    for (i, w) in weight.iter_mut().enumerate() {
        *w *= scale[(i / inner) % outputs];
    }
    for (o, b) in bias.iter_mut().enumerate() {
        // (b - mean) * s + beta == b * s + (beta - mean * s)
        *b = *b * scale[o] + shift[o];
    }
    Ok(())
}

fn bias_or_zero(
    layer: &'static str,
    bias: Option<&burn::module::Param<Tensor<1>>>,
    outputs: usize,
) -> Result<Vec<f32>, ModelError> {
    match bias {
        Some(b) => read(layer, b.val()),
        None => Ok(vec![0.0; outputs]),
    }
}

fn conv_layer(
    layer: &'static str,
    conv: &Conv1d,
    bn: Option<&BatchNorm>,
) -> Result<Layer, ModelError> {
    // burn's Conv1d weight is `[out, in, kernel]`, the ONNX Conv layout.
    let [out_channels, in_channels, kernel] = conv.weight.dims();
    let mut weight = read(layer, conv.weight.val())?;
    let mut bias = bias_or_zero(layer, conv.bias.as_ref(), out_channels)?;
    fold(
        layer,
        &mut weight,
        &mut bias,
        bn,
        out_channels,
        in_channels * kernel,
    )?;
    let padding = match conv.padding {
        PaddingConfig1d::Explicit(left, _) => left,
        _ => kernel / 2,
    };
    Ok(Layer::Conv1d {
        in_channels,
        out_channels,
        kernel,
        stride: conv.stride,
        padding,
        weight,
        bias,
    })
}

fn deconv_layer(
    layer: &'static str,
    conv: &ConvTranspose1d,
    bn: Option<&BatchNorm>,
) -> Result<Layer, ModelError> {
    // burn's ConvTranspose1d weight is `[in, out, kernel]`, the ONNX
    // ConvTranspose layout: the output channel is the middle index.
    let [in_channels, out_channels, kernel] = conv.weight.dims();
    let mut weight = read(layer, conv.weight.val())?;
    let mut bias = bias_or_zero(layer, conv.bias.as_ref(), out_channels)?;
    fold(layer, &mut weight, &mut bias, bn, out_channels, kernel)?;
    Ok(Layer::ConvTranspose1d {
        in_channels,
        out_channels,
        kernel,
        stride: conv.stride,
        padding: conv.padding,
        output_padding: conv.padding_out,
        weight,
        bias,
    })
}

fn dense_layer(
    layer: &'static str,
    linear: &Linear,
    bn: Option<&BatchNorm>,
) -> Result<Layer, ModelError> {
    // burn's Linear weight is `[in, out]` (y = x W + b), as NetworkSpec wants.
    let [inputs, outputs] = linear.weight.dims();
    let mut weight = read(layer, linear.weight.val())?;
    let mut bias = bias_or_zero(layer, linear.bias.as_ref(), outputs)?;
    fold(layer, &mut weight, &mut bias, bn, outputs, 1)?;
    Ok(Layer::Dense {
        inputs,
        outputs,
        weight,
        bias,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn device() -> Device {
        Device::flex()
    }

    fn conv_config(batch_norm: bool) -> ModelConfig {
        ModelConfig {
            arch: Architecture::Conv {
                filters: [4, 3],
                kernel: 5,
            },
            channels: 2,
            window: 8,
            dropout: 0.2,
            batch_norm,
        }
    }

    #[test]
    fn conv_keeps_the_window_shape() {
        let d = device();
        let m = conv_config(false).init(&d).unwrap();
        let x = Tensor::<3>::zeros([3, 2, 8], &d);
        assert_eq!(m.forward(x).dims(), [3, 2, 8]);
    }

    #[test]
    fn dense_keeps_the_window_shape() {
        let d = device();
        let cfg = ModelConfig {
            arch: Architecture::Dense {
                hidden: 6,
                latent: 2,
            },
            ..conv_config(true)
        };
        let m = cfg.init(&d).unwrap();
        let x = Tensor::<3>::zeros([3, 2, 8], &d);
        assert_eq!(m.forward(x).dims(), [3, 2, 8]);
    }

    #[test]
    fn rejects_bad_sizes_with_a_clear_message() {
        let mut cfg = conv_config(false);
        cfg.window = 10;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("divisible by 4") && err.contains("8 or 12"),
            "{err}"
        );
        let mut cfg = conv_config(false);
        cfg.arch = Architecture::Conv {
            filters: [4, 3],
            kernel: 4,
        };
        assert!(cfg.validate().unwrap_err().to_string().contains("odd"));
        assert!(Architecture::conv(&[1, 2, 3], 7).is_err());
    }

    fn check_spec_matches_burn(cfg: ModelConfig) {
        let _turn = crate::model::train::rng_turn();
        let d = device();
        d.seed(3);
        let ad = d.clone().autodiff();
        let model = cfg.init(&ad).unwrap();
        let (c, t) = (cfg.channels, cfg.window);
        let xs: Vec<f32> = (0..4 * c * t)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) / 3.0)
            .collect();
        // A few training-mode passes so batch-norm running stats are not trivial.
        for _ in 0..3 {
            let x = Tensor::<3>::from_data(TensorData::new(xs.clone(), [4, c, t]), &ad);
            let _ = model.forward(x);
        }
        let model = model.valid();
        let x = Tensor::<3>::from_data(TensorData::new(xs.clone(), [4, c, t]), &d);
        let y = model.forward(x).into_data().try_into_vec::<f32>().unwrap();
        // The exporter's plain-loop forward pass computes what the ONNX graph
        // computes: this checks weight layouts and batch-norm folding
        // without ONNX Runtime.
        let spec = model.to_network_spec(c, t, vec![1.0; c], vec![]).unwrap();
        let r = crate::export::reference_forward(&spec, &xs, 4).unwrap();
        for (i, (a, b)) in r.iter().zip(&y).enumerate() {
            assert!((a - b).abs() < 1e-4, "value {i}: {a} vs {b}");
        }
    }

    #[test]
    fn conv_spec_matches_burn_with_and_without_batch_norm() {
        check_spec_matches_burn(conv_config(false));
        check_spec_matches_burn(conv_config(true));
    }

    #[test]
    fn dense_spec_matches_burn_with_and_without_batch_norm() {
        for bn in [false, true] {
            check_spec_matches_burn(ModelConfig {
                arch: Architecture::Dense {
                    hidden: 5,
                    latent: 3,
                },
                batch_norm: bn,
                ..conv_config(false)
            });
        }
    }
}
