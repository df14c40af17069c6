//! The intake journal: at-least-once from the broker through a crash.
//!
//! With QoS 1 or 2 and a state directory, every message the broker
//! delivers is appended to a journal segment under `<state>/journal/`
//! before it is acknowledged. Appends are group-committed: the source
//! writes a batch of records, one `fdatasync` covers them, then a separate
//! task sends their PUBACKs (never the poll loop, docs/architecture.md §7). If the
//! daemon is killed, the broker redelivers what was not acknowledged and
//! the journal holds what was; at start the daemon replays the journal
//! through the pipeline before it connects, so open frames and window
//! history are rebuilt and every reading is scored. Points written twice
//! carry the same timestamp and tags and overwrite themselves.
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
//! back, and closed segments older than the retention (the longest window
//! span plus the allowed lateness, twice over, in receive time) are
//! deleted: replaying them would only rebuild history that no longer
//! matters. A size cap bounds the directory; trimming history early is
//! counted.
//!
//! Record layout (little-endian): `u32 len, u32 crc32(body), body` with
//! body = `i64 receive time (ns), u16 topic length, topic, payload`. A torn
//! record at the end of a segment (a crash mid-write) ends that segment's
//! replay and is counted; so is a record that fails its checksum.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PREFIX: &str = "journal-";
const SUFFIX: &str = ".log";
/// Largest body accepted when reading back (a damaged length field must
/// not make replay allocate gigabytes).
const MAX_RECORD: usize = 64 * 1024 * 1024;

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

/// What reading one segment back found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayReport {
    pub records: u64,
    /// Records that failed their checksum or were cut short.
    pub damaged: u64,
    pub last_recv_ns: i64,
}

/// A record read back.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub recv_ns: i64,
    pub topic: &'a str,
    pub payload: &'a [u8],
}

