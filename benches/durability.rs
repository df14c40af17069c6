//! Criterion benchmarks of the durable paths, on the disk the bench runs
//! on (a temporary directory under `$TMPDIR`):
//! - the spool: one batch of 5,000 score points (line protocol, about
//!   1 MB) written atomically with fsync, and read back and removed as a
//!   drain does; per point.
//! - the intake journal: 256 frame messages appended and group-committed
//!   with one `fdatasync`, as the MQTT source does between polls; per
//!   message. And the same without the sync (`journal.fsync = false`).
//!
//! `cargo bench -p anomalyd --bench durability` (see BENCHMARKS.md).

use std::hint::black_box;
use std::time::Duration;

use anomalyd::cmd::simulate::{Layout, MessageFormatter};
use anomalyd::core::synth::{PUMP_CHANNELS, generate};
use anomalyd::state::Spool;
use anomalyd::state::{Journal, JournalSettings};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const START_NS: i64 = 1_767_225_600_000_000_000;
const POINTS: usize = 5_000;
const MESSAGES: usize = 256;

fn batch() -> String {
    let mut body = String::new();
    for i in 0..POINTS {
        body.push_str(&format!(
            "anomaly_score,asset=pump-{:03},model=pump score=0.0{i},threshold=0.59,anomalous=false,probability=0.5,err_vibration_1=0.01,err_vibration_2=0.02,err_current=0.03,err_pressure=0.04 {}\n",
            i % 200,
            START_NS + i as i64 * 1_000_000_000
        ));
    }
    body
}

fn spool(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let body = batch();
    let mut g = c.benchmark_group("spool");
    g.throughput(Throughput::Elements(POINTS as u64));
    g.bench_function("push_5000_points_fsync", |b| {
        let (mut sp, _) = Spool::open(dir.path(), 1 << 34).expect("spool");
        b.iter(|| sp.push(black_box(&body), POINTS as u64).expect("push"));
    });
    g.bench_function("read_and_remove_5000_points", |b| {
        let (mut sp, _) = Spool::open(dir.path(), 1 << 34).expect("spool");
        b.iter(|| {
            if sp.is_empty() {
                sp.push(&body, POINTS as u64).expect("push");
            }
            let batch = sp.oldest().expect("read").expect("a batch");
            sp.remove(black_box(batch.seq)).expect("remove");
        });
    });
    g.finish();
}

fn journal(c: &mut Criterion) {
    let log = generate(MESSAGES, 5, START_NS, 1_000_000_000, None);
    let channels: Vec<String> = PUMP_CHANNELS.iter().map(|c| c.to_string()).collect();
    let fmt = MessageFormatter::new(
        "sensors/{asset}",
        Layout::JsonFrame,
        &["pump-001".to_string()],
        &channels,
    )
    .expect("formatter");
    let mut msgs = Vec::new();
    for i in 0..MESSAGES {
        fmt.format_row(0, log.timestamps[i] / 1_000_000, &log.values[i], &mut msgs);
    }
    let mut g = c.benchmark_group("journal");
    g.throughput(Throughput::Elements(MESSAGES as u64));
    for fsync in [true, false] {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut j, _) = Journal::open(JournalSettings {
            dir: dir.path().to_path_buf(),
            max_bytes: 1 << 34,
            segment_bytes: 8 << 20,
            segment_age: Duration::from_secs(3600),
            retention_ns: 0,
            fsync,
        })
        .expect("journal");
        let name = if fsync {
            "append_256_and_fdatasync"
        } else {
            "append_256_no_sync"
        };
        let mut seq = 0u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                for (topic, payload) in &msgs {
                    j.append(START_NS, topic, payload.as_bytes())
                        .expect("append");
                }
                if let Some(f) = j.commit().expect("commit") {
                    f.sync_data().expect("sync");
                }
                if j.should_rotate()
                    && let Some(s) = j.rotate()
                {
                    seq = s;
                    j.processed(seq);
                }
            });
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3));
    targets = spool, journal
}
criterion_main!(benches);
