//! Exit codes of the `anomalyd` binary, in one place (docs/architecture.md
//! §9). systemd's unit treats 78 (`EX_CONFIG`) as "do not restart": the
//! operator must fix the config, the model file or the state directory.
//! Success is 0; clap exits with 2 on a command-line usage error.

use crate::cmd::run::DaemonError;
use crate::config::ConfigError;
use crate::model::RuntimeError;

/// The exit codes as `--help` and the man page list them.
pub const HELP: &str = "\
Exit status (sysexits.h):
  0   success
  1   a runtime failure (a lost thread, an I/O fault after start-up)
  2   a command-line usage error
  78  a configuration problem (EX_CONFIG): the config, a model file, the ONNX
      Runtime library, the state directory or a credential file; systemd does
      not restart the service on it";

/// Any failure not listed below (a runtime fault, a lost thread).
pub const FAILURE: i32 = 1;
/// Configuration problem: the config, a model file, the ONNX Runtime
/// library, the state directory or a credential file (`EX_CONFIG`).
pub const CONFIG: i32 = 78;

/// The exit code for an error found anywhere in a cause chain, or `None`
/// when this error is not one of ours.
pub fn code_of(err: &(dyn std::error::Error + 'static)) -> Option<i32> {
    if err.downcast_ref::<ConfigError>().is_some() {
        return Some(CONFIG);
    }
    err.downcast_ref::<DaemonError>().map(daemon_code)
}

/// 78 for configuration and model problems, 1 otherwise.
fn daemon_code(err: &DaemonError) -> i32 {
    match err {
        DaemonError::Config(_)
        | DaemonError::Spool(_)
        | DaemonError::Journal(_)
        | DaemonError::StateDir { .. }
        | DaemonError::Model { .. }
        | DaemonError::Sink(_)
        | DaemonError::Mqtt(_)
        | DaemonError::Outbox(_)
        | DaemonError::Webhook(_)
        | DaemonError::Runtime(RuntimeError::Library { .. }) => CONFIG,
        _ => FAILURE,
    }
}
