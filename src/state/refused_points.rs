//! The dead-letter file: points the database refuses one by one (HTTP 400
//! or 422: a malformed line, a field whose type conflicts with what the
//! database holds, a single point over its size limit), isolated by the
//! sink and appended to `dead-letter.lp` in the state directory as line
//! protocol, each run of lines after a `#` comment saying when and why.
//! Nothing the database refuses is thrown away unseen: the operator
//! inspects, fixes and replays the file (docs/influxdb.md §3). Bounded:
//! beyond its size limit further points are dropped and counted.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The file's name in the state directory.
pub const REFUSED_POINTS_FILE: &str = "dead-letter.lp";

/// Why points could not be put in the dead-letter file.
#[derive(Debug, thiserror::Error)]
pub enum RefusedPointsError {
    #[error("dead-letter file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("dead-letter file {path} is full ({max} bytes)")]
    Full { path: PathBuf, max: u64 },
}

/// The append-only dead-letter file.
#[derive(Debug)]
pub struct RefusedPoints {
    path: PathBuf,
    max_bytes: u64,
    bytes: u64,
}

impl RefusedPoints {
    /// Opens (creating nothing yet) `dead-letter.lp` in `dir`.
    ///
    /// # Errors
    /// The directory cannot be created.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, RefusedPointsError> {
        fs::create_dir_all(dir).map_err(|source| RefusedPointsError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(REFUSED_POINTS_FILE);
        let bytes = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        Ok(Self {
            path,
            max_bytes,
            bytes,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `lines` (line protocol) after a comment with the time and
    /// `reason`, and syncs the file.
    ///
    /// # Errors
    /// The file is full or cannot be written.
    pub fn append(
        &mut self,
        lines: &str,
        reason: &str,
        now_rfc3339: &str,
    ) -> Result<(), RefusedPointsError> {
        let reason: String = reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let mut text = format!("# {now_rfc3339} {reason}\n{lines}");
        if !text.ends_with('\n') {
            text.push('\n');
        }
        if self.bytes + text.len() as u64 > self.max_bytes {
            return Err(RefusedPointsError::Full {
                path: self.path.clone(),
                max: self.max_bytes,
            });
        }
        let io = |source| RefusedPointsError::Io {
            path: self.path.clone(),
            source,
        };
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io)?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_data())
            .map_err(io)?;
        self.bytes += text.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_with_a_reason_and_stops_at_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut dl = RefusedPoints::open(dir.path(), 120).unwrap();
        dl.append(
            "m f=1 1\n",
            "HTTP 400: field\ntype conflict",
            "2026-01-01T00:00:00Z",
        )
        .unwrap();
        let text = fs::read_to_string(dl.path()).unwrap();
        assert_eq!(
            text,
            "# 2026-01-01T00:00:00Z HTTP 400: field type conflict\nm f=1 1\n"
        );
        // Reopened, it knows its size and keeps appending.
        let mut dl = RefusedPoints::open(dir.path(), 120).unwrap();
        dl.append("m f=2 2", "x", "t").unwrap();
        assert!(
            fs::read_to_string(dl.path())
                .unwrap()
                .ends_with("# t x\nm f=2 2\n")
        );
        let full = dl.append(&"m f=3 3\n".repeat(10), "x", "t").unwrap_err();
        assert!(matches!(full, RefusedPointsError::Full { .. }), "{full}");
    }
}
