//! The runner's tests: batching, retries, splitting, bisecting and the spool.
use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::watch;

use super::*;
use crate::core::detect::DetectorSettings;
use crate::pipeline::{AssetBinding, ScoreRecord};

/// Records what it is sent; answers with the scripted failures first,
/// then refuses (400) any body holding the line `refuse`, and (413)
/// any body of more than `max_lines` lines.
#[derive(Default)]
struct Recorder {
    sent: Arc<Mutex<Vec<String>>>,
    failures: Mutex<VecDeque<WriteFailure>>,
    refuse: Option<&'static str>,
    max_lines: Option<usize>,
}

impl BatchWriter for Recorder {
    async fn write(&self, body: String) -> Result<(), WriteFailure> {
        if let Some(f) = self.failures.lock().unwrap().pop_front() {
            return Err(f);
        }
        if self.max_lines.is_some_and(|m| body.lines().count() > m) {
            return Err(WriteFailure::TooLarge("413".into()));
        }
        if let Some(bad) = self.refuse
            && body.lines().any(|l| l == bad)
        {
            return Err(WriteFailure::Reject("400: type conflict".into()));
        }
        self.sent.lock().unwrap().push(body);
        Ok(())
    }
}

fn score(ts: i64) -> Output {
    Output::Score(ScoreRecord {
        binding: Arc::new(AssetBinding {
            asset: "a".into(),
            model: "m".into(),
            detector: DetectorSettings {
                threshold: 1.0,
                raise_after: 1,
                clear_after: 1,
                clear_ratio: 0.8,
                adapt: Default::default(),
            },
            channels: vec![].into(),
        }),
        ts,
        score: 0.0,
        threshold: 1.0,
        anomalous: false,
        probability: f64::NAN,
        channel_error: vec![],
    })
}

/// Runs `outputs` through a runner (batches of `batch`) to the end of
/// the channel; returns what was sent, the metrics and the highest
/// barrier acknowledged.
async fn run_with(
    outputs: Vec<Output>,
    writer: Recorder,
    batch: usize,
    store: SinkStore,
) -> (Vec<String>, Arc<Metrics>, Option<u64>) {
    let sent = writer.sent.clone();
    let metrics = Arc::new(Metrics::default());
    let runner = new_runner(
        writer,
        batch,
        Duration::from_secs(3600),
        store,
        metrics.clone(),
    );
    let (tx, rx) = mpsc::channel(outputs.len());
    // The journal the barriers answer (every barrier here shares one).
    let confirm = outputs.iter().find_map(|o| match o {
        Output::Barrier(b) => Some(b.confirm.clone()),
        _ => None,
    });
    for o in outputs {
        tx.send(o).await.unwrap();
    }
    drop(tx);
    runner.run(rx, ts_lines).await;
    let acks = confirm.and_then(|c| *c.borrow());
    let sent = sent.lock().unwrap().clone();
    (sent, metrics, acks)
}

async fn run(
    outputs: Vec<Output>,
    failures: Vec<WriteFailure>,
) -> (Vec<String>, Arc<Metrics>, Option<u64>) {
    let writer = Recorder {
        failures: Mutex::new(failures.into()),
        ..Recorder::default()
    };
    run_with(outputs, writer, 2, SinkStore::default()).await
}

fn barrier(seq: u64) -> Output {
    Output::Barrier(crate::pipeline::Barrier {
        seq,
        confirm: Arc::new(watch::channel(None).0),
    })
}

fn lines(ts: std::ops::RangeInclusive<i64>) -> String {
    ts.map(|t| format!("{t}\n")).collect()
}

// The interval's first tick may land at any point of a short run and
// send a batch early, so batches are checked for their bound, not
// their exact cut.
#[tokio::test]
async fn batches_by_size_and_flushes_the_rest_at_the_end() {
    let (sent, metrics, _) = run((1..=5).map(score).collect(), vec![]).await;
    assert_eq!(sent.concat(), lines(1..=5));
    assert!(sent.iter().all(|b| b.lines().count() <= 2), "{sent:?}");
    assert_eq!(metrics.points_written.load(Relaxed), 5);
    assert!(metrics.last_write_unix_s.load(Relaxed) > 0);
}

#[tokio::test]
async fn a_barrier_flushes_what_came_before_it() {
    let (sent, _, acks) = run(vec![score(1), barrier(7), score(2)], vec![]).await;
    assert_eq!(sent, ["1\n", "2\n"]);
    assert_eq!(acks, Some(7));
}

