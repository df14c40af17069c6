//! `anomalyd-skab-score`: scores `anomalyd replay` outputs against the labels
//! of the logs they replayed (the SKAB benchmark, docs/architecture.md §11) and prints
//! the per-file table, the per-group and overall totals; optionally plots
//! one file. The metrics live in the library (`anomalyd_train::eval`).
//!
//! For each labelled log `DIR/GROUP/NAME.csv` given on the command line it
//! reads `--replays/GROUP_NAME.csv` (what `scripts/bench-skab.sh` writes).

use std::path::PathBuf;
use std::process::ExitCode;

use anomalyd_train::eval::{
    Confusion, FileResult, SKAB_LABEL_COLUMN, format_table, log_name, read_labels, read_replay,
    score_rows, summary_line,
};
use anyhow::{Context, bail};
use clap::Parser;

/// Scores replay outputs against labelled logs: confusion matrix, F1, FAR
/// and MAR per file, per group (folder) and in total (confusion summed over
/// files).
#[derive(Debug, Parser)]
#[command(name = "anomalyd-skab-score", version, about, max_term_width = 100)]
struct Args {
    /// Labelled logs (`GROUP/NAME.csv`, e.g. `skab/valve1/0.csv`), in the
    /// order of the table.
    #[arg(required = true, value_name = "LOG")]
    logs: Vec<PathBuf>,
    /// Folder with the replay outputs, one `GROUP_NAME.csv` per log.
    #[arg(long, value_name = "DIR")]
    replays: PathBuf,
    /// Score rows from this 0-based data row on (the rows before it trained
    /// the model).
    #[arg(long, value_name = "ROW", default_value_t = 400)]
    first_row: usize,
    /// Label column of the logs (non-zero = anomalous).
    #[arg(long, value_name = "NAME", default_value = SKAB_LABEL_COLUMN)]
    label_column: String,
    /// Draw one file's score, threshold, labels and alerts over time (PNG).
    #[arg(long, value_name = "PNG")]
    plot: Option<PathBuf>,
    /// The file to plot, as `GROUP/NAME` [default: the first log].
    #[arg(long, value_name = "GROUP/NAME", requires = "plot")]
    plot_file: Option<String>,
}

fn main() -> ExitCode {
    // First, while this is the only thread (docs/architecture.md §8).
    anomalyd::model::opt_out_of_telemetry();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let mut results: Vec<FileResult> = Vec::new();
    let mut groups: Vec<(String, Confusion)> = Vec::new();
    let mut plotted = false;
    for (i, log) in args.logs.iter().enumerate() {
        let (group, stem) = log_name(log)?;
        let name = format!("{group}/{stem}");
        let replay_path = args.replays.join(format!("{group}_{stem}.csv"));
        let labels = read_labels(log, &args.label_column)?;
        let replay = read_replay(&replay_path).with_context(|| format!("scoring {name}"))?;
        let confusion = score_rows(&labels, &replay, args.first_row)?;
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, c)) => *c = *c + confusion,
            None => groups.push((group.clone(), confusion)),
        }
        results.push(FileResult {
            name: name.clone(),
            confusion,
        });
        let wanted = args.plot_file.as_deref().map_or(i == 0, |p| p == name);
        if let (Some(png), true) = (&args.plot, wanted) {
            let title = format!(
                "{name}: score, threshold and labels (model trained on rows 0..{})",
                args.first_row
            );
            for w in
                anomalyd_train::report::plot_replay(png, &title, &labels, &replay, args.first_row)?
            {
                eprintln!("warning: {w}");
            }
            plotted = true;
        }
    }
    if let (Some(png), false) = (&args.plot, plotted) {
        bail!(
            "--plot {}: {} is not among the logs",
            png.display(),
            args.plot_file.as_deref().unwrap_or("?")
        );
    }
    print!("{}", format_table(&results));
    if groups.len() > 1 {
        for (group, c) in &groups {
            println!("{}", summary_line(group, c));
        }
    }
    let total: Confusion = results.iter().map(|r| r.confusion).sum();
    println!("{}", summary_line("all files", &total));
    if let Some(png) = &args.plot {
        println!("plot: {}", png.display());
    }
    Ok(())
}
