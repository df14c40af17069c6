//! The durable store-and-forward spool: line-protocol batches the database
//! could not take are written to a bounded directory of segment files and
//! drained in order when it is back, also after a restart or `kill -9`.
//!
//! Each segment is one batch, written to a temporary file, fsynced and
//! renamed into place (atomic), with a header carrying a magic, the point
//! count, the length and a CRC-32 of the body. A segment that fails its
//! check is moved to `quarantine/` and reported, never fatal. When the
//! spool is full, the oldest segments are dropped and counted.

use std::collections::VecDeque;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"ADSPOOL1";
const HEADER: usize = 8 + 8 + 8 + 4;

/// Errors of the spool's own I/O.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("spool {dir}: a batch of {bytes} bytes is larger than the spool ({max} bytes)")]
    TooLarge { dir: PathBuf, bytes: u64, max: u64 },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    seq: u64,
    bytes: u64,
    points: u64,
}

/// What `open` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    pub segments: usize,
    pub points: u64,
    pub quarantined: usize,
    pub leftover_temp_files: usize,
}

/// A batch read back from the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledBatch {
    pub seq: u64,
    pub points: u64,
    pub body: String,
}

/// The spool directory.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segments: VecDeque<Segment>,
    next_seq: u64,
    bytes: u64,
    points: u64,
    /// Points dropped because the spool was full (oldest first).
    pub dropped_points: u64,
    /// Segments moved to quarantine because they failed their check.
    pub quarantined: u64,
}

