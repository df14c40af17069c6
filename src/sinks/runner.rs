//! The batch/retry/spool runner every database sink shares
//! (docs/architecture.md §6): outputs are encoded into a batch body, sent
//! by size and by time through a [`BatchWriter`], retried with capped
//! exponential backoff, spooled to disk when a spool is configured,
//! drained in the background, and flushed on shutdown. It knows nothing
//! of the database behind the writer nor of the body's format.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::ops::metrics::Metrics;
use crate::pipeline::Output;
use crate::state::spool::Spool;

/// How a failed write is handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteFailure {
    /// Try again later (connection error, timeout, 5xx, 429).
    Retry(String),
    /// The server refused the data itself (4xx): retrying cannot help.
    Reject(String),
}

/// Sends one batch body to a database.
///
/// The runner owns batching, retries and the spool; an implementation only
/// sends and says whether a failure is worth retrying.
pub trait BatchWriter: Send + Sync {
    /// Writes one batch.
    ///
    /// # Errors
    /// [`WriteFailure`] says whether retrying can help.
    fn write(&self, body: String) -> impl Future<Output = Result<(), WriteFailure>> + Send;
}

/// When batches are sent and how failures back off.
#[derive(Debug, Clone)]
pub struct BatchSettings {
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub retry_min: Duration,
    pub retry_max: Duration,
}

/// One writer with its batching, retry and spool state.
pub struct Runner<W> {
    writer: W,
    settings: BatchSettings,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    spool: Option<Spool>,
    delay: Duration,
    next_drain: tokio::time::Instant,
}

impl<W: BatchWriter> Runner<W> {
    /// `stop` is the shutdown deadline: a batch still being retried in
    /// memory when it fires is dropped and counted.
    pub fn new(
        writer: W,
        settings: BatchSettings,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
        spool: Option<Spool>,
    ) -> Self {
        Self {
            writer,
            delay: settings.retry_min,
            settings,
            metrics,
            stop,
            spool,
            next_drain: tokio::time::Instant::now(),
        }
    }

