//! The `anomalyd` binary: parses the command line, sets up logging and the
//! runtime, and hands over to the library. Errors are printed with their
//! cause chain and mapped to exit codes (78 for configuration problems).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser, Subcommand};

use anomalyd::cmd::exit;
use anomalyd::config::{Config, LogFormat};
use anomalyd::model::RuntimeOptions;
use anomalyd::ops::init_logging;

#[derive(Debug, Parser)]
#[command(
    name = "anomalyd",
    version,
    about = "Streaming anomaly detection for industrial sensors",
    after_help = exit::HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: MQTT in, scores and alerts out to InfluxDB.
    Run {
        /// Config file (default: $CONFIGURATION_DIRECTORY/anomalyd.toml, else /etc/anomalyd/anomalyd.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate the config and load its models without connecting anywhere.
    CheckConfig {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print a model file's metadata and graph inputs/outputs.
    InspectModel {
        model: PathBuf,
        /// ONNX Runtime library (default: ORT_DYLIB_PATH, then next to the binary).
        #[arg(long)]
        ort_library: Option<PathBuf>,
    },
    /// Run the pipeline over a CSV or line-protocol file.
    Replay(anomalyd::cmd::replay::ReplayArgs),
    /// Publish rows (a CSV file or synthetic pump data) as MQTT messages.
    Simulate(anomalyd::cmd::simulate::SimulateArgs),
    /// Listen with the configured topics and report, per asset, the
    /// channels seen and what each bound model is missing or does not know.
    Tap {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// How long to listen.
        #[arg(long, default_value_t = 30.0)]
        seconds: f64,
    },
    /// Write the man page anomalyd.8 and the bash, zsh and fish completions
    /// into DIR (the package build runs this).
    #[command(hide = true)]
    GenerateDocs {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

fn default_config() -> PathBuf {
    match std::env::var_os("CONFIGURATION_DIRECTORY") {
        Some(dir) => PathBuf::from(dir).join("anomalyd.toml"),
        None => PathBuf::from("/etc/anomalyd/anomalyd.toml"),
    }
}

fn print_error(err: &anyhow::Error) {
    eprintln!("error: {err}");
    for cause in err.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
}

fn main() -> ExitCode {
    // First, while this is the only thread (docs/architecture.md §8).
    anomalyd::model::opt_out_of_telemetry();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            print_error(&e);
            let code = e.chain().find_map(exit::code_of).unwrap_or(exit::FAILURE);
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { config } => {
            let path = config.unwrap_or_else(default_config);
            let settings = Config::load(&path)?;
            init_logging(settings.config.log.format, &settings.config.log.level);
            // One async worker: MQTT, the sink and HTTP take a fraction of a
            // core even at full load (inference has its own thread), and a
            // second worker only adds wake-ups between the two per message
            // (docs/low-rate.md §2).
            // Named so that `top -H` and the bench's per-thread figures
            // tell the sink and HTTP side from the pipeline's own threads.
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("anomalyd-async")
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            rt.block_on(async move {
                let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
                let shutdown = signals(reload_tx)?;
                anomalyd::cmd::run::run(settings, path, shutdown, reload_rx).await?;
                Ok::<_, anyhow::Error>(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { config } => {
            init_logging(LogFormat::Plain, "warn");
            let path = config.unwrap_or_else(default_config);
            let summary = anomalyd::cmd::check_config::check_config(&path)?;
            print!("{summary}");
            Ok(ExitCode::SUCCESS)
        }
        Command::InspectModel { model, ort_library } => {
            init_logging(LogFormat::Plain, "warn");
            let opts = RuntimeOptions {
                library_path: ort_library,
                ..RuntimeOptions::cpu()
            };
            print!("{}", anomalyd::model::describe_model(&model, &opts)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay(a) => {
            init_logging(LogFormat::Plain, "warn");
            let opts = a.into_options()?;
            let (s, _) = anomalyd::cmd::replay::replay(&opts)?;
            eprintln!(
                "replay: {} rows, {} windows scored, {} alert(s), {} anomalous rows, {} readings dropped, {:.2} s",
                s.rows, s.windows, s.alerts_raised, s.anomalous_rows, s.dropped, s.seconds
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Tap { config, seconds } => {
            init_logging(LogFormat::Plain, "warn");
            let path = config.unwrap_or_else(default_config);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let report = rt.block_on(anomalyd::cmd::tap::tap(&path, seconds))?;
            print!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        Command::GenerateDocs { out } => {
            for file in anomalyd::manual::write(Cli::command(), "8", &out)
                .with_context(|| format!("cannot write the manual into {}", out.display()))?
            {
                println!("{}", file.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Simulate(args) => {
            init_logging(LogFormat::Plain, "info");
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            rt.block_on(async move {
                let opts = args.into_options()?;
                let report = anomalyd::cmd::simulate::simulate(opts, async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await?;
                eprintln!("{report}");
                Ok::<_, anyhow::Error>(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// SIGTERM/SIGINT resolve the returned future; each SIGHUP sends on `reload`.
fn signals(
    reload: tokio::sync::mpsc::Sender<()>,
) -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading");
            if reload.try_send(()).is_err() {
                tracing::warn!("a reload is already pending");
            }
        }
    });
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}