impl Spool {
    /// Opens (creating) the spool in `dir`, indexing the segments already
    /// there. Headers that do not parse are quarantined right away; bodies
    /// are checked when read.
    ///
    /// # Errors
    /// The directory cannot be created or listed.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<(Self, OpenReport), SpoolError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let mut report = OpenReport::default();
        let mut found = Vec::new();
        // Numbering continues after every number ever seen here, so a new
        // segment never takes the name of a quarantined one.
        let mut next_seq = 0u64;
        for entry in fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(seq) = name.split('.').next().and_then(|s| s.parse::<u64>().ok()) {
                next_seq = next_seq.max(seq + 1);
            }
            if name.ends_with(".tmp") {
                // A write interrupted by a crash: it never became a segment.
                let _ = fs::remove_file(&path);
                report.leftover_temp_files += 1;
                continue;
            }
            let Some(seq) = name
                .strip_suffix(".seg")
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            match read_header(&path) {
                Ok((points, len)) => found.push(Segment {
                    seq,
                    bytes: HEADER as u64 + len,
                    points,
                }),
                Err(why) => {
                    quarantine(dir, &path, &why);
                    report.quarantined += 1;
                }
            }
        }
        found.sort_by_key(|s| s.seq);
        let bytes = found.iter().map(|s| s.bytes).sum();
        let points = found.iter().map(|s| s.points).sum();
        report.segments = found.len();
        report.points = points;
        Ok((
            Self {
                dir: dir.to_path_buf(),
                max_bytes,
                segments: found.into(),
                next_seq,
                bytes,
                points,
                dropped_points: 0,
                quarantined: report.quarantined as u64,
            },
            report,
        ))
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Points waiting in the spool.
    pub fn points(&self) -> u64 {
        self.points
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn segments(&self) -> usize {
        self.segments.len()
    }

    fn path_of(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.seg"))
    }

    /// Appends a batch atomically; drops the oldest segments (counted) when
    /// the spool would exceed its size.
    ///
    /// # Errors
    /// The batch cannot be written (disk full, permissions) or is larger
    /// than the whole spool.
    pub fn push(&mut self, body: &str, points: u64) -> Result<(), SpoolError> {
        let size = (HEADER + body.len()) as u64;
        if size > self.max_bytes {
            return Err(SpoolError::TooLarge {
                dir: self.dir.clone(),
                bytes: size,
                max: self.max_bytes,
            });
        }
        while self.bytes + size > self.max_bytes {
            let Some(old) = self.segments.pop_front() else {
                break;
            };
            let path = self.path_of(old.seq);
            fs::remove_file(&path).map_err(io(&path))?;
            self.bytes -= old.bytes;
            self.points -= old.points;
            self.dropped_points += old.points;
            tracing::error!(points = old.points, "spool full: dropped its oldest batch");
        }
        let seq = self.next_seq;
        self.write_segment(seq, body, points)?;
        self.next_seq += 1;
        self.segments.push_back(Segment {
            seq,
            bytes: size,
            points,
        });
        self.bytes += size;
        self.points += points;
        Ok(())
    }

    /// Writes segment `seq` atomically (temporary file, fsync, rename).
    fn write_segment(&self, seq: u64, body: &str, points: u64) -> Result<(), SpoolError> {
        let path = self.path_of(seq);
        let tmp = self.dir.join(format!("{seq:020}.tmp"));
        let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
        let mut head = Vec::with_capacity(HEADER);
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&points.to_le_bytes());
        head.extend_from_slice(&(body.len() as u64).to_le_bytes());
        head.extend_from_slice(&crc32fast::hash(body.as_bytes()).to_le_bytes());
        let written = f
            .write_all(&head)
            .and_then(|()| f.write_all(body.as_bytes()))
            .and_then(|()| f.sync_all());
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(SpoolError::Io {
                path: tmp,
                source: e,
            });
        }
        drop(f);
        fs::rename(&tmp, &path).map_err(io(&path))?;
        if let Ok(d) = fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Replaces the oldest batch (the one `oldest` returned) with what is
    /// left of it after part was delivered, keeping its place in line.
    ///
    /// # Errors
    /// The new segment cannot be written; the old one then stays whole.
    pub fn replace_oldest(&mut self, seq: u64, body: &str, points: u64) -> Result<(), SpoolError> {
        let Some(front) = self.segments.front().copied().filter(|s| s.seq == seq) else {
            return Ok(());
        };
        self.write_segment(seq, body, points)?;
        let size = (HEADER + body.len()) as u64;
        self.bytes = self.bytes - front.bytes + size;
        self.points = self.points - front.points + points;
        if let Some(f) = self.segments.front_mut() {
            f.bytes = size;
            f.points = points;
        }
        Ok(())
    }

    /// The oldest intact batch; corrupt segments met on the way are
    /// quarantined and skipped.
    ///
    /// # Errors
    /// A segment that exists but cannot be read for an I/O reason.
    pub fn oldest(&mut self) -> Result<Option<SpooledBatch>, SpoolError> {
        while let Some(seg) = self.segments.front().copied() {
            let path = self.path_of(seg.seq);
            let data = match fs::read(&path) {
                Ok(d) => d,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.forget_front();
                    continue;
                }
                Err(e) => return Err(SpoolError::Io { path, source: e }),
            };
            match check(&data) {
                Ok((points, body)) => {
                    return Ok(Some(SpooledBatch {
                        seq: seg.seq,
                        points,
                        body,
                    }));
                }
                Err(why) => {
                    quarantine(&self.dir, &path, &why);
                    self.quarantined += 1;
                    self.forget_front();
                }
            }
        }
        Ok(None)
    }

    fn forget_front(&mut self) {
        if let Some(seg) = self.segments.pop_front() {
            self.bytes -= seg.bytes;
            self.points -= seg.points;
        }
    }

    /// Removes a drained batch (the one `oldest` returned).
    ///
    /// # Errors
    /// The file cannot be removed.
    pub fn remove(&mut self, seq: u64) -> Result<(), SpoolError> {
        if self.segments.front().is_some_and(|s| s.seq == seq) {
            let path = self.path_of(seq);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(SpoolError::Io { path, source: e }),
            }
            self.forget_front();
        }
        Ok(())
    }
}

fn read_header(path: &Path) -> Result<(u64, u64), String> {
    use std::io::Read as _;
    let mut f = fs::File::open(path).map_err(|e| e.to_string())?;
    let mut head = [0u8; HEADER];
    f.read_exact(&mut head)
        .map_err(|_| "shorter than its header".to_string())?;
    let (points, len, _) = parse_header(&head)?;
    let actual = f.metadata().map_err(|e| e.to_string())?.len();
    if actual != HEADER as u64 + len {
        return Err(format!(
            "length {actual} does not match its header ({})",
            HEADER as u64 + len
        ));
    }
    Ok((points, len))
}

fn parse_header(head: &[u8]) -> Result<(u64, u64, u32), String> {
    if head.len() < HEADER || &head[..8] != MAGIC {
        return Err("bad magic".into());
    }
    let num = |r: std::ops::Range<usize>| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&head[r]);
        u64::from_le_bytes(b)
    };
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&head[24..28]);
    Ok((num(8..16), num(16..24), u32::from_le_bytes(crc)))
}

