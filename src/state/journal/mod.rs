//! The intake journal: at-least-once from the broker through a crash.
//!
//! With QoS 1 or 2 and a state directory, every message the broker
//! delivers is appended to a journal segment under `<state>/journal/`
//! before it is acknowledged. Appends are group-committed: the source
//! writes a batch of records, a separate task runs the `fdatasync` that
//! covers them, then the poll loop writes their PUBACKs together
//! (docs/architecture.md §7). If the daemon is killed, the broker
//! redelivers what was not acknowledged and the journal holds what was; at
//! start the daemon replays the journal through the pipeline before it
//! connects, so open frames and window history are rebuilt and every
//! reading is scored.
//!
//! Why not acknowledge only once a reading's score is written: a reading
//! is part of `window` windows and its frame may wait for other channels,
//! so its results are durable seconds after it arrived; the broker allows
//! only a few unacknowledged messages per client (mosquitto's
//! `max_inflight_messages` is 20), which would cap intake at a few dozen
//! messages per flush interval. The journal gives the same guarantee at
//! the speed of one disk sync per batch.
//!
//! Segments rotate by size or age. At each rotation the source sends a
//! barrier down the pipeline behind the windows of that segment; when the
//! sink has written or spooled everything before the barrier it reports
//! back. The highest confirmed barrier is kept in `<journal>/confirmed`,
//! so a replay after a restart scores confirmed segments for their
//! history only and writes nothing from them again (docs/durability.md
//! §4). Closed segments older than the retention (the longest window span
//! plus the allowed lateness, twice over, in receive time) are deleted:
//! replaying them would only rebuild history that no longer matters. A
//! size cap bounds the directory; trimming history early is counted.
//!
//! A failed write (a full disk) leaves nothing half-written: the segment
//! is cut back to its last committed record and the records since are
//! dropped, for the caller to have the broker redeliver (docs/durability.md
//! §2). Each record starts with a magic and carries a CRC over its length
//! and body, so the reader resynchronises on the next intact record after
//! any damage (`record.rs`).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod record;

pub(crate) use record::encode as encode_record;
pub use record::{Record, ReplayReport};

const PREFIX: &str = "journal-";
const SUFFIX: &str = ".log";
/// Where the highest barrier the sink confirmed is kept across restarts.
const CONFIRMED: &str = "confirmed";
/// What a probe writes (and syncs) to learn whether the disk takes writes
/// again: one write buffer's worth, so the next commit is likely to fit.
const PROBE_BYTES: usize = 256 * 1024;

/// Errors of the journal's own I/O.
#[derive(Debug, thiserror::Error)]
#[error("journal {path}: {source}")]
pub struct JournalError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError {
        path: path.to_path_buf(),
        source,
    }
}

/// How the journal rotates, retains and syncs.
#[derive(Debug, Clone)]
pub struct JournalSettings {
    pub dir: PathBuf,
    /// Size cap of the directory; beyond it the oldest processed segments
    /// are deleted even inside the retention (counted).
    pub max_bytes: u64,
    /// A segment is closed when it reaches this size ...
    pub segment_bytes: u64,
    /// ... or this age.
    pub segment_age: Duration,
    /// Processed segments are kept while younger than this (receive time,
    /// relative to the newest processed segment).
    pub retention_ns: i64,
    /// `fdatasync` before acknowledging (power-cut safety); off, a
    /// process crash still loses nothing (the page cache survives it).
    pub fsync: bool,
}

#[derive(Debug, Clone)]
struct Segment {
    seq: u64,
    path: PathBuf,
    bytes: u64,
    last_recv_ns: i64,
}

/// The journal directory.
#[derive(Debug)]
pub struct Journal {
    settings: JournalSettings,
    closed: VecDeque<Segment>,
    current: Option<(Segment, BufWriter<File>, Instant)>,
    /// Bytes of the open segment that reached the file whole (the last
    /// successful commit): a failed write cuts the file back to this.
    committed: u64,
    next_seq: u64,
    /// Highest confirmed barrier read at open (an earlier run's).
    confirmed_at_open: Option<u64>,
    /// Highest segment sequence whose barrier the sink confirmed.
    processed: Option<u64>,
    /// Records appended since creation.
    pub appended: u64,
    /// Segments deleted by the size cap before their retention ran out.
    pub trimmed: u64,
    /// One record encoded before it is written, reused.
    scratch: Vec<u8>,
    /// `confirmed`, kept open: rewritten in place at every confirmation.
    confirmed_file: Option<File>,
}

