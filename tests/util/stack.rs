//! The services one fault test needs at once: a broker, VictoriaMetrics, a
//! free port for the daemon's `/metrics` and a state directory, with the
//! daemon config that points at them.

use std::path::Path;

use tempfile::TempDir;

use super::{DaemonConfig, Mosquitto, VictoriaMetrics, free_port};

/// A broker, a database, a metrics port and a state directory.
pub struct Stack {
    pub broker: Mosquitto,
    pub vm: VictoriaMetrics,
    pub metrics_port: u16,
    pub state: TempDir,
}

impl Stack {
    pub fn start() -> Stack {
        Stack {
            broker: Mosquitto::start(),
            vm: VictoriaMetrics::start(),
            metrics_port: free_port(),
            state: tempfile::tempdir().unwrap(),
        }
    }

    /// The base config for these services, state in [`Stack::state`].
    pub fn config(&self) -> DaemonConfig {
        self.config_with_state(self.state.path())
    }

    /// The base config for these services, state in `dir`.
    pub fn config_with_state(&self, dir: &Path) -> DaemonConfig {
        DaemonConfig::new(self.broker.port(), &self.vm.url(), self.metrics_port).state_dir(dir)
    }
}