#[tokio::test]
async fn retry_and_refusal_keep_the_batch_until_it_is_written() {
    let failures = vec![
        WriteFailure::Retry("503".into()),
        WriteFailure::Refused("401".into()),
        WriteFailure::Refused("404".into()),
    ];
    let (sent, metrics, _) = run((1..=4).map(score).collect(), failures).await;
    assert_eq!(sent.concat(), lines(1..=4));
    assert_eq!(metrics.points_dropped.load(Relaxed), 0);
    assert_eq!(metrics.write_retries.load(Relaxed), 3);
    assert_eq!(metrics.write_errors.load(Relaxed), 3);
    assert_eq!(metrics.points_written.load(Relaxed), 4);
    // Written at last: the sink is healthy again.
    assert_eq!(metrics.sink_refusal(), None);
}

#[tokio::test]
async fn a_refusal_marks_the_sink_unhealthy_while_it_lasts() {
    let metrics = Arc::new(Metrics::default());
    let writer = Recorder {
        failures: Mutex::new(vec![WriteFailure::Refused("HTTP 401: bad password".into())].into()),
        ..Recorder::default()
    };
    let mut runner = Runner::new(
        writer,
        BatchSettings {
            batch_size: 1,
            flush_interval: Duration::from_secs(3600),
            retry_min: Duration::from_millis(1),
            retry_max: Duration::from_millis(1),
        },
        metrics.clone(),
        CancellationToken::new(),
        SinkStore::default(),
    );
    let failed = runner.deliver("1\n".into()).await.unwrap_err();
    assert_eq!(failed.0, "1\n");
    runner.must_wait(&failed.1);
    assert_eq!(
        metrics.sink_refusal().as_deref(),
        Some("HTTP 401: bad password")
    );
    assert!(metrics.render().contains("anomalyd_sink_refusing 1"));
    runner.deliver("1\n".into()).await.unwrap();
    assert_eq!(metrics.sink_refusal(), None);
    assert!(metrics.render().contains("anomalyd_sink_refusing 0"));
}

#[tokio::test]
async fn a_refused_point_is_bisected_out_to_the_dead_letter_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = SinkStore {
        spool: None,
        dead_letter: Some(RefusedPoints::open(dir.path(), 1 << 20).unwrap()),
    };
    let writer = Recorder {
        refuse: Some("6"),
        ..Recorder::default()
    };
    let (sent, metrics, _) = run_with((1..=8).map(score).collect(), writer, 8, store).await;
    let mut written: Vec<i64> = sent
        .iter()
        .flat_map(|b| b.lines())
        .map(|l| l.parse().unwrap())
        .collect();
    written.sort();
    assert_eq!(written, [1, 2, 3, 4, 5, 7, 8]);
    assert_eq!(metrics.points_written.load(Relaxed), 7);
    assert_eq!(metrics.points_dead_lettered.load(Relaxed), 1);
    assert_eq!(metrics.points_dropped.load(Relaxed), 0);
    let dead = std::fs::read_to_string(dir.path().join("dead-letter.lp")).unwrap();
    let body: Vec<&str> = dead.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(body, ["6"], "{dead}");
    assert!(dead.contains("400: type conflict"), "{dead}");
}

#[tokio::test]
async fn a_body_too_large_is_split_until_it_fits() {
    let writer = Recorder {
        max_lines: Some(3),
        ..Recorder::default()
    };
    let (sent, metrics, _) = run_with(
        (1..=10).map(score).collect(),
        writer,
        10,
        SinkStore::default(),
    )
    .await;
    assert_eq!(sent.concat(), lines(1..=10));
    assert!(sent.iter().all(|b| b.lines().count() <= 3), "{sent:?}");
    assert_eq!(metrics.points_written.load(Relaxed), 10);
    assert_eq!(metrics.points_dropped.load(Relaxed), 0);
}

#[test]
fn split_lines_cuts_at_a_line_end() {
    assert_eq!(split_lines("1\n"), None);
    assert_eq!(
        split_lines("1\n2\n3\n"),
        Some(("1\n".to_string(), "2\n3\n".to_string()))
    );
    assert_eq!(points_in("# why\n1\n2\n"), 2);
}

/// A runner over `writer` with quick retries.
fn new_runner(
    writer: Recorder,
    batch_size: usize,
    flush: Duration,
    store: SinkStore,
    metrics: Arc<Metrics>,
) -> Runner<Recorder> {
    let settings = BatchSettings {
        batch_size,
        flush_interval: flush,
        retry_min: Duration::from_millis(1),
        retry_max: Duration::from_millis(2),
    };
    Runner::new(writer, settings, metrics, CancellationToken::new(), store)
}

