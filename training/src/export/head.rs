//! The fragments around the network: centering the input window, and the
//! score head that turns the residual into `channel_error` and `score`
//! (the model file's `ScoreDefinition`).

use anomalyd::core::contract::{
    INPUT_WINDOW, OUTPUT_CHANNEL_ERROR, OUTPUT_RECONSTRUCTION, OUTPUT_SCORE,
};

use crate::model::network::{Aggregation, ChannelError, NetworkSpec};

use super::graph::{GraphBuilder, attr_int, attr_ints, dim};

/// The network's input, and what the reconstruction is compared with: the
/// window, with the centered channels' window means subtracted (the window
/// itself when no channel is centered).
pub(super) fn center_input(g: &mut GraphBuilder, centered: &[bool], c: i64) -> String {
    if centered.iter().any(|b| *b) {
        let mask: Vec<f32> = centered
            .iter()
            .map(|b| if *b { 1.0 } else { 0.0 })
            .collect();
        g.init_f32("center.mask", &[c, 1], &mask);
        g.node(
            "ReduceMean",
            "center.mean",
            &[INPUT_WINDOW],
            "center.mean",
            vec![attr_ints("axes", vec![2]), attr_int("keepdims", 1)],
        );
        g.node(
            "Mul",
            "center.masked_mean",
            &["center.mean", "center.mask"],
            "center.masked_mean",
            vec![],
        );
        g.node(
            "Sub",
            "center.window",
            &[INPUT_WINDOW, "center.masked_mean"],
            "center.window",
            vec![],
        );
        "center.window".to_owned()
    } else {
        INPUT_WINDOW.to_owned()
    }
}

/// `channel_error` from the residual (network input - reconstruction),
/// `score` from the weighted channel errors.
pub(super) fn emit_score(
    g: &mut GraphBuilder,
    spec: &NetworkSpec,
    network_input: &str,
    (c, t): (i64, i64),
) {
    g.node(
        "Sub",
        "score.diff",
        &[network_input, OUTPUT_RECONSTRUCTION],
        "score.diff",
        vec![],
    );
    match spec.channel_error {
        ChannelError::Mse => {
            g.node(
                "Mul",
                "score.squared",
                &["score.diff", "score.diff"],
                "score.squared",
                vec![],
            );
            g.node(
                "ReduceMean",
                "score.channel_error",
                &["score.squared"],
                OUTPUT_CHANNEL_ERROR,
                vec![attr_ints("axes", vec![2]), attr_int("keepdims", 0)],
            );
        }
        ChannelError::RecentBias { frames } => {
            slice_recent(g, frames, t);
            g.node(
                "ReduceMean",
                "score.bias",
                &["score.recent"],
                "score.bias",
                vec![attr_ints("axes", vec![2]), attr_int("keepdims", 0)],
            );
            g.node(
                "Mul",
                "score.channel_error",
                &["score.bias", "score.bias"],
                OUTPUT_CHANNEL_ERROR,
                vec![],
            );
        }
        ChannelError::RecentMse { frames } => {
            slice_recent(g, frames, t);
            g.node(
                "Mul",
                "score.squared",
                &["score.recent", "score.recent"],
                "score.squared",
                vec![],
            );
            g.node(
                "ReduceMean",
                "score.channel_error",
                &["score.squared"],
                OUTPUT_CHANNEL_ERROR,
                vec![attr_ints("axes", vec![2]), attr_int("keepdims", 0)],
            );
        }
    }
    match spec.aggregation {
        Aggregation::Mean => {
            let weights = normalised_weights(&spec.channel_weights);
            g.init_f32("score.channel_weights", &[c], &weights);
            g.node(
                "MatMul",
                "score.weighted_mean",
                &[OUTPUT_CHANNEL_ERROR, "score.channel_weights"],
                OUTPUT_SCORE,
                vec![],
            );
        }
        Aggregation::Max => {
            g.init_f32("score.channel_weights", &[c], &spec.channel_weights);
            g.node(
                "Mul",
                "score.weighted",
                &[OUTPUT_CHANNEL_ERROR, "score.channel_weights"],
                "score.weighted",
                vec![],
            );
            g.node(
                "ReduceMax",
                "score.weighted_max",
                &["score.weighted"],
                OUTPUT_SCORE,
                vec![attr_ints("axes", vec![1]), attr_int("keepdims", 0)],
            );
        }
    }
}

/// `score.recent`: the residual's last `frames` frames.
fn slice_recent(g: &mut GraphBuilder, frames: usize, t: i64) {
    g.init_i64("score.recent.starts", &[1], &[t - dim(frames)]);
    g.init_i64("score.recent.ends", &[1], &[t]);
    g.init_i64("score.recent.axes", &[1], &[2]);
    g.node(
        "Slice",
        "score.recent",
        &[
            "score.diff",
            "score.recent.starts",
            "score.recent.ends",
            "score.recent.axes",
        ],
        "score.recent",
        vec![],
    );
}

/// `channel_weights / sum(channel_weights)`, the vector the graph's `score`
/// multiplies `channel_error` with.
pub fn normalised_weights(channel_weights: &[f32]) -> Vec<f32> {
    let sum: f64 = channel_weights.iter().map(|w| f64::from(*w)).sum();
    channel_weights
        .iter()
        .map(|w| (f64::from(*w) / sum) as f32)
        .collect()
}
