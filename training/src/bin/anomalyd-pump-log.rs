//! `anomalyd-pump-log`: writes a log of the library's synthetic pump
//! (`anomalyd::core::synth`) as CSV, optionally with a fault that grows to
//! full strength over `--ramp-rows` rows: the slow-fault input of
//! `scripts/bench-drift.sh` (docs/far-calibration.md §4).

use std::path::PathBuf;
use std::process::ExitCode;

use anomalyd::core::synth::{FAULT_RAMP_STEPS, FaultKind, generate_ramped};
use anyhow::Context;
use clap::Parser;

/// Writes `--rows` seconds of the synthetic pump as CSV (header
/// `timestamp,<channels>,anomaly`).
#[derive(Debug, Parser)]
#[command(name = "anomalyd-pump-log", version, about, max_term_width = 100)]
struct Args {
    /// Rows (seconds) to write.
    #[arg(long)]
    rows: usize,
    /// Seed of the simulator (another seed is another pump).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Fault switched on from --fault-from to the end: bearing, cavitation
    /// or blockage.
    #[arg(long, requires = "fault_from")]
    fault: Option<FaultKind>,
    /// First row with the fault.
    #[arg(long, requires = "fault")]
    fault_from: Option<usize>,
    /// Rows over which the fault grows to full strength.
    #[arg(long, default_value_t = FAULT_RAMP_STEPS)]
    ramp_rows: u64,
    /// Time of the first row, nanoseconds since the epoch (2026-01-01).
    #[arg(long, default_value_t = 1_767_225_600_000_000_000)]
    start_ns: i64,
    #[arg(long)]
    out: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let fault = args
        .fault
        .zip(args.fault_from)
        .map(|(k, from)| (k, from..args.rows));
    let log = generate_ramped(
        args.rows,
        args.seed,
        args.start_ns,
        1_000_000_000,
        fault,
        args.ramp_rows,
    );
    match std::fs::write(&args.out, log.to_csv())
        .with_context(|| format!("writing {}", args.out.display()))
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("anomalyd-pump-log: {e:#}");
            ExitCode::FAILURE
        }
    }
}
