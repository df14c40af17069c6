//! What a run prints while it goes: the data and centering summaries, the
//! error distribution's name, and per-epoch progress on stderr.

use std::io::IsTerminal;

use anomalyd::core::contract::ErrorDistribution;
use indicatif::{ProgressBar, ProgressStyle};

use crate::data::Dataset;
use crate::model::train::EpochStats;

pub(super) fn distribution_name(d: &ErrorDistribution) -> String {
    match d {
        ErrorDistribution::Gamma { shape, rate } => {
            format!("gamma(shape {shape:.3}, rate {rate:.3})")
        }
        ErrorDistribution::LogNormal { location, scale } => {
            format!("log-normal(location {location:.3}, scale {scale:.3})")
        }
    }
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
