//! Dead letters: messages the daemon drops on purpose (over the configured
//! size) kept for the operator to look at, in `<state>/dead-letters.log`
//! (docs/durability.md §3). Records have the journal's format, so
//! `Journal::replay_segment` reads them back. Bounded: when the file would
//! pass half the cap it becomes `dead-letters.log.1` (replacing the one
//! before) and a new file starts; a message larger than half the cap is
//! counted and logged but not kept.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::journal::{JournalError, encode_record};

/// The dead-letter file name in the state directory.
pub const DEAD_LETTERS: &str = "dead-letters.log";

/// The bounded dead-letter file.
#[derive(Debug)]
pub struct DeadLetters {
    path: PathBuf,
    file: Option<File>,
    bytes: u64,
    /// Size at which the file is rotated: half the cap.
    half: u64,
    /// Messages kept since start.
    pub kept: u64,
}

impl DeadLetters {
    /// Dead letters in `dir`, at most `max_bytes` on disk (two files).
    pub fn new(dir: &Path, max_bytes: u64) -> Self {
        let path = dir.join(DEAD_LETTERS);
        let bytes = fs::metadata(&path).map_or(0, |m| m.len());
        Self {
            path,
            file: None,
            bytes,
            half: max_bytes / 2,
            kept: 0,
        }
    }

    /// Keeps one message. Returns `Ok(false)` when it is too large to keep.
    ///
    /// # Errors
    /// The file cannot be written (the message is then only counted).
    pub fn keep(
        &mut self,
        recv_ns: i64,
        topic: &str,
        payload: &[u8],
    ) -> Result<bool, JournalError> {
        let mut buf = Vec::new();
        encode_record(&mut buf, recv_ns, topic, payload);
        let n = buf.len() as u64;
        if n > self.half {
            return Ok(false);
        }
        let err = |source| JournalError {
            path: self.path.clone(),
            source,
        };
        if self.bytes + n > self.half {
            self.file = None;
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            fs::rename(&self.path, &old).map_err(err)?;
            self.bytes = 0;
        }
        if self.file.is_none() {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(err)?;
            self.bytes = f.metadata().map_or(0, |m| m.len());
            self.file = Some(f);
        }
        let Some(f) = self.file.as_mut() else {
            unreachable!("the file was just opened");
        };
        if let Err(e) = f.write_all(&buf) {
            // A partial write is cut off, so the file stays readable.
            let _ = f.set_len(self.bytes);
            return Err(err(e));
        }
        self.bytes += n;
        self.kept += 1;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Journal;

    #[test]
    fn keeps_messages_readably_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = DeadLetters::new(dir.path(), 2_000);
        assert!(d.keep(1, "plant/p1/flow", &[7u8; 300]).unwrap());
        assert!(d.keep(2, "plant/p1/flow", &[8u8; 300]).unwrap());
        // Too large for half the cap: not kept.
        assert!(!d.keep(3, "t", &[0u8; 1_500]).unwrap());
        let mut got = Vec::new();
        Journal::replay_segment(&dir.path().join(DEAD_LETTERS), |r| {
            got.push((r.recv_ns, r.topic.to_string(), r.payload.len()));
        })
        .unwrap();
        assert_eq!(
            got,
            vec![
                (1, "plant/p1/flow".to_string(), 300),
                (2, "plant/p1/flow".to_string(), 300)
            ]
        );
        // Many more: the two files never pass the cap.
        for i in 0..20 {
            d.keep(10 + i, "t", &[1u8; 300]).unwrap();
        }
        let total: u64 = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(total <= 2_000, "{total}");
        assert_eq!(d.kept, 22);
    }
}
