//! Open alerts persisted in the state directory, so an alert raised before
//! a restart (or a crash) is not raised a second time after it: the
//! detector of that asset starts in the anomalous state instead.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

pub use crate::core::detect::OpenAlert;

/// The file `alerts.json` in the state directory.
#[derive(Debug)]
pub struct AlertStore {
    path: PathBuf,
    last_written: HashMap<String, OpenAlert>,
}

impl AlertStore {
    /// Opens the store and returns the open alerts it holds. A file that
    /// does not parse is reported and treated as empty (alerts may then be
    /// raised again; nothing else is affected).
    pub fn open(dir: &Path) -> (Self, HashMap<String, OpenAlert>) {
        let path = dir.join("alerts.json");
        let open = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::error!(path = %path.display(), error = %e, "cannot read the open-alert state; starting without it");
                HashMap::new()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot read the open-alert state; starting without it");
                HashMap::new()
            }
        };
        (
            Self {
                path,
                last_written: open.clone(),
            },
            open,
        )
    }

    /// Writes the open alerts atomically when they changed.
    pub fn save(&mut self, open: HashMap<String, OpenAlert>) {
        if open == self.last_written {
            return;
        }
        let tmp = self.path.with_extension("json.tmp");
        let result = (|| -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(serde_json::to_string(&open).unwrap_or_default().as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        })();
        match result {
            Ok(()) => self.last_written = open,
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot save the open-alert state")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_alerts_survive_a_reopen_and_garbage_is_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, open) = AlertStore::open(dir.path());
        assert!(open.is_empty());
        let mut m = HashMap::new();
        m.insert(
            "pump-1".to_string(),
            OpenAlert {
                start_ts: 5,
                peak: 2.5,
            },
        );
        store.save(m.clone());
        let (_, again) = AlertStore::open(dir.path());
        assert_eq!(again, m);
        std::fs::write(dir.path().join("alerts.json"), b"{not json").unwrap();
        let (_, broken) = AlertStore::open(dir.path());
        assert!(broken.is_empty());
    }
}
