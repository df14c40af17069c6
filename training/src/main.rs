//! `anomalyd-train`: parse the command line, run one training, map errors to
//! exit codes. Everything else lives in the library (`anomalyd_train::run`).

use std::process::ExitCode;

use anomalyd_train::cli::Args;
use anomalyd_train::run::{RunError, run};
use clap::{CommandFactory as _, FromArgMatches as _};

fn main() -> ExitCode {
    // First, while this is the only thread (docs/architecture.md §8).
    anomalyd::model::opt_out_of_telemetry();
    let matches = Args::command().get_matches();
    // Exclusive: clap has skipped the required options, so this comes first.
    if let Some(dir) = matches.get_one::<std::path::PathBuf>("generate_docs") {
        return match anomalyd::manual::write(Args::command(), "1", dir) {
            Ok(files) => {
                files.iter().for_each(|f| println!("{}", f.display()));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot write the manual into {}: {e}", dir.display());
                ExitCode::from(73)
            }
        };
    }
    let args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = args
        .into_options()
        .and_then(|opts| run(&opts))
        .map_err(anyhow::Error::from);
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(err) => {
            report_error(&err);
            ExitCode::from(exit_code(&err))
        }
    }
}

/// Prints `error: ...` and every cause below it that adds something (some
/// messages already include their source's text).
fn report_error(err: &anyhow::Error) {
    eprintln!("error: {err}");
    let mut shown = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !shown.contains(&text) {
            eprintln!("  caused by: {text}");
        }
        shown = text;
    }
}

/// The first [`RunError`] in the chain decides; a missing file found deeper
/// down is 66 (`EX_NOINPUT`); anything else is 1.
fn exit_code(err: &anyhow::Error) -> u8 {
    let code = err
        .chain()
        .find_map(|e| e.downcast_ref::<RunError>().map(RunError::exit_code))
        .or_else(|| {
            err.chain()
                .filter_map(|e| e.downcast_ref::<std::io::Error>())
                .any(|e| e.kind() == std::io::ErrorKind::NotFound)
                .then_some(66)
        })
        .unwrap_or(1);
    u8::try_from(code).unwrap_or(1)
}