    /// Receives outputs until the channel closes, appending each to the
    /// batch with `encode` and writing batches.
    ///
    /// With a spool, a batch the database cannot take right now goes to
    /// disk and later batches follow it there (order is kept); the spool
    /// drains in the background with capped backoff while new data keeps
    /// arriving. Without one, a failing batch is retried in memory and the
    /// bounded channel in front holds the pipeline back. Each barrier is
    /// acknowledged on `barriers` once everything before it is written,
    /// spooled or counted as dropped: a `watch` of the highest barrier, as
    /// a later one covers every earlier one.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<Output>,
        mut encode: impl FnMut(&Output, &mut String),
        barriers: Option<watch::Sender<Option<u64>>>,
    ) {
        self.publish_spool_depth();
        let mut buf = String::with_capacity(self.settings.batch_size * 200);
        let mut points = 0usize;
        let mut tick = tokio::time::interval(self.settings.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                item = rx.recv() => match item {
                    Some(Output::Barrier(seq)) => {
                        // Everything before the barrier is written or spooled
                        // (or counted as dropped) once this flush returns.
                        if points > 0 {
                            self.flush(&mut buf, &mut points).await;
                        }
                        if let Some(b) = &barriers {
                            b.send_if_modified(|done| {
                                let newer = done.is_none_or(|d| seq > d);
                                if newer {
                                    *done = Some(seq);
                                }
                                newer
                            });
                        }
                    }
                    Some(out) => {
                        encode(&out, &mut buf);
                        points += 1;
                        self.metrics.sink_queue_depth.store(rx.len() as u64, Relaxed);
                        if points >= self.settings.batch_size {
                            self.flush(&mut buf, &mut points).await;
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    if points > 0 {
                        self.flush(&mut buf, &mut points).await;
                    }
                    self.drain().await;
                }
            }
        }
        if points > 0 {
            self.flush(&mut buf, &mut points).await;
        }
        // One last drain attempt; what stays is kept for the next start.
        self.drain().await;
    }

    fn written(&self, n: u64) {
        self.metrics.points_written.fetch_add(n, Relaxed);
        self.metrics.sink_failing_since_unix_s.store(0, Relaxed);
        let now_s = crate::core::timestamp::now_ns() / 1_000_000_000;
        self.metrics
            .last_write_unix_s
            .store(u64::try_from(now_s).unwrap_or(0), Relaxed);
    }

    /// A write failed in a way worth retrying: counted, and the start of
    /// the failing run noted for readiness (`/readyz`).
    fn failing(&self) {
        self.metrics.write_errors.fetch_add(1, Relaxed);
        let now_s = crate::core::timestamp::now_ns() / 1_000_000_000;
        let _ = self.metrics.sink_failing_since_unix_s.compare_exchange(
            0,
            u64::try_from(now_s).unwrap_or(0),
            Relaxed,
            Relaxed,
        );
    }

    fn rejected(&self, n: u64, msg: &str) {
        self.metrics.write_errors.fetch_add(1, Relaxed);
        self.metrics.points_dropped.fetch_add(n, Relaxed);
        tracing::error!(points = n, error = %msg, "database rejected a batch; it is dropped");
    }

    fn publish_spool_depth(&self) {
        if let Some(sp) = &self.spool {
            self.metrics.spool_points.store(sp.points(), Relaxed);
            self.metrics
                .points_dropped_spool_full
                .store(sp.dropped_points, Relaxed);
            self.metrics
                .spool_quarantined
                .store(sp.quarantined, Relaxed);
        }
    }

    /// Puts a batch in the spool; false when there is no spool or the disk
    /// refuses it (the caller then retries in memory).
    fn spool(&mut self, body: &str, n: u64) -> bool {
        let Some(sp) = self.spool.as_mut() else {
            return false;
        };
        match sp.push(body, n) {
            Ok(()) => {
                self.publish_spool_depth();
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot spool a batch; holding it in memory");
                false
            }
        }
    }

    fn backoff(&mut self) {
        self.next_drain = tokio::time::Instant::now() + self.delay;
        self.delay = (self.delay * 2).min(self.settings.retry_max);
    }

    async fn flush(&mut self, buf: &mut String, points: &mut usize) {
        let n = std::mem::take(points) as u64;
        // Keep order: while older batches wait on disk, new ones queue behind them.
        if self.spool.as_ref().is_some_and(|s| !s.is_empty()) && self.spool(buf, n) {
            buf.clear();
            return;
        }
        let body = std::mem::take(buf);
        loop {
            match self.writer.write(body.clone()).await {
                Ok(()) => {
                    self.written(n);
                    self.delay = self.settings.retry_min;
                    break;
                }
                Err(WriteFailure::Reject(msg)) => {
                    self.rejected(n, &msg);
                    break;
                }
                Err(WriteFailure::Retry(msg)) => {
                    self.failing();
                    if self.spool(&body, n) {
                        tracing::warn!(points = n, error = %msg, "write failed; batch spooled to disk");
                        self.backoff();
                        break;
                    }
                    if self.stop.is_cancelled() {
                        self.metrics.points_dropped.fetch_add(n, Relaxed);
                        tracing::error!(points = n, error = %msg, "shutdown deadline reached while the database is unreachable; batch dropped");
                        break;
                    }
                    self.metrics.write_retries.fetch_add(1, Relaxed);
                    tracing::warn!(points = n, error = %msg, retry_in_ms = self.delay.as_millis() as u64, "write failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(self.delay) => {}
                        _ = self.stop.cancelled() => {}
                    }
                    self.delay = (self.delay * 2).min(self.settings.retry_max);
                }
            }
        }
        *buf = body;
        buf.clear();
    }

    /// Sends spooled batches, oldest first, until the spool is empty, a
    /// write fails (then backs off), or a round's budget is used.
    async fn drain(&mut self) {
        const ROUND: usize = 64;
        if self.spool.as_ref().is_none_or(|s| s.is_empty())
            || tokio::time::Instant::now() < self.next_drain
        {
            return;
        }
        for _ in 0..ROUND {
            let Some(sp) = self.spool.as_mut() else {
                return;
            };
            let batch = match sp.oldest() {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the spool");
                    self.backoff();
                    break;
                }
            };
            match self.writer.write(batch.body).await {
                Ok(()) => {
                    self.written(batch.points);
                    self.delay = self.settings.retry_min;
                    if let Some(sp) = self.spool.as_mut()
                        && let Err(e) = sp.remove(batch.seq)
                    {
                        tracing::error!(error = %e, "cannot remove a drained spool segment");
                    }
                }
                Err(WriteFailure::Reject(msg)) => {
                    self.rejected(batch.points, &msg);
                    if let Some(sp) = self.spool.as_mut() {
                        let _ = sp.remove(batch.seq);
                    }
                }
                Err(WriteFailure::Retry(msg)) => {
                    self.failing();
                    tracing::warn!(error = %msg, spooled = self.spool.as_ref().map_or(0, |s| s.points()), retry_in_ms = self.delay.as_millis() as u64, "database still unreachable; spool kept");
                    self.backoff();
                    break;
                }
            }
        }
        self.publish_spool_depth();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;
    use crate::core::detect::DetectorSettings;
    use crate::pipeline::{AssetBinding, ScoreRecord};

    /// Records what it is sent; answers with the scripted failures first.
    #[derive(Default)]
    struct Recorder {
        sent: Arc<Mutex<Vec<String>>>,
        failures: Mutex<VecDeque<WriteFailure>>,
    }

    impl BatchWriter for Recorder {
        async fn write(&self, body: String) -> Result<(), WriteFailure> {
            if let Some(f) = self.failures.lock().unwrap().pop_front() {
                return Err(f);
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

    /// Runs `outputs` through a runner (batches of 2) to the end of the
    /// channel; returns what was sent, the metrics and the highest barrier
    /// acknowledged.
    async fn run(
        outputs: Vec<Output>,
        failures: Vec<WriteFailure>,
    ) -> (Vec<String>, Arc<Metrics>, Option<u64>) {
        let writer = Recorder {
            failures: Mutex::new(failures.into()),
            ..Recorder::default()
        };
        let sent = writer.sent.clone();
        let metrics = Arc::new(Metrics::default());
        let settings = BatchSettings {
            batch_size: 2,
            flush_interval: Duration::from_secs(3600),
            retry_min: Duration::from_millis(1),
            retry_max: Duration::from_millis(2),
        };
        let runner = Runner::new(
            writer,
            settings,
            metrics.clone(),
            CancellationToken::new(),
            None,
        );
        let (tx, rx) = mpsc::channel(outputs.len());
        let (btx, brx) = watch::channel(None);
        for o in outputs {
            tx.send(o).await.unwrap();
        }
        drop(tx);
        let encode = |o: &Output, buf: &mut String| {
            if let Output::Score(r) = o {
                buf.push_str(&format!("{}\n", r.ts));
            }
        };
        runner.run(rx, encode, Some(btx)).await;
        let acks = *brx.borrow();
        let sent = sent.lock().unwrap().clone();
        (sent, metrics, acks)
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
        let (sent, _, acks) = run(vec![score(1), Output::Barrier(7), score(2)], vec![]).await;
        assert_eq!(sent, ["1\n", "2\n"]);
        assert_eq!(acks, Some(7));
    }

    #[tokio::test]
    async fn retry_keeps_the_batch_and_reject_drops_it() {
        let failures = vec![
            WriteFailure::Retry("503".into()),
            WriteFailure::Reject("400".into()),
        ];
        let (sent, metrics, _) = run((1..=4).map(score).collect(), failures).await;
        // The first batch is retried and then rejected; the rest goes through.
        let dropped = metrics.points_dropped.load(Relaxed);
        assert!((1..=2).contains(&dropped), "{dropped}");
        assert_eq!(sent.concat(), lines(dropped as i64 + 1..=4));
        assert_eq!(metrics.write_retries.load(Relaxed), 1);
        assert_eq!(metrics.write_errors.load(Relaxed), 2);
        assert_eq!(metrics.points_written.load(Relaxed), 4 - dropped);
    }
}
