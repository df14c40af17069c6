//! The exporter's view of a trained network: plain weights in ONNX layout,
//! independent of the deep-learning library that produced them.

/// A feed-forward autoencoder as a list of layers applied to the input
/// window `[batch, channels, window]`.
///
/// If the first layer is [`Layer::Dense`], the input is flattened to
/// `[batch, channels * window]` first; the last layer's output is reshaped
/// to `[batch, channels, window]` to form the reconstruction.
///
/// Channels flagged in `centered` have their mean over the window subtracted
/// first (see `crate::centering`); the network then reconstructs, and the
/// error compares against, the centered window.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkSpec {
    pub channels: usize,
    pub window: usize,
    pub layers: Vec<Layer>,
    /// Weights of the per-channel errors in the score (see
    /// `anomalyd::metadata::ScoreDefinition`); not yet normalised to sum 1.
    pub channel_weights: Vec<f32>,
    /// Per channel: subtract its mean over the window before the network
    /// (empty: no channel is centered).
    pub centered: Vec<bool>,
}

/// One layer, weights row-major in ONNX layout.
#[derive(Debug, Clone, PartialEq)]
pub enum Layer {
    /// ONNX `Conv`: weight `[out_channels, in_channels, kernel]`, bias `[out_channels]`.
    Conv1d {
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        weight: Vec<f32>,
        bias: Vec<f32>,
    },
    /// ONNX `ConvTranspose`: weight `[in_channels, out_channels, kernel]`, bias `[out_channels]`.
    ConvTranspose1d {
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        output_padding: usize,
        weight: Vec<f32>,
        bias: Vec<f32>,
    },
    /// `y = x W + b`, weight `[inputs, outputs]`, bias `[outputs]` (ONNX `Gemm`).
    Dense {
        inputs: usize,
        outputs: usize,
        weight: Vec<f32>,
        bias: Vec<f32>,
    },
    Relu,
}