/// Encodes a score as its timestamp, one per line.
fn ts_lines(o: &Output, buf: &mut String) {
    if let Output::Score(r) = o {
        buf.push_str(&format!("{}\n", r.ts));
    }
}

/// A runner with the given flush interval and batch size, for a nudging
/// queue; what it sent is shared.
fn quiet_runner(flush: Duration, batch_size: usize) -> (Runner<Recorder>, Arc<Mutex<Vec<String>>>) {
    let writer = Recorder::default();
    let sent = writer.sent.clone();
    let metrics = Arc::new(Metrics::default());
    let runner = new_runner(writer, batch_size, flush, SinkStore::default(), metrics);
    (runner, sent)
}

/// Sends scores `range` from a thread outside the runtime, as the scoring
/// thread does, `gap` apart.
fn send_scores(
    tx: &Arc<SinkSender<Output>>,
    range: std::ops::Range<i64>,
    gap: Duration,
) -> tokio::task::JoinHandle<()> {
    let tx = tx.clone();
    tokio::task::spawn_blocking(move || {
        for t in range {
            std::thread::sleep(gap);
            tx.blocking_send(score(t))
                .map_err(|_| "the sink is gone")
                .unwrap();
        }
    })
}

/// Waits until the sink has written `n` lines, failing with `what` after
/// `limit`.
async fn wait_written(sent: &Mutex<Vec<String>>, n: usize, limit: Duration, what: &str) {
    let deadline = tokio::time::Instant::now() + limit;
    while sent.lock().unwrap().concat().lines().count() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {:?}",
            sent.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_quiet_sink_is_nudged_by_a_flood_and_by_the_end_of_its_queue() {
    // The interval's first tick passes at once with nothing taken: the
    // runner then waits for an hour's tick or a nudge.
    let (runner, sent) = quiet_runner(Duration::from_secs(3600), 1000);
    let (tx, rx) = sink_queue::<Output>(4);
    let mut task = tokio::spawn(runner.run(rx, ts_lines));
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Five times the queue's capacity, from a thread outside the runtime
    // as the scoring thread sends: without a nudge at half capacity the
    // sender would wait for the hour's tick.
    let sender = std::thread::spawn(move || {
        for t in 0..20 {
            assert!(tx.blocking_send(score(t)).is_ok(), "the sink is gone");
        }
    });
    let done = tokio::time::timeout(Duration::from_secs(20), &mut task).await;
    // A stuck sink is stopped, which frees a stuck sender.
    task.abort();
    let _ = sender.join();
    assert!(
        done.is_ok(),
        "the sink did not take the flood or see the end of its queue"
    );
    assert_eq!(sent.lock().unwrap().concat(), lines(0..=19));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_quiet_sink_writes_what_trickles_in_at_its_tick() {
    let (runner, sent) = quiet_runner(Duration::from_millis(300), 1000);
    let (tx, rx) = sink_queue::<Output>(64);
    let task = tokio::spawn(runner.run(rx, ts_lines));
    let tx = Arc::new(tx);
    send_scores(&tx, 0..3, Duration::from_millis(50))
        .await
        .unwrap();
    // No nudge came (the queue never half filled), yet the scores are
    // written by the next flush, with the sender still open.
    wait_written(&sent, 3, Duration::from_secs(5), "not written").await;
    assert_eq!(sent.lock().unwrap().concat(), lines(0..=2));
    drop(tx);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_sink_that_filled_half_a_write_takes_the_next_at_once() {
    let flush = Duration::from_secs(2);
    let (runner, sent) = quiet_runner(flush, 4);
    let (tx, rx) = sink_queue::<Output>(64);
    let tx = Arc::new(tx);
    let task = tokio::spawn(runner.run(rx, ts_lines));
    // The interval's first tick passes at once with nothing taken; the
    // next interval is quiet: two writes' worth wait for its tick.
    tokio::time::sleep(Duration::from_millis(100)).await;
    send_scores(&tx, 0..8, Duration::ZERO).await.unwrap();
    wait_written(&sent, 8, flush * 3, "not written at the tick").await;
    // That interval filled more than half a write: the sink now takes
    // each score as it comes, and a full write goes at once, long before
    // the next tick.
    send_scores(&tx, 8..12, Duration::ZERO).await.unwrap();
    wait_written(&sent, 12, flush / 2, "a full write waited for the tick").await;
    drop(tx);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sent.lock().unwrap().concat(), lines(0..=11));
}