fn check(data: &[u8]) -> Result<(u64, String), String> {
    let (points, len, crc) = parse_header(data)?;
    let body = &data[HEADER..];
    if body.len() as u64 != len {
        return Err(format!("body is {} bytes, header says {len}", body.len()));
    }
    if crc32fast::hash(body) != crc {
        return Err("checksum mismatch".into());
    }
    String::from_utf8(body.to_vec())
        .map(|s| (points, s))
        .map_err(|_| "body is not UTF-8".into())
}

fn quarantine(dir: &Path, path: &Path, why: &str) {
    let qdir = dir.join("quarantine");
    let _ = fs::create_dir_all(&qdir);
    let target = qdir.join(path.file_name().unwrap_or_default());
    match fs::rename(path, &target) {
        Ok(()) => tracing::error!(
            segment = %path.display(),
            moved_to = %target.display(),
            reason = why,
            "corrupt spool segment quarantined"
        ),
        Err(e) => {
            tracing::error!(segment = %path.display(), reason = why, error = %e, "corrupt spool segment could not be moved; removing it");
            let _ = fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_come_back_in_order_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, r) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(r, OpenReport::default());
        s.push("a 1\n", 1).unwrap();
        s.push("b 1\nb 2\n", 2).unwrap();
        assert_eq!(s.points(), 3);
        drop(s);
        let (mut s, r) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!((r.segments, r.points), (2, 3));
        let first = s.oldest().unwrap().unwrap();
        assert_eq!((first.body.as_str(), first.points), ("a 1\n", 1));
        s.remove(first.seq).unwrap();
        s.push("c 1\n", 1).unwrap();
        let second = s.oldest().unwrap().unwrap();
        assert_eq!(second.body, "b 1\nb 2\n");
        s.remove(second.seq).unwrap();
        assert_eq!(s.oldest().unwrap().unwrap().body, "c 1\n");
    }

    #[test]
    fn full_spool_drops_oldest_and_counts_points() {
        let dir = tempfile::tempdir().unwrap();
        let one = (HEADER + 4) as u64;
        let (mut s, _) = Spool::open(dir.path(), one * 2).unwrap();
        s.push("x 1\n", 5).unwrap();
        s.push("y 1\n", 6).unwrap();
        s.push("z 1\n", 7).unwrap();
        assert_eq!(s.dropped_points, 5);
        assert_eq!(s.segments(), 2);
        assert_eq!(s.oldest().unwrap().unwrap().body, "y 1\n");
        assert!(matches!(
            s.push(&"q".repeat(100), 1),
            Err(SpoolError::TooLarge { .. })
        ));
    }

    #[test]
    fn corrupt_segments_are_quarantined_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), 1 << 20).unwrap();
        s.push("good 1\n", 1).unwrap();
        s.push("flip 1\n", 1).unwrap();
        s.push("last 1\n", 1).unwrap();
        drop(s);
        // Flip a body byte of the second segment, truncate the third's header,
        // and leave an interrupted temp file behind.
        let p1 = dir.path().join(format!("{:020}.seg", 1));
        let mut d = fs::read(&p1).unwrap();
        let n = d.len();
        d[n - 2] ^= 0x55;
        fs::write(&p1, d).unwrap();
        fs::write(dir.path().join(format!("{:020}.seg", 2)), b"ADSP").unwrap();
        fs::write(dir.path().join(format!("{:020}.tmp", 3)), b"partial").unwrap();
        let (mut s, r) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(r.quarantined, 1, "truncated header found at open");
        assert_eq!(r.leftover_temp_files, 1);
        let a = s.oldest().unwrap().unwrap();
        assert_eq!(a.body, "good 1\n");
        s.remove(a.seq).unwrap();
        // The flipped one fails its checksum when read.
        assert!(s.oldest().unwrap().is_none());
        assert_eq!(s.quarantined, 2);
        assert_eq!(
            fs::read_dir(dir.path().join("quarantine")).unwrap().count(),
            2
        );
        // New batches keep numbering after the highest seen.
        s.push("new 1\n", 1).unwrap();
        assert_eq!(s.oldest().unwrap().unwrap().seq, 4);
    }
}
