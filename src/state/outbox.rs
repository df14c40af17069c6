//! The alert outbox (docs/alerts.md §5): every alert transition is written
//! here before anything else hears of it, and each alert output delivers
//! from it in order and records how far it got. So an alert is delivered at
//! least once through a restart, a `kill -9` or an outage of the broker or
//! the web endpoint.
//!
//! On disk (`<state>/outbox/`): one file per alert, `<seq>.json`, written
//! to a temporary file, fsynced and renamed (as the spool does), and
//! `cursors.json`, the last sequence each output delivered, replaced the
//! same way after each delivery. An alert is deleted once every output has
//! delivered it. Alerts are rare (state transitions), so a file each is
//! cheap. Without a state directory the outbox lives in memory only.
//! Bounded: beyond `max` undelivered alerts the oldest are dropped and
//! counted.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// The outbox's own I/O errors.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("alert outbox {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OutboxError + '_ {
    move |source| OutboxError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug)]
struct Inner {
    dir: Option<PathBuf>,
    records: BTreeMap<u64, Arc<str>>,
    next_seq: u64,
    /// Last sequence delivered, per configured output.
    cursors: HashMap<String, u64>,
    max: usize,
    dropped: u64,
}

/// Alerts waiting for their outputs; shared by the scoring thread (which
/// appends) and one delivery task per output.
#[derive(Debug)]
pub struct Outbox {
    inner: Mutex<Inner>,
    appended: watch::Sender<u64>,
}

/// What [`Outbox::open`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxReport {
    pub pending: usize,
    pub unreadable: usize,
}

impl Outbox {
    /// Opens the outbox in `dir` (created; `None` keeps it in memory) for
    /// the outputs named `outputs`; alerts an earlier run left undelivered
    /// are delivered again. A record or cursor file that does not parse is
    /// reported and skipped.
    ///
    /// # Errors
    /// The directory cannot be created or listed.
    pub fn open(
        dir: Option<&Path>,
        outputs: &[String],
        max: usize,
    ) -> Result<(Arc<Self>, OutboxReport), OutboxError> {
        let mut report = OutboxReport::default();
        let mut records = BTreeMap::new();
        let mut saved: HashMap<String, u64> = HashMap::new();
        if let Some(dir) = dir {
            fs::create_dir_all(dir).map_err(io(dir))?;
            for entry in fs::read_dir(dir).map_err(io(dir))? {
                let path = entry.map_err(io(dir))?.path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if name.ends_with(".tmp") {
                    let _ = fs::remove_file(&path);
                    continue;
                }
                let Some(seq) = name
                    .strip_suffix(".json")
                    .and_then(|s| s.parse::<u64>().ok())
                else {
                    continue;
                };
                match fs::read_to_string(&path) {
                    Ok(text) if serde_json::from_str::<serde_json::Value>(&text).is_ok() => {
                        records.insert(seq, Arc::from(text));
                    }
                    _ => {
                        tracing::error!(path = %path.display(), "unreadable alert in the outbox; skipped");
                        let _ = fs::remove_file(&path);
                        report.unreadable += 1;
                    }
                }
            }
            let cursor_path = dir.join("cursors.json");
            if let Ok(text) = fs::read_to_string(&cursor_path) {
                saved = serde_json::from_str(&text).unwrap_or_else(|e| {
                    tracing::error!(path = %cursor_path.display(), error = %e, "unreadable outbox cursors; every kept alert is delivered again");
                    report.unreadable += 1;
                    HashMap::new()
                });
            }
        }
        let last = records
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
            .max(saved.values().copied().max().unwrap_or(0));
        // An output that is new here starts with what is kept.
        let cursors = outputs
            .iter()
            .map(|o| (o.clone(), saved.get(o).copied().unwrap_or(0)))
            .collect();
        let (appended, _) = watch::channel(last);
        let mut inner = Inner {
            dir: dir.map(Path::to_path_buf),
            records,
            next_seq: last + 1,
            cursors,
            max: max.max(1),
            dropped: 0,
        };
        inner.trim();
        report.pending = inner.records.len();
        Ok((
            Arc::new(Self {
                inner: Mutex::new(inner),
                appended,
            }),
            report,
        ))
    }

    /// Stores one alert (a JSON document) durably and wakes the outputs;
    /// returns its sequence number.
    ///
    /// # Errors
    /// The alert could not be written (it is still kept in memory and
    /// delivered unless the process dies first).
    pub fn append(&self, payload: &str) -> Result<u64, OutboxError> {
        let (seq, result) = {
            let mut g = self.lock();
            let seq = g.next_seq;
            g.next_seq += 1;
            let result = g.write_record(seq, payload);
            g.records.insert(seq, Arc::from(payload));
            while g.records.len() > g.max {
                if let Some((old, _)) = g.records.pop_first() {
                    g.remove_file(old);
                    g.dropped += 1;
                    tracing::error!(seq = old, "alert outbox full: dropped its oldest alert");
                }
            }
            (seq, result)
        };
        self.appended.send_replace(seq);
        result.map(|()| seq)
    }