/// The journal directory.
#[derive(Debug)]
pub struct Journal {
    settings: JournalSettings,
    closed: VecDeque<Segment>,
    current: Option<(Segment, BufWriter<File>, Instant)>,
    next_seq: u64,
    /// Highest segment sequence whose barrier the sink confirmed.
    processed: Option<u64>,
    /// Records appended since creation.
    pub appended: u64,
    /// Segments deleted by the size cap before their retention ran out.
    pub trimmed: u64,
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
                next_seq,
                processed: None,
                appended: 0,
                trimmed: 0,
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
        mut each: impl FnMut(Record<'_>),
    ) -> Result<ReplayReport, JournalError> {
        let mut bytes = Vec::new();
        File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io(path))?;
        let mut report = ReplayReport {
            last_recv_ns: i64::MIN,
            ..ReplayReport::default()
        };
        let mut at = 0usize;
        while at < bytes.len() {
            let Some(head) = bytes.get(at..at + 8) else {
                report.damaged += 1;
                break;
            };
            let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            let Some(body) = bytes
                .get(at + 8..at + 8 + len)
                .filter(|_| len <= MAX_RECORD)
            else {
                report.damaged += 1;
                break;
            };
            at += 8 + len;
            if crc32fast::hash(body) != crc || body.len() < 10 {
                report.damaged += 1;
                continue;
            }
            let recv_ns = i64::from_le_bytes(body[0..8].try_into().unwrap_or([0; 8]));
            let tlen = u16::from_le_bytes([body[8], body[9]]) as usize;
            let Some(topic) = body
                .get(10..10 + tlen)
                .and_then(|t| std::str::from_utf8(t).ok())
            else {
                report.damaged += 1;
                continue;
            };
            report.records += 1;
            report.last_recv_ns = report.last_recv_ns.max(recv_ns);
            each(Record {
                recv_ns,
                topic,
                payload: &body[10 + tlen..],
            });
        }
        Ok(report)
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
    /// The segment cannot be created or written.
    pub fn append(
        &mut self,
        recv_ns: i64,
        topic: &str,
        payload: &[u8],
    ) -> Result<(), JournalError> {
        if self.current.is_none() {
            let seq = self.next_seq;
            self.next_seq += 1;
            let path = self.settings.dir.join(segment_name(seq));
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io(&path))?;
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
        let topic = &topic.as_bytes()[..topic.len().min(u16::MAX as usize)];
        let body_len = 8 + 2 + topic.len() + payload.len();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&recv_ns.to_le_bytes());
        crc.update(&(topic.len() as u16).to_le_bytes());
        crc.update(topic);
        crc.update(payload);
        let head = [
            (body_len as u32).to_le_bytes(),
            crc.finalize().to_le_bytes(),
        ];
        let write = |w: &mut BufWriter<File>| -> std::io::Result<()> {
            w.write_all(&head[0])?;
            w.write_all(&head[1])?;
            w.write_all(&recv_ns.to_le_bytes())?;
            w.write_all(&(topic.len() as u16).to_le_bytes())?;
            w.write_all(topic)?;
            w.write_all(payload)
        };
        write(w).map_err(io(&seg.path))?;
        seg.bytes += 8 + body_len as u64;
        seg.last_recv_ns = seg.last_recv_ns.max(recv_ns);
        self.appended += 1;
        Ok(())
    }

    /// Writes the buffered records to the file and returns a handle whose
    /// `sync_data` makes them durable (`None` when sync is off or nothing
    /// is open). Call [`Journal::should_rotate`] after.
    ///
    /// # Errors
    /// The write or the handle duplication fails.
    pub fn commit(&mut self) -> Result<Option<File>, JournalError> {
        let Some((seg, w, _)) = self.current.as_mut() else {
            return Ok(None);
        };
        w.flush().map_err(io(&seg.path))?;
        if !self.settings.fsync {
            return Ok(None);
        }
        w.get_ref().try_clone().map(Some).map_err(io(&seg.path))
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
        drop(w);
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
mod tests {
    use super::*;

    fn settings(dir: &Path) -> JournalSettings {
        JournalSettings {
            dir: dir.to_path_buf(),
            max_bytes: 1 << 30,
            segment_bytes: 1 << 20,
            segment_age: Duration::from_secs(3600),
            retention_ns: 10_000,
            fsync: true,
        }
    }

    fn read_all(path: &Path) -> (Vec<(i64, String, Vec<u8>)>, ReplayReport) {
        let mut v = Vec::new();
        let r = Journal::replay_segment(path, |rec| {
            v.push((rec.recv_ns, rec.topic.to_string(), rec.payload.to_vec()));
        })
        .unwrap();
        (v, r)
    }

    #[test]
    fn records_round_trip_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, old) = Journal::open(settings(dir.path())).unwrap();
        assert!(old.is_empty());
        j.append(5, "plant/p1/flow", b"1.5").unwrap();
        j.append(7, "sensors/p2", b"{\"a\":1}").unwrap();
        j.append(9, "", b"").unwrap();
        let sync = j.commit().unwrap().expect("a handle to sync");
        sync.sync_data().unwrap();
        // A crash here: nothing closed, the file is all there is.
        drop(j);
        let (j2, old) = Journal::open(settings(dir.path())).unwrap();
        assert_eq!(old.len(), 1);
        let (recs, rep) = read_all(&old[0]);
        assert_eq!(
            recs,
            vec![
                (5, "plant/p1/flow".to_string(), b"1.5".to_vec()),
                (7, "sensors/p2".to_string(), b"{\"a\":1}".to_vec()),
                (9, String::new(), Vec::new()),
            ]
        );
        assert_eq!((rep.records, rep.damaged, rep.last_recv_ns), (3, 0, 9));
        // New segments continue after the old ones.
        assert_eq!(j2.next_seq, 1);
    }

    #[test]
    fn torn_and_corrupt_records_are_counted_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(settings(dir.path())).unwrap();
        for i in 0..4 {
            j.append(i, "t", format!("{i}").as_bytes()).unwrap();
        }
        j.commit().unwrap();
        let path = dir.path().join(segment_name(0));
        let mut bytes = fs::read(&path).unwrap();
        // Flip a payload byte of record 1 and cut record 3 short.
        let rec = 8 + 8 + 2 + 1 + 1;
        bytes[rec + rec - 1] ^= 0xff;
        bytes.truncate(bytes.len() - 3);
        fs::write(&path, &bytes).unwrap();
        let (recs, rep) = read_all(&path);
        let payloads: Vec<_> = recs.iter().map(|r| r.2.clone()).collect();
        assert_eq!(payloads, vec![b"0".to_vec(), b"2".to_vec()]);
        assert_eq!(rep.damaged, 2);
        // A length field that claims more than is there ends the segment.
        fs::write(&path, [0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0, 1]).unwrap();
        let (recs, rep) = read_all(&path);
        assert!(recs.is_empty());
        assert_eq!(rep.damaged, 1);
    }

    #[test]
    fn processed_segments_go_once_retention_passes() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(settings(dir.path())).unwrap();
        // Three segments at receive times 0.., 20_000.., 40_000..
        let mut seqs = Vec::new();
        for base in [0i64, 20_000, 40_000] {
            j.append(base, "t", b"x").unwrap();
            j.append(base + 100, "t", b"y").unwrap();
            j.commit().unwrap();
            seqs.push(j.rotate().unwrap());
        }
        assert_eq!(j.segments(), 3);
        // Only the first is confirmed: it is the newest processed, so it
        // is still inside the retention.
        assert_eq!(j.processed(seqs[0]), 0);
        // The second confirmed: the first (last at 100) is older than
        // 20_100 - 10_000.
        assert_eq!(j.processed(seqs[1]), 1);
        assert!(!dir.path().join(segment_name(seqs[0])).exists());
        // Unconfirmed segments are never deleted, however old.
        assert_eq!(j.segments(), 2);
        assert_eq!(j.trimmed, 0);
    }

    #[test]
    fn size_cap_trims_processed_history_and_counts_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path());
        s.max_bytes = 100;
        s.retention_ns = i64::MAX / 4;
        let (mut j, _) = Journal::open(s).unwrap();
        let mut last = 0;
        for i in 0..5 {
            j.append(i, "topic", &[7u8; 30]).unwrap();
            j.commit().unwrap();
            last = j.rotate().unwrap();
        }
        assert!(j.bytes() > 100);
        j.processed(last);
        assert!(j.bytes() <= 100, "{}", j.bytes());
        assert!(j.trimmed >= 3);
    }

    #[test]
    fn rotation_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path());
        s.segment_bytes = 64;
        let (mut j, _) = Journal::open(s).unwrap();
        j.append(1, "t", &[0; 10]).unwrap();
        assert!(!j.should_rotate());
        j.append(2, "t", &[0; 60]).unwrap();
        assert!(j.should_rotate());
        j.commit().unwrap();
        assert_eq!(j.rotate(), Some(0));
        assert_eq!(j.rotate(), None);
        j.append(3, "t", b"").unwrap();
        assert_eq!(j.segments(), 2);
    }
}
