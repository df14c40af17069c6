//! The journal's record format, and reading a segment back with
//! resynchronisation after damage (docs/durability.md §1).
//!
//! Record (little-endian): `magic [4], u32 len, u32 crc32(len ‖ body), body`
//! with body = `i64 receive time (ns), u16 topic length, topic, payload`.
//! The CRC covers the length too, so a damaged length field is caught
//! rather than followed. After a damaged record the reader scans for the
//! next magic whose record checks out and carries on from there, as
//! LevelDB's log reader skips to its next block: a record torn in the
//! middle of a segment costs that record only.
//!
//! Segments written before the magic existed (`u32 len, u32 crc(body),
//! body`) are read with the old rule: a damaged record ends the segment.
//! A legacy segment never starts with the magic (its first word is a
//! length of at most [`MAX_RECORD`], the magic's is above it) and is told
//! apart by that.

/// Marks the start of every record. As a little-endian `u32` it exceeds
/// [`MAX_RECORD`], so no legacy segment starts with it.
pub(super) const MAGIC: [u8; 4] = [0xD5, 0x4A, 0x52, 0xE7];
/// Bytes before the body: magic, length, CRC.
pub(super) const HEAD: usize = 12;
/// Largest body accepted when reading back (a damaged length field must
/// not make replay allocate gigabytes).
pub(super) const MAX_RECORD: usize = 64 * 1024 * 1024;

/// What reading one segment back found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayReport {
    pub records: u64,
    /// Damaged stretches skipped: a record that failed its checksum or was
    /// cut short, with whatever garbage followed it up to the next intact
    /// record.
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

/// Appends one encoded record to `out`. The topic is cut to 65,535 bytes.
pub(crate) fn encode(out: &mut Vec<u8>, recv_ns: i64, topic: &str, payload: &[u8]) {
    let topic = &topic.as_bytes()[..topic.len().min(u16::MAX as usize)];
    let body_len = (8 + 2 + topic.len() + payload.len()) as u32;
    out.reserve(HEAD + body_len as usize);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&body_len.to_le_bytes());
    let crc_at = out.len();
    out.extend_from_slice(&[0; 4]);
    let body_at = out.len();
    out.extend_from_slice(&recv_ns.to_le_bytes());
    out.extend_from_slice(&(topic.len() as u16).to_le_bytes());
    out.extend_from_slice(topic);
    out.extend_from_slice(payload);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&body_len.to_le_bytes());
    crc.update(&out[body_at..]);
    out[crc_at..crc_at + 4].copy_from_slice(&crc.finalize().to_le_bytes());
}

fn word(b: &[u8], at: usize) -> Option<u32> {
    let w = b.get(at..at + 4)?;
    Some(u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
}

/// Splits a body into its fields; `None` when it is too short or the topic
/// is not UTF-8.
fn parse_body(body: &[u8]) -> Option<Record<'_>> {
    let recv_ns = i64::from_le_bytes(body.get(0..8)?.try_into().ok()?);
    let tlen = u16::from_le_bytes(body.get(8..10)?.try_into().ok()?) as usize;
    let topic = std::str::from_utf8(body.get(10..10 + tlen)?).ok()?;
    Some(Record {
        recv_ns,
        topic,
        payload: &body[10 + tlen..],
    })
}

/// The record starting at `at` when it is whole and intact, with its size.
fn record_at(bytes: &[u8], at: usize) -> Option<(Record<'_>, usize)> {
    if bytes.get(at..at + 4)? != MAGIC {
        return None;
    }
    let len = word(bytes, at + 4)? as usize;
    let crc = word(bytes, at + 8)?;
    if len > MAX_RECORD {
        return None;
    }
    let body = bytes.get(at + HEAD..at + HEAD + len)?;
    let mut h = crc32fast::Hasher::new();
    h.update(&(len as u32).to_le_bytes());
    h.update(body);
    if h.finalize() != crc {
        return None;
    }
    Some((parse_body(body)?, HEAD + len))
}

/// Position of the next magic at or after `from`.
fn find_magic(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while at + MAGIC.len() <= bytes.len() {
        let k = bytes[at..].iter().position(|&b| b == MAGIC[0])?;
        at += k;
        if bytes.get(at..at + MAGIC.len()) == Some(&MAGIC[..]) {
            return Some(at);
        }
        at += 1;
    }
    None
}

/// Whether a segment predates the magic: it does not start with one and
/// holds none.
fn is_legacy(bytes: &[u8]) -> bool {
    !bytes.is_empty() && !bytes.starts_with(&MAGIC) && find_magic(bytes, 0).is_none()
}

/// Reads every intact record of a segment's bytes, oldest first.
pub(super) fn read_segment(bytes: &[u8], mut each: impl FnMut(Record<'_>)) -> ReplayReport {
    let mut report = ReplayReport {
        last_recv_ns: i64::MIN,
        ..ReplayReport::default()
    };
    let mut emit = |r: Record<'_>, report: &mut ReplayReport| {
        report.records += 1;
        report.last_recv_ns = report.last_recv_ns.max(r.recv_ns);
        each(r);
    };
    if is_legacy(bytes) {
        let mut damaged = 0;
        read_legacy(bytes, |r| emit(r, &mut report), &mut damaged);
        report.damaged = damaged;
        return report;
    }
    let mut at = 0usize;
    let mut in_damage = false;
    while at < bytes.len() {
        if let Some((rec, size)) = record_at(bytes, at) {
            emit(rec, &mut report);
            at += size;
            in_damage = false;
            continue;
        }
        if !in_damage {
            report.damaged += 1;
            in_damage = true;
        }
        match find_magic(bytes, at + 1) {
            Some(next) => at = next,
            None => break,
        }
    }
    report
}

/// The format before the magic: `u32 len, u32 crc32(body), body`. A record
/// cut short ends the segment; one failing its checksum is skipped by its
/// length.
fn read_legacy(bytes: &[u8], mut each: impl FnMut(Record<'_>), damaged: &mut u64) {
    let mut at = 0usize;
    while at < bytes.len() {
        let (Some(len), Some(crc)) = (word(bytes, at), word(bytes, at + 4)) else {
            *damaged += 1;
            break;
        };
        let len = len as usize;
        let Some(body) = bytes
            .get(at + 8..at + 8 + len)
            .filter(|_| len <= MAX_RECORD)
        else {
            *damaged += 1;
            break;
        };
        at += 8 + len;
        match parse_body(body).filter(|_| crc32fast::hash(body) == crc) {
            Some(r) => each(r),
            None => *damaged += 1,
        }
    }
}
