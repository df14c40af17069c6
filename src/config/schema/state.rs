//! `[state]`, `[spool]` and `[journal]`: what the daemon keeps on disk.

use super::*;

/// Where the daemon keeps state across restarts (spool, open alerts).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// Unset: `$STATE_DIRECTORY` (systemd `StateDirectory=`); without
    /// either, nothing is kept across restarts.
    #[serde(default)]
    pub directory: Option<PathBuf>,
}

impl StateConfig {
    /// The directory in use, if any.
    pub fn resolved_directory(&self) -> Option<PathBuf> {
        match &self.directory {
            Some(d) if !d.as_os_str().is_empty() => Some(d.clone()),
            _ => std::env::var_os("STATE_DIRECTORY").and_then(|s| std::env::split_paths(&s).next()),
        }
    }
}

/// The on-disk store-and-forward spool for batches the database cannot take.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Directory of the spool; unset means `spool/` in the state directory,
    /// and without one, no spool (failed batches are retried in memory).
    #[serde(default)]
    pub directory: Option<PathBuf>,
    /// Size limit in MiB; when full, the oldest batches are dropped and counted.
    #[serde(default = "default_spool_mb")]
    pub max_mb: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            directory: None,
            max_mb: default_spool_mb(),
        }
    }
}

impl SpoolConfig {
    /// The directory in use, if any, given the state directory.
    pub fn resolved_directory(&self, state: Option<&Path>) -> Option<PathBuf> {
        match &self.directory {
            Some(d) if !d.as_os_str().is_empty() => Some(d.clone()),
            _ => state.map(|d| d.join("spool")),
        }
    }
}

/// The intake journal (at-least-once from the broker, `state/journal/`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    /// Journal messages before acknowledging them; in effect with QoS 1 or
    /// 2 and a state directory (`journal/` in it).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Size limit in MiB of the journal directory.
    #[serde(default = "default_journal_mb")]
    pub max_mb: u64,
    /// `fdatasync` before acknowledging (safe against power cuts too).
    #[serde(default = "default_true")]
    pub fsync: bool,
    /// Size cap in MiB of the dead-letter files (oversize messages kept in
    /// the state directory); 0 keeps none.
    #[serde(default = "default_dead_letter_mb")]
    pub dead_letter_mb: u64,
    /// Sync and acknowledge at most once per this many ms
    /// (docs/low-rate.md §1) ...
    #[serde(default = "default_sync_interval_ms")]
    pub sync_interval_ms: u64,
    /// ... or at once when this many messages wait for their
    /// acknowledgement (keep it below the broker's in-flight window).
    #[serde(default = "default_sync_max_pending")]
    pub sync_max_pending: usize,
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_mb: default_journal_mb(),
            fsync: true,
            dead_letter_mb: default_dead_letter_mb(),
            sync_interval_ms: default_sync_interval_ms(),
            sync_max_pending: default_sync_max_pending(),
        }
    }
}

fn default_sync_interval_ms() -> u64 {
    1000
}

fn default_sync_max_pending() -> usize {
    16
}

fn default_true() -> bool {
    true
}

fn default_journal_mb() -> u64 {
    256
}

fn default_dead_letter_mb() -> u64 {
    16
}

fn default_spool_mb() -> u64 {
    256
}