    /// The first alert after `cursor` still kept, with its sequence.
    pub fn next_after(&self, cursor: u64) -> Option<(u64, Arc<str>)> {
        let g = self.lock();
        g.records
            .range(cursor + 1..)
            .next()
            .map(|(s, p)| (*s, p.clone()))
    }

    /// The last sequence `output` delivered.
    pub fn cursor(&self, output: &str) -> u64 {
        self.lock().cursors.get(output).copied().unwrap_or(0)
    }

    /// Alerts `output` has not delivered yet.
    pub fn pending(&self, output: &str) -> u64 {
        let g = self.lock();
        let c = g.cursors.get(output).copied().unwrap_or(0);
        g.records.range(c + 1..).count() as u64
    }

    /// Alerts dropped because the outbox was full.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Records that `output` delivered everything up to `seq`; alerts every
    /// output has delivered are deleted.
    ///
    /// # Errors
    /// The cursor file could not be written: the alert may be delivered
    /// again after a restart.
    pub fn delivered(&self, output: &str, seq: u64) -> Result<(), OutboxError> {
        let mut g = self.lock();
        let c = g.cursors.entry(output.to_string()).or_insert(0);
        *c = (*c).max(seq);
        let result = g.write_cursors();
        g.trim();
        result
    }

    /// Wakes when an alert is appended.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind: use it.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Inner {
    fn write_record(&self, seq: u64, payload: &str) -> Result<(), OutboxError> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        write_atomic(&dir.join(format!("{seq:020}.json")), payload.as_bytes())
    }

    fn write_cursors(&self) -> Result<(), OutboxError> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let text = serde_json::to_string(&self.cursors).unwrap_or_default();
        write_atomic(&dir.join("cursors.json"), text.as_bytes())
    }

    fn remove_file(&self, seq: u64) {
        if let Some(dir) = &self.dir {
            let _ = fs::remove_file(dir.join(format!("{seq:020}.json")));
        }
    }

    /// Deletes alerts every output has delivered (all of them when no
    /// output is configured).
    fn trim(&mut self) {
        let done = self.cursors.values().copied().min().unwrap_or(u64::MAX);
        while let Some((&seq, _)) = self.records.first_key_value() {
            if seq > done {
                break;
            }
            self.records.pop_first();
            self.remove_file(seq);
        }
    }
}

/// Writes `bytes` to `path` through a synced temporary file and a rename.
///
/// # Errors
/// The file cannot be written, synced or renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), OutboxError> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outputs() -> Vec<String> {
        vec!["hmi".into(), "oncall".into()]
    }

    #[test]
    fn alerts_survive_a_reopen_until_every_output_delivered_them() {
        let dir = tempfile::tempdir().unwrap();
        let (ob, _) = Outbox::open(Some(dir.path()), &outputs(), 100).unwrap();
        let a = ob.append(r#"{"n":1}"#).unwrap();
        let b = ob.append(r#"{"n":2}"#).unwrap();
        assert_eq!((a, b), (1, 2));
        ob.delivered("hmi", 2).unwrap();
        ob.delivered("oncall", 1).unwrap();
        drop(ob);
        // As after a kill -9: reopen from disk.
        let (ob, report) = Outbox::open(Some(dir.path()), &outputs(), 100).unwrap();
        assert_eq!(report.pending, 1);
        assert_eq!(ob.next_after(ob.cursor("hmi")), None);
        let (seq, p) = ob.next_after(ob.cursor("oncall")).unwrap();
        assert_eq!((seq, &*p), (2, r#"{"n":2}"#));
        ob.delivered("oncall", 2).unwrap();
        assert_eq!(ob.pending("oncall"), 0);
        // Numbering continues after what was delivered.
        assert_eq!(ob.append("{}").unwrap(), 3);
        let files = fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, 2, "one alert and the cursors");
    }

    #[test]
    fn a_full_outbox_drops_the_oldest_and_garbage_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (ob, _) = Outbox::open(Some(dir.path()), &outputs(), 2).unwrap();
        for i in 0..3 {
            ob.append(&format!("{{\"n\":{i}}}")).unwrap();
        }
        assert_eq!(ob.dropped(), 1);
        assert_eq!(ob.next_after(0).unwrap().0, 2);
        fs::write(dir.path().join("00000000000000000009.json"), "{broken").unwrap();
        let (ob, report) = Outbox::open(Some(dir.path()), &outputs(), 2).unwrap();
        assert_eq!((report.pending, report.unreadable), (2, 1));
        assert_eq!(ob.pending("hmi"), 2);
    }

    #[test]
    fn in_memory_without_a_directory() {
        let (ob, _) = Outbox::open(None, &outputs(), 10).unwrap();
        let mut rx = ob.subscribe();
        ob.append("{}").unwrap();
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 1);
        assert_eq!(ob.pending("hmi"), 1);
    }
}
