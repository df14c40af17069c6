//! What a run prints while it goes: the data and centering summaries, the
//! threshold and how it was found, and per-epoch progress on stderr.

use std::io::IsTerminal;

use anomalyd::core::contract::ErrorDistribution;
use indicatif::{ProgressBar, ProgressStyle};

use crate::calibrate::Calibration;
use crate::calibrate::target::QuantileSource;
use crate::data::Dataset;
use crate::model::train::EpochStats;

fn distribution_name(d: &ErrorDistribution) -> String {
    match d {
        ErrorDistribution::Gamma { shape, rate } => {
            format!("gamma(shape {shape:.3}, rate {rate:.3})")
        }
        ErrorDistribution::LogNormal { location, scale } => {
            format!("log-normal(location {location:.3}, scale {scale:.3})")
        }
    }
}

/// The threshold, how it was chosen, and (for a target FAR) the expected
/// and observed false-alarm rates on the calibration windows.
pub(super) fn print_threshold(c: &Calibration, smoothing: f32) {
    let ks = c
        .candidates
        .iter()
        .find(|q| q.distribution == c.distribution)
        .map_or(f64::NAN, |q| q.ks);
    let smoothed = if smoothing < 1.0 {
        format!(" smoothed with weight {smoothing}")
    } else {
        String::new()
    };
    let t = &c.threshold;
    match &c.far {
        Some(far) => {
            let how = match (far.source, &far.tail) {
                (QuantileSource::TailFit, Some(tail)) => format!(
                    "generalised Pareto tail (shape {:.3}, scale {:.3e}, {} of {} above {:.3e})",
                    tail.shape, tail.scale, tail.exceedances, tail.n, tail.u
                ),
                (QuantileSource::Conformal, _) => "split-conformal order statistic".into(),
                _ => "largest value (too few for a tail fit)".into(),
            };
            println!(
                "threshold {:.6} (target-far {:.2} %: quantile {} of the alarm statistic over {} calibration windows (out-of-fold and validation){}, from the {how}, x {:.3})",
                t.value,
                far.target_far * 100.0,
                t.quantile,
                far.windows,
                smoothed,
                t.factor
            );
            println!(
                "false alarms on the calibration windows: expected <= {:.2} %, observed {:.2} % (the detector replayed), {:.2} % of windows above the threshold",
                far.expected_far * 100.0,
                far.observed_far * 100.0,
                far.observed_exceedance * 100.0
            );
        }
        None => println!(
            "threshold {:.6} ({} = quantile {} of {} validation scores{} x {}); {:.2} % of validation windows above",
            t.value,
            t.method,
            t.quantile,
            c.windows,
            smoothed,
            t.factor,
            c.above_threshold * 100.0
        ),
    }
    println!(
        "error distribution {} (KS {ks:.3})",
        distribution_name(&c.distribution)
    );
}

pub(super) fn print_data_summary(data: &Dataset) {
    let boundary: usize = data.inputs.iter().map(|i| i.boundary_windows_dropped).sum();
    println!(
        "data: {} input(s), {} rows, {} channels ({}), sample period {} ms",
        data.inputs.len(),
        data.rows,
        data.channels.len(),
        data.channels.join(", "),
        data.sample_period_ms
    );
    println!(
        "windows: {} training, {} validation ({} between them dropped so the parts share no row), window {}, stride {}",
        data.train.len(),
        data.validation.len(),
        boundary,
        data.window,
        data.stride
    );
}

/// One line on what was centered and why: level ratio, and drift when the
/// validation part was long enough to measure it.
pub(super) fn print_centering(
    channels: &[String],
    ratios: &[f64],
    drifts: Option<&[f64]>,
    centered: &[bool],
) {
    let describe = |c: usize| match drifts {
        Some(d) => format!(
            "{} (level ratio {:.2}, drift {:.0} %)",
            channels[c],
            ratios[c],
            d[c] * 100.0
        ),
        None => format!("{} (level ratio {:.2})", channels[c], ratios[c]),
    };
    let list: Vec<String> = (0..channels.len())
        .filter(|c| centered[*c])
        .map(describe)
        .collect();
    if list.is_empty() {
        println!("centering: none (every channel is scored on its level too)");
    } else {
        println!(
            "centering: {} scored on their shape within each window",
            list.join(", ")
        );
    }
}

/// Per-epoch progress on stderr: a bar on a terminal, else one line per
/// epoch (logs and CI stay readable).
pub(super) struct EpochProgress {
    bar: Option<ProgressBar>,
}

impl EpochProgress {
    pub(super) fn new(epochs: usize) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self { bar: None };
        }
        let bar = ProgressBar::new(epochs as u64);
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix} {pos:>3}/{len} [{bar:20.cyan/blue}] {elapsed:>4} {wide_msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix("epoch");
        Self { bar: Some(bar) }
    }

    pub(super) fn epoch(&self, e: &EpochStats) {
        let line = format!(
            "train loss {:.5}  val loss {:.5}{}",
            e.train_loss,
            e.validation_loss,
            if e.improved { "  (best)" } else { "" }
        );
        match &self.bar {
            Some(bar) => {
                bar.set_message(line);
                bar.inc(1);
            }
            None => eprintln!(
                "epoch {:>3}: {line} [{:.2} s]",
                e.epoch,
                e.elapsed.as_secs_f64()
            ),
        }
    }

    pub(super) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
