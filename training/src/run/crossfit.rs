//! Cross-fitted calibration scores (docs/far-calibration.md §2): the
//! training windows of each input are cut into `folds` stretches of time;
//! for each stretch a model of the same configuration is trained on the
//! windows that share no row with it, and scores it. These out-of-fold
//! scores, with the final model's scores of the validation windows, are
//! what the threshold is calibrated on: many more windows than the
//! validation part alone, from every stretch of the log, each scored by a
//! model that never saw it.

use burn::tensor::Device;

use super::preflight::model_config;
use super::{RunError, TrainOptions};
use crate::calibrate;
use crate::data::{Dataset, WindowSet};
use crate::model::train;

/// Scores and per-window stretch ids (for restarting the smoothing) of the
/// calibration windows.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct CalibrationScores {
    pub scores: Vec<f32>,
    pub stretches: Vec<usize>,
}

impl CalibrationScores {
    fn extend(&mut self, scores: &[f32], sources: &[usize]) {
        // Each new (call, source) pair is a stretch of its own.
        let base = self.stretches.iter().max().map_or(0, |m| m + 1);
        self.scores.extend_from_slice(scores);
        self.stretches.extend(sources.iter().map(|s| base + s));
    }
}

/// For each fold, which training windows it holds out and which train its
/// model: per input, positions `[k n / folds, (k + 1) n / folds)` are held
/// out, and the model trains on the windows at least `gap` positions away
/// from them (windows closer share rows).
pub(super) fn fold_plan(
    sources: &[usize],
    folds: usize,
    gap: usize,
) -> Vec<(Vec<usize>, Vec<usize>)> {
    let mut by_source: Vec<(usize, Vec<usize>)> = Vec::new();
    for (i, s) in sources.iter().enumerate() {
        match by_source.iter_mut().find(|(src, _)| src == s) {
            Some((_, v)) => v.push(i),
            None => by_source.push((*s, vec![i])),
        }
    }
    (0..folds)
        .map(|k| {
            let mut held = Vec::new();
            let mut fit = Vec::new();
            for (_, idx) in &by_source {
                let n = idx.len();
                let (start, end) = (k * n / folds, (k + 1) * n / folds);
                for (p, &i) in idx.iter().enumerate() {
                    if (start..end).contains(&p) {
                        held.push(i);
                    } else if p + gap <= start || p + 1 >= end + gap {
                        fit.push(i);
                    }
                }
            }
            (held, fit)
        })
        .filter(|(held, fit)| !held.is_empty() && !fit.is_empty())
        .collect()
}

fn subset(set: &WindowSet, idx: &[usize], per_window: usize) -> WindowSet {
    let mut out = WindowSet::default();
    for &i in idx {
        out.data
            .extend_from_slice(&set.data[i * per_window..(i + 1) * per_window]);
        out.end_ts.push(set.end_ts[i]);
        out.source.push(set.source[i]);
    }
    out
}

/// The out-of-fold scores of the training windows (one extra model per
/// fold, seeded `seed + 1 + fold`), then `validation_scores` (the final
/// model's), with the score definition of the final model (`weights`).
pub(super) fn calibration_scores(
    opts: &TrainOptions,
    data: &Dataset,
    device: &Device,
    weights: &[f32],
    validation_scores: &[f32],
) -> Result<CalibrationScores, RunError> {
    let (c, t) = (data.channels.len(), data.window);
    let mut out = CalibrationScores::default();
    if opts.calibration_folds >= 2 {
        let gap = t.div_ceil(data.stride.max(1));
        for (k, (held, fit)) in fold_plan(&data.train.source, opts.calibration_folds, gap)
            .into_iter()
            .enumerate()
        {
            let fit_set = subset(&data.train, &fit, c * t);
            let held_set = subset(&data.train, &held, c * t);
            device.seed(opts.train.seed.wrapping_add(1 + k as u64));
            let autodiff = device.clone().autodiff();
            let model = model_config(opts, c).init(&autodiff)?;
            let outcome = train::train(
                model,
                &fit_set,
                &data.validation,
                (c, t),
                &opts.train,
                &autodiff,
                |_| {},
            )?;
            let recon = train::reconstruct(&outcome.model, &held_set, (c, t), device)?;
            let errors = calibrate::channel_errors(&held_set.data, &recon, t, opts.channel_error);
            let scores = calibrate::scores(&errors, weights, opts.aggregation);
            out.extend(&scores, &held_set.source);
        }
    }
    out.extend(validation_scores, &data.validation.source);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_hold_out_stretches_and_train_on_windows_sharing_no_row() {
        // One input, 10 windows, 2 folds, windows closer than 2 share rows.
        let plan = fold_plan(&[0; 10], 2, 2);
        assert_eq!(plan.len(), 2);
        assert_eq!(plan[0].0, vec![0, 1, 2, 3, 4]);
        assert_eq!(plan[0].1, vec![6, 7, 8, 9]);
        assert_eq!(plan[1].0, vec![5, 6, 7, 8, 9]);
        assert_eq!(plan[1].1, vec![0, 1, 2, 3]);
        // Two inputs: each is cut on its own.
        let plan = fold_plan(&[0, 0, 0, 0, 1, 1, 1, 1], 2, 1);
        assert_eq!(plan[0].0, vec![0, 1, 4, 5]);
        assert_eq!(plan[0].1, vec![2, 3, 6, 7]);
        // A gap that swallows everything leaves no fold.
        assert!(fold_plan(&[0; 4], 2, 10).is_empty());
    }

    #[test]
    fn each_stretch_restarts_the_smoothing() {
        let mut s = CalibrationScores::default();
        s.extend(&[1.0, 2.0, 3.0], &[0, 0, 1]);
        s.extend(&[4.0], &[0]);
        assert_eq!(s.stretches, vec![0, 0, 1, 2]);
        assert_eq!(s.scores, vec![1.0, 2.0, 3.0, 4.0]);
    }
}