fn segment_name(seq: u64) -> String {
    format!("{PREFIX}{seq:016}{SUFFIX}")
}

fn parse_name(name: &str) -> Option<u64> {
    name.strip_prefix(PREFIX)?
        .strip_suffix(SUFFIX)?
        .parse()
        .ok()
}

impl Journal {
    /// Opens (creating) the journal directory. Segments left by an earlier
    /// run are returned oldest first, for [`Journal::replay_segment`]; they
    /// stay on disk until retention removes them.
    ///
    /// # Errors
    /// The directory cannot be created or listed.
    pub fn open(settings: JournalSettings) -> Result<(Self, Vec<PathBuf>), JournalError> {
        let dir = settings.dir.clone();
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let mut found: Vec<(u64, PathBuf, u64)> = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let name = entry.file_name();
            let Some(seq) = name.to_str().and_then(parse_name) else {
                continue;
            };
            let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
            found.push((seq, entry.path(), bytes));
        }
        found.sort_by_key(|f| f.0);
        let next_seq = found.last().map_or(0, |f| f.0 + 1);
        let paths = found.iter().map(|f| f.1.clone()).collect();
        let confirmed_at_open: Option<u64> = fs::read_to_string(dir.join(CONFIRMED))
            .ok()
            .and_then(|t| t.trim().parse().ok());
        // New segments number past every confirmed one, even when the size
        // cap deleted them all: a new segment must never look confirmed.
        let next_seq = next_seq.max(confirmed_at_open.map_or(0, |c| c + 1));
        let closed = found
            .into_iter()
            .map(|(seq, path, bytes)| Segment {
                seq,
                path,
                bytes,
                last_recv_ns: i64::MIN,
            })
            .collect();
        Ok((
            Self {
                settings,
                closed,
                current: None,
                committed: 0,
                next_seq,
                confirmed_at_open,
                processed: None,
                appended: 0,
                trimmed: 0,
                scratch: Vec::new(),
                confirmed_file: None,
            },
            paths,
        ))
    }

    /// Reads every intact record of a segment, oldest first.
    ///
    /// # Errors
    /// The file cannot be read.
    pub fn replay_segment(
        path: &Path,
        each: impl FnMut(Record<'_>),
    ) -> Result<ReplayReport, JournalError> {
        let mut bytes = Vec::new();
        File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io(path))?;
        Ok(record::read_segment(&bytes, each))
    }

    /// Encodes records in the journal's own format (magic, length, CRC),
    /// for a partition's handover record (docs/scale-out.md §4).
    pub fn encode_records<'a>(records: impl IntoIterator<Item = Record<'a>>) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            record::encode(&mut out, r.recv_ns, r.topic, r.payload);
        }
        out
    }

    /// Reads records encoded by [`Journal::encode_records`], skipping
    /// damage as replay does.
    pub fn decode_records(bytes: &[u8], each: impl FnMut(Record<'_>)) -> ReplayReport {
        record::read_segment(bytes, each)
    }

    /// The records of the closed segments received at or after `since_ns`,
    /// oldest first: a partition's recent history for its next owner.
    /// Segments that cannot be read are skipped.
    pub fn recent(&self, since_ns: i64) -> Vec<(i64, String, Vec<u8>)> {
        let mut out = Vec::new();
        for seg in &self.closed {
            // A segment replayed at start has no known time: read it.
            if seg.last_recv_ns != i64::MIN && seg.last_recv_ns < since_ns {
                continue;
            }
            let _ = Self::replay_segment(&seg.path, |r| {
                if r.recv_ns >= since_ns {
                    out.push((r.recv_ns, r.topic.to_string(), r.payload.to_vec()));
                }
            });
        }
        out
    }

    /// The sequence number of a segment file, from its name.
    pub fn segment_seq(path: &Path) -> Option<u64> {
        path.file_name()?.to_str().and_then(parse_name)
    }

    /// The highest barrier an earlier run's sink confirmed: segments up to
    /// it had every window written or spooled before the restart.
    pub fn confirmed_at_open(&self) -> Option<u64> {
        self.confirmed_at_open
    }

    /// Tells the journal the newest receive time in a segment left by an
    /// earlier run (learnt while replaying it), for retention.
    pub fn note_replayed(&mut self, path: &Path, last_recv_ns: i64) {
        if let Some(s) = self.closed.iter_mut().find(|s| s.path == path) {
            s.last_recv_ns = last_recv_ns;
        }
    }

    /// Appends one message (buffered; [`Journal::commit`] makes it durable).
    ///
    /// # Errors
    /// The segment cannot be created or written. The segment is then cut
    /// back to its last commit: every record appended since is gone, and
    /// the caller must not acknowledge those messages.
    pub fn append(
        &mut self,
        recv_ns: i64,
        topic: &str,
        payload: &[u8],
    ) -> Result<(), JournalError> {
        if self.current.is_none() {
            let seq = self.next_seq;
            let path = self.settings.dir.join(segment_name(seq));
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io(&path))?;
            self.next_seq += 1;
            self.committed = 0;
            self.current = Some((
                Segment {
                    seq,
                    path,
                    bytes: 0,
                    last_recv_ns: recv_ns,
                },
                BufWriter::with_capacity(256 * 1024, file),
                Instant::now(),
            ));
        }
        let Some((seg, w, _)) = self.current.as_mut() else {
            unreachable!("a segment was just opened");
        };
        self.scratch.clear();
        record::encode(&mut self.scratch, recv_ns, topic, payload);
        if let Err(e) = w.write_all(&self.scratch) {
            let err = io(&seg.path)(e);
            self.rollback();
            return Err(err);
        }
        seg.bytes += self.scratch.len() as u64;
        seg.last_recv_ns = seg.last_recv_ns.max(recv_ns);
        self.appended += 1;
        Ok(())
    }

    /// Writes the buffered records to the file without syncing it: a crash
    /// of the process (not of the machine) then loses none of them, though
    /// they are neither durable nor acknowledged until the next commit.
    ///
    /// # Errors
    /// The write fails; as with [`Journal::append`], the records since the
    /// last commit are gone.
    pub fn write_out(&mut self) -> Result<(), JournalError> {
        let Some((seg, w, _)) = self.current.as_mut() else {
            return Ok(());
        };
        if let Err(e) = w.flush() {
            let err = io(&seg.path)(e);
            self.rollback();
            return Err(err);
        }
        Ok(())
    }

    /// Writes the buffered records to the file and returns a handle whose
    /// `sync_data` makes them durable (`None` when sync is off or nothing
    /// is open). Call [`Journal::should_rotate`] after.
    ///
    /// # Errors
    /// The write or the handle duplication fails; as with
    /// [`Journal::append`], the records since the last commit are gone.
    pub fn commit(&mut self) -> Result<Option<File>, JournalError> {
        self.write_out()?;
        let Some((seg, w, _)) = self.current.as_mut() else {
            return Ok(None);
        };
        let sync = if self.settings.fsync {
            w.get_ref().try_clone().map(Some)
        } else {
            Ok(None)
        };
        match sync {
            Ok(f) => {
                self.committed = seg.bytes;
                Ok(f)
            }
            Err(e) => {
                let err = io(&seg.path)(e);
                self.rollback();
                Err(err)
            }
        }
    }

    /// Cuts the open segment back to its last commit, dropping what is
    /// buffered: a record torn by a failed write never reaches the file
    /// ahead of later ones. When even the cut fails the segment is closed
    /// as it is (the reader skips the torn tail) and the next append opens
    /// a new one.
    fn rollback(&mut self) {
        let Some((mut seg, w, opened)) = self.current.take() else {
            return;
        };
        // into_parts hands back the file without flushing the buffer.
        let (file, _unwritten) = w.into_parts();
        match file.set_len(self.committed) {
            Ok(()) => {
                seg.bytes = self.committed;
                self.current = Some((seg, BufWriter::with_capacity(256 * 1024, file), opened));
            }
            Err(e) => {
                tracing::error!(segment = %seg.path.display(), error = %e, "cannot cut a journal segment back to its last record; closing it");
                seg.bytes = file.metadata().map_or(self.committed, |m| m.len());
                self.closed.push_back(seg);
            }
        }
    }

    /// Whether the disk takes writes again: writes, syncs and removes a
    /// probe file beside the segments.
    ///
    /// # Errors
    /// The probe cannot be written or synced.
    pub fn probe(&self) -> Result<(), JournalError> {
        let path = self.settings.dir.join(".probe");
        let result = File::create(&path)
            .and_then(|mut f| {
                f.write_all(&[0u8; PROBE_BYTES])?;
                f.sync_data()
            })
            .map_err(io(&path));
        let _ = fs::remove_file(&path);
        result
    }

    /// Whether the open segment is due to be closed.
    pub fn should_rotate(&self) -> bool {
        self.current.as_ref().is_some_and(|(s, _, opened)| {
            s.bytes >= self.settings.segment_bytes || opened.elapsed() >= self.settings.segment_age
        })
    }

    /// Closes the open segment (after a [`Journal::commit`]) and returns its
    /// sequence: the barrier to send down the pipeline behind its windows.
    pub fn rotate(&mut self) -> Option<u64> {
        let (seg, w, _) = self.current.take()?;
        // Anything still buffered was never committed (a caller rotating
        // after a failed commit): it is dropped with the writer, unwritten.
        let _ = w.into_parts();
        self.committed = 0;
        let seq = seg.seq;
        self.closed.push_back(seg);
        Some(seq)
    }

    /// Sequence of the newest closed segment: at start, the barrier that
    /// covers everything replayed.
    pub fn newest_closed(&self) -> Option<u64> {
        self.closed.back().map(|s| s.seq)
    }

    /// The sink has written or spooled everything up to barrier `seq`:
    /// deletes what retention and the size cap allow. Returns how many
    /// segments were deleted.
    pub fn processed(&mut self, seq: u64) -> usize {
        let done = self.processed.map_or(seq, |p| p.max(seq));
        if self.processed != Some(done) {
            self.save_confirmed(done);
        }
        self.processed = Some(done);
        let horizon = self
            .closed
            .iter()
            .filter(|s| s.seq <= done)
            .map(|s| s.last_recv_ns)
            .max()
            .unwrap_or(i64::MIN)
            .saturating_sub(self.settings.retention_ns);
        let mut deleted = 0;
        while let Some(front) = self.closed.front() {
            if front.seq > done {
                break;
            }
            let expired = front.last_recv_ns < horizon;
            let over = self.bytes() > self.settings.max_bytes;
            if !expired && !over {
                break;
            }
            if !expired {
                self.trimmed += 1;
                tracing::warn!(
                    segment = %front.path.display(),
                    "journal over its size cap: history deleted early; a crash now may leave windows unscored"
                );
            }
            let _ = fs::remove_file(&front.path);
            self.closed.pop_front();
            deleted += 1;
        }
        deleted
    }

    /// Keeps the highest confirmed barrier across restarts. Best effort:
    /// losing it only means a replay writes points again, which the
    /// database overwrites or keeps as duplicates. The file stays open and
    /// its 21 bytes (the sequence, zero-padded, and a newline) are
    /// overwritten in place, one `pwrite` per segment confirmed instead of
    /// a file created, written, closed and renamed every second; a write
    /// that small within the file's first block is not torn by a crash.
    fn save_confirmed(&mut self, seq: u64) {
        use std::os::unix::fs::FileExt as _;
        if self.confirmed_file.is_none() {
            let path = self.settings.dir.join(CONFIRMED);
            match OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
            {
                Ok(f) => self.confirmed_file = Some(f),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot open the confirmed journal barrier");
                    return;
                }
            }
        }
        let Some(f) = self.confirmed_file.as_ref() else {
            return;
        };
        if let Err(e) = f.write_all_at(format!("{seq:020}\n").as_bytes(), 0) {
            tracing::debug!(error = %e, "cannot record the confirmed journal barrier");
            self.confirmed_file = None;
        }
    }

    /// Bytes on disk (closed segments plus the open one).
    pub fn bytes(&self) -> u64 {
        self.closed.iter().map(|s| s.bytes).sum::<u64>()
            + self.current.as_ref().map_or(0, |c| c.0.bytes)
    }

    /// Segment files on disk.
    pub fn segments(&self) -> usize {
        self.closed.len() + usize::from(self.current.is_some())
    }
}

#[cfg(test)]
mod tests;
