//! Unit tests of the journal: round trips, damage, rollback, retention.

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
    let rec = record::HEAD + 8 + 2 + 1 + 1;
    bytes[rec + rec - 1] ^= 0xff;
    bytes.truncate(bytes.len() - 3);
    fs::write(&path, &bytes).unwrap();
    let (recs, rep) = read_all(&path);
    let payloads: Vec<_> = recs.iter().map(|r| r.2.clone()).collect();
    assert_eq!(payloads, vec![b"0".to_vec(), b"2".to_vec()]);
    assert_eq!(rep.damaged, 2);
    // A length field that claims more than is there ends a segment of the
    // format before the magic.
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

fn payloads(path: &Path) -> (Vec<Vec<u8>>, ReplayReport) {
    let (recs, rep) = read_all(path);
    (recs.into_iter().map(|r| r.2).collect(), rep)
}

fn numbered(range: std::ops::Range<i64>) -> Vec<Vec<u8>> {
    range.map(|i| format!("{i}").into_bytes()).collect()
}

/// A record torn in the middle of a segment (half of it written when the
/// disk filled, later records behind it once space returned) costs that
/// record only: the reader finds the next magic and every record after
/// the tear replays.
#[test]
fn torn_record_in_the_middle_costs_only_that_record() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(settings(dir.path())).unwrap();
    for i in 0..10 {
        j.append(i, "plant/p1/flow", format!("{i}").as_bytes())
            .unwrap();
    }
    j.commit().unwrap();
    let path = dir.path().join(segment_name(0));
    let bytes = fs::read(&path).unwrap();
    let rec = bytes.len() / 10;
    // Record 4 loses its second half: record 5 follows its first half.
    let mut torn = bytes[..4 * rec + rec / 2].to_vec();
    torn.extend_from_slice(&bytes[5 * rec..]);
    fs::write(&path, &torn).unwrap();
    let (got, rep) = payloads(&path);
    let mut want = numbered(0..4);
    want.extend(numbered(5..10));
    assert_eq!(got, want);
    assert_eq!((rep.records, rep.damaged, rep.last_recv_ns), (9, 1, 9));
    // Garbage in a length field is caught by the CRC, not followed.
    let mut bad_len = bytes.clone();
    bad_len[2 * rec + 4] ^= 0x40;
    fs::write(&path, &bad_len).unwrap();
    let (got, rep) = payloads(&path);
    assert_eq!(got.len(), 9, "{got:?}");
    assert_eq!(rep.damaged, 1);
}

/// A failed write is cut back to the last commit: what was buffered (and
/// any part of it that reached the file) is gone, and what is appended
/// after lands right behind the last good record.
#[test]
fn rollback_leaves_nothing_half_written() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(settings(dir.path())).unwrap();
    for i in 0..3 {
        j.append(i, "t", format!("{i}").as_bytes()).unwrap();
    }
    j.commit().unwrap();
    let path = dir.path().join(segment_name(0));
    let good = fs::metadata(&path).unwrap().len();
    // Two more records buffered, and half a record on disk: what a write
    // that ran out of space leaves behind.
    j.append(3, "t", b"3").unwrap();
    j.append(4, "t", b"4").unwrap();
    let mut half = Vec::new();
    record::encode(&mut half, 3, "t", b"3");
    half.truncate(half.len() / 2);
    OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(&half)
        .unwrap();
    j.rollback();
    assert_eq!(fs::metadata(&path).unwrap().len(), good);
    assert_eq!(j.bytes(), good);
    j.append(5, "t", b"5").unwrap();
    j.commit().unwrap();
    let (got, rep) = payloads(&path);
    assert_eq!(
        got,
        vec![b"0".to_vec(), b"1".to_vec(), b"2".to_vec(), b"5".to_vec()]
    );
    assert_eq!(rep.damaged, 0);
    assert!(j.probe().is_ok());
    assert!(!dir.path().join(".probe").exists());
}

/// Segments written before records carried a magic still replay.
#[test]
fn segments_of_the_older_format_still_replay() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(segment_name(0));
    let mut bytes = Vec::new();
    for i in 0..3i64 {
        let topic = b"plant/p1/flow";
        let mut body = i.to_le_bytes().to_vec();
        body.extend_from_slice(&(topic.len() as u16).to_le_bytes());
        body.extend_from_slice(topic);
        body.extend_from_slice(format!("{i}").as_bytes());
        bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        bytes.extend_from_slice(&body);
    }
    fs::write(&path, &bytes).unwrap();
    let (got, rep) = payloads(&path);
    assert_eq!(got, numbered(0..3));
    assert_eq!((rep.records, rep.damaged), (3, 0));
}

/// The highest confirmed barrier survives a restart.
#[test]
fn confirmed_barrier_is_kept_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(settings(dir.path())).unwrap();
    assert_eq!(j.confirmed_at_open(), None);
    let mut seqs = Vec::new();
    for base in [0i64, 100] {
        j.append(base, "t", b"x").unwrap();
        j.commit().unwrap();
        seqs.push(j.rotate().unwrap());
    }
    j.processed(seqs[1]);
    j.processed(seqs[0]);
    drop(j);
    let (j, paths) = Journal::open(settings(dir.path())).unwrap();
    assert_eq!(j.confirmed_at_open(), Some(seqs[1]));
    assert_eq!(Journal::segment_seq(&paths[0]), Some(seqs[0]));
    // Every segment gone (size cap): new ones still number past it.
    for p in &paths {
        fs::remove_file(p).unwrap();
    }
    let (j, paths) = Journal::open(settings(dir.path())).unwrap();
    assert!(paths.is_empty());
    assert_eq!(j.next_seq, seqs[1] + 1);
}

/// `confirmed` as an earlier version wrote it (unpadded) is read, and is
/// then overwritten in place with the padded form, whatever it held.
#[test]
fn confirmed_barrier_of_the_older_format_is_read_and_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let journal_dir = settings(dir.path()).dir;
    fs::create_dir_all(&journal_dir).unwrap();
    fs::write(journal_dir.join("confirmed"), "7\n").unwrap();
    let (mut j, _) = Journal::open(settings(dir.path())).unwrap();
    assert_eq!(j.confirmed_at_open(), Some(7));
    j.processed(12);
    j.processed(9); // older: the confirmed barrier stays at 12
    drop(j);
    let text = fs::read_to_string(journal_dir.join("confirmed")).unwrap();
    assert_eq!(text, "00000000000000000012\n");
    let (j, _) = Journal::open(settings(dir.path())).unwrap();
    assert_eq!(j.confirmed_at_open(), Some(12));
}

#[test]
fn records_written_out_survive_a_crash_of_the_process_before_their_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(settings(dir.path())).unwrap();
    j.append(5, "sensors/p1", b"1").unwrap();
    j.append(6, "sensors/p2", b"2").unwrap();
    let path = j.current.as_ref().unwrap().0.path.clone();
    // Buffered: a crash now would lose both.
    assert_eq!(read_all(&path).0.len(), 0);
    j.write_out().unwrap();
    j.append(7, "sensors/p3", b"3").unwrap();
    // A crash here (no drop, so no flush of what is buffered): the file
    // holds what was written out, not the record after it.
    let (recs, rep) = read_all(&path);
    std::mem::forget(j);
    assert_eq!(
        recs,
        vec![
            (5, "sensors/p1".to_string(), b"1".to_vec()),
            (6, "sensors/p2".to_string(), b"2".to_vec()),
        ]
    );
    assert_eq!(rep.damaged, 0);
}
