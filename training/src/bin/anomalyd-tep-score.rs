//! `anomalyd-tep-score`: scores `anomalyd replay` outputs of the Tennessee
//! Eastman test files against their labels (docs/architecture.md §11) and
//! prints the per-fault detection rate, the mean FDR without the
//! undetectable faults, and the false-alarm rate; optionally plots one
//! file. The metrics live in the library (`anomalyd_train::eval::tep`).
//!
//! For each labelled log `DIR/dXX_te.csv` given on the command line it
//! reads `--replays/dXX_te.csv` (what `scripts/bench-tep.sh` writes).

use std::path::PathBuf;
use std::process::ExitCode;

use anomalyd_train::eval::tep::{
    FaultRun, UNDETECTABLE_FAULTS, fault_number, format_tep, summarise,
};
use anomalyd_train::eval::{SKAB_LABEL_COLUMN, read_labels, read_replay, score_rows};
use anyhow::{Context, bail};
use clap::Parser;

/// Scores replay outputs of the Tennessee Eastman test files: FDR per
/// fault, mean FDR, FAR over every normal row.
#[derive(Debug, Parser)]
#[command(name = "anomalyd-tep-score", version, about, max_term_width = 100)]
struct Args {
    /// Labelled test logs (`dXX_te.csv`, XX the fault number, 00 normal
    /// operation), in the order of the table.
    #[arg(required = true, value_name = "LOG")]
    logs: Vec<PathBuf>,
    /// Folder with the replay outputs, one per log under the log's file name.
    #[arg(long, value_name = "DIR")]
    replays: PathBuf,
    /// Faults left out of the mean FDR.
    #[arg(long, value_name = "N,N,...", value_delimiter = ',', default_values_t = UNDETECTABLE_FAULTS)]
    exclude: Vec<u32>,
    /// Label column of the logs (non-zero = faulty row).
    #[arg(long, value_name = "NAME", default_value = SKAB_LABEL_COLUMN)]
    label_column: String,
    /// Draw one file's score, threshold, labels and alerts over time (PNG).
    #[arg(long, value_name = "PNG")]
    plot: Option<PathBuf>,
    /// The file to plot, as its stem (e.g. `d05_te`) [default: the first log].
    #[arg(long, value_name = "NAME", requires = "plot")]
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
    let mut runs = Vec::new();
    let mut plotted = false;
    for (i, log) in args.logs.iter().enumerate() {
        let fault = fault_number(log)?;
        let file_name = log
            .file_name()
            .with_context(|| format!("{} names no file", log.display()))?;
        let replay_path = args.replays.join(file_name);
        let labels = read_labels(log, &args.label_column)?;
        let replay =
            read_replay(&replay_path).with_context(|| format!("scoring {}", log.display()))?;
        let confusion = score_rows(&labels, &replay, 0)?;
        runs.push(FaultRun { fault, confusion });
        let stem = log.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let wanted = args.plot_file.as_deref().map_or(i == 0, |p| p == stem);
        if let (Some(png), true) = (&args.plot, wanted) {
            let title = format!("Tennessee Eastman {stem}: score, threshold and labels");
            for w in anomalyd_train::report::plot_replay(png, &title, &labels, &replay, 0)? {
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
    let summary = summarise(&runs, &args.exclude);
    print!("{}", format_tep(&runs, &summary));
    if let Some(png) = &args.plot {
        println!("plot: {}", png.display());
    }
    Ok(())
}
