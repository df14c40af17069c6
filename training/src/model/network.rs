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
    /// `anomalyd::core::contract::ScoreDefinition`); not yet normalised to sum 1.
    pub channel_weights: Vec<f32>,
    /// Per channel: subtract its mean over the window before the network
    /// (empty: no channel is centered).
    pub centered: Vec<bool>,
    /// How the residual becomes `channel_error`.
    pub channel_error: ChannelError,
    /// How the weighted channel errors become `score`.
    pub aggregation: Aggregation,
}

impl NetworkSpec {
    /// The same network with another score definition.
    pub fn with_score(self, channel_error: ChannelError, aggregation: Aggregation) -> Self {
        Self {
            channel_error,
            aggregation,
            ..self
        }
    }
}

/// How the graph turns the residual `x - r` (per channel, over the window)
/// into `channel_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelError {
    /// `mean_t (x - r)^2` over the whole window.
    Mse,
    /// `(mean of x - r over the window's last frames)^2`: how far the newest
    /// frames sit from what the model expects there, with the noise of
    /// single frames averaged out. A change that has just started shows
    /// here before it can move an error averaged over the whole window.
    RecentBias { frames: usize },
    /// `mean_t (x - r)^2` over the window's last frames: the recent bias
    /// squared plus the spread of the residual around it, so a channel
    /// that starts to fluctuate more (a process whose dynamics changed, a
    /// loop that oscillates) counts as well as one that moved.
    RecentMse { frames: usize },
}

impl ChannelError {
    /// The window's last frames the error looks at (`None`: all of them).
    pub fn recent_frames(self) -> Option<usize> {
        match self {
            ChannelError::Mse => None,
            ChannelError::RecentBias { frames } | ChannelError::RecentMse { frames } => {
                Some(frames)
            }
        }
    }

    /// The `<error>` part of `ScoreDefinition::kind`.
    pub fn name(self) -> &'static str {
        match self {
            ChannelError::Mse => "mse",
            ChannelError::RecentBias { .. } => "recent_bias",
            ChannelError::RecentMse { .. } => "recent_mse",
        }
    }
}

/// How the graph combines the weighted channel errors into `score`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Aggregation {
    /// Weighted mean over the channels.
    Mean,
    /// Largest weighted channel error: one channel going wrong is enough.
    #[default]
    Max,
}

impl Aggregation {
    /// The `<aggregation>` part of `ScoreDefinition::kind`.
    pub fn name(self) -> &'static str {
        match self {
            Aggregation::Mean => "weighted",
            Aggregation::Max => "weighted_max",
        }
    }
}

/// `ScoreDefinition::kind` for an error and an aggregation, e.g.
/// `weighted_mse` (the original score) or `weighted_max_recent_bias`.
pub fn score_kind(error: ChannelError, aggregation: Aggregation) -> String {
    format!("{}_{}", aggregation.name(), error.name())
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
