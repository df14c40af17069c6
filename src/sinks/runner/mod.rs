//! The batch/retry/spool runner every database sink shares
//! (docs/architecture.md §6, docs/influxdb.md §2): outputs are encoded into
//! a batch body of one point per line, sent by size and by time through a
//! [`BatchWriter`], retried with capped exponential backoff, spooled to
//! disk when a spool is configured, drained in the background, and flushed
//! on shutdown. A body the database finds too large is split; one it
//! refuses in part is bisected down to the refused points, which go to the
//! dead-letter file. Nothing is dropped while the database refuses every
//! write (bad credentials, missing database): the sink reports itself
//! unhealthy and keeps everything until it is fixed. It knows nothing of
//! the database behind the writer.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ops::metrics::Metrics;
use crate::pipeline::{Output, SinkItem};
use crate::state::refused_points::RefusedPoints;
use crate::state::spool::Spool;

mod queue;
pub use queue::{SinkReceiver, SinkSender, sink_queue};

/// How a failed write is handled (docs/influxdb.md §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteFailure {
    /// The database may recover by itself (connection error, timeout, 5xx,
    /// 429, 408): kept and retried.
    Retry(String),
    /// The database refuses every write until an operator acts (401, 403,
    /// 404): kept and retried; the sink is unhealthy meanwhile.
    Refused(String),
    /// The body is too large (413): split in two and sent again.
    TooLarge(String),
    /// Some points are refused (400, 422): the batch is bisected until the
    /// refused points are alone, and those go to the dead-letter file.
    Reject(String),
}

/// Sends one batch body to a database.
///
/// The runner owns batching, retries, splitting and the spool; an
/// implementation only sends and sorts its failures.
pub trait BatchWriter: Send + Sync {
    /// Writes one batch.
    ///
    /// # Errors
    /// [`WriteFailure`] says what the runner should do.
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

/// Where the runner keeps what the database cannot take now (the spool)
/// or will never take as it is (the dead-letter file).
#[derive(Debug, Default)]
pub struct SinkStore {
    pub spool: Option<Spool>,
    pub dead_letter: Option<RefusedPoints>,
}

/// The lines gathered for the next write, and the points encoded since
/// the last flush tick.
struct Batch {
    buf: String,
    points: usize,
    since_tick: usize,
}

/// One writer with its batching, retry and spool state.
pub struct Runner<W> {
    writer: W,
    settings: BatchSettings,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    spool: Option<Spool>,
    dead_letter: Option<RefusedPoints>,
    delay: Duration,
    next_drain: tokio::time::Instant,
    /// Whether the database refuses every write (logged once per change).
    refusing: bool,
    last_dead_letter_log: Option<tokio::time::Instant>,
}

impl<W: BatchWriter> Runner<W> {
    /// `stop` is the shutdown deadline: a batch still being retried in
    /// memory when it fires is dropped and counted.
    pub fn new(
        writer: W,
        settings: BatchSettings,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
        store: SinkStore,
    ) -> Self {
        Self {
            writer,
            delay: settings.retry_min,
            settings,
            metrics,
            stop,
            spool: store.spool,
            dead_letter: store.dead_letter,
            next_drain: tokio::time::Instant::now(),
            refusing: false,
            last_dead_letter_log: None,
        }
    }

    /// Receives outputs until the channel closes, appending each to the
    /// batch with `encode` (one line per point) and writing batches.
    ///
    /// With a spool, a batch the database cannot take right now goes to
    /// disk and later batches follow it there (order is kept); the spool
    /// drains in the background with capped backoff while new data keeps
    /// arriving. Without one, a failing batch is retried in memory and the
    /// bounded channel in front holds the pipeline back. Each barrier is
    /// confirmed to its journal once everything before it is written,
    /// spooled, dead-lettered or counted as dropped.
    ///
    /// With a queue whose sender nudges ([`sink_queue`]), a flush interval
    /// that brought at most a quarter of the queue's capacity and half of
    /// `batch_size` points is followed by one where the runner takes what
    /// is queued only at its tick or when nudged: at a low rate no item
    /// wakes it (docs/low-rate.md §6), and a score reaches the database at
    /// the same flush as when taken at once.
    pub async fn run<I: SinkItem>(
        mut self,
        rx: impl Into<SinkReceiver<I>>,
        mut encode: impl FnMut(&Output, &mut String),
    ) {
        let SinkReceiver { mut rx, nudge } = rx.into();
        let quiet_items = rx.max_capacity() / 4;
        self.publish_spool_depth();
        let mut batch = Batch {
            buf: String::with_capacity(self.settings.batch_size * 200),
            points: 0,
            since_tick: 0,
        };
        let mut tick = tokio::time::interval(self.settings.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Items taken since the last tick, and whether to wait for the next
        // tick (or a nudge) before taking any more.
        let mut taken = 0usize;
        let mut quiet = false;
        let mut open = true;
        while open {
            tokio::select! {
                item = rx.recv(), if !quiet => {
                    let Some(item) = item else { break };
                    taken += 1;
                    self.take(item, &mut batch, &mut encode).await;
                }
                () = async {
                    match nudge.as_ref() {
                        Some(n) => n.notified().await,
                        None => std::future::pending().await,
                    }
                }, if quiet => {
                    open = self.take_queued(&mut rx, &mut batch, &mut encode, &mut taken).await;
                }
                _ = tick.tick() => {
                    if quiet {
                        open = self.take_queued(&mut rx, &mut batch, &mut encode, &mut taken).await;
                    }
                    if batch.points > 0 {
                        self.flush(&mut batch.buf, &mut batch.points).await;
                    }
                    self.drain().await;
                    // Quiet while an interval fills neither a quarter of the
                    // queue nor half a write: a full write is not held back.
                    quiet = nudge.is_some()
                        && taken <= quiet_items
                        && batch.since_tick < self.settings.batch_size / 2;
                    taken = 0;
                    batch.since_tick = 0;
                }
            }
        }
        if batch.points > 0 {
            self.flush(&mut batch.buf, &mut batch.points).await;
        }
        // One last drain attempt; what stays is kept for the next start.
        self.drain().await;
    }

    /// Takes everything queued now; false once the channel is closed.
    async fn take_queued<I: SinkItem>(
        &mut self,
        rx: &mut mpsc::Receiver<I>,
        batch: &mut Batch,
        encode: &mut impl FnMut(&Output, &mut String),
        taken: &mut usize,
    ) -> bool {
        loop {
            match rx.try_recv() {
                Ok(item) => {
                    *taken += 1;
                    self.take(item, batch, encode).await;
                }
                Err(mpsc::error::TryRecvError::Empty) => return true,
                Err(mpsc::error::TryRecvError::Disconnected) => return false,
            }
        }
    }

    /// Encodes one item's outputs into the batch, writing it when full;
    /// a barrier is confirmed once everything before it is written.
    async fn take<I: SinkItem>(
        &mut self,
        item: I,
        batch: &mut Batch,
        encode: &mut impl FnMut(&Output, &mut String),
    ) {
        for out in item.outputs() {
            if let Output::Barrier(b) = out {
                // Everything before the barrier is written or spooled (or
                // counted as dropped) once this flush returns.
                if batch.points > 0 {
                    self.flush(&mut batch.buf, &mut batch.points).await;
                }
                b.confirm();
                continue;
            }
            encode(&out, &mut batch.buf);
            batch.points += 1;
            batch.since_tick += 1;
            if batch.points >= self.settings.batch_size {
                self.flush(&mut batch.buf, &mut batch.points).await;
            }
        }
    }

    fn written(&mut self, n: u64) {
        self.metrics.points_written.fetch_add(n, Relaxed);
        self.metrics.sink_failing_since_unix_s.store(0, Relaxed);
        let now_s = crate::core::timestamp::now_ns() / 1_000_000_000;
        self.metrics
            .last_write_unix_s
            .store(u64::try_from(now_s).unwrap_or(0), Relaxed);
        if self.refusing {
            self.refusing = false;
            self.metrics.set_sink_refusal(None);
            tracing::info!("the database accepts writes again");
        }
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

    /// Counts a failed write that must wait; a refusal marks the sink
    /// unhealthy (logged once until the database accepts writes again).
    fn must_wait(&mut self, failure: &WriteFailure) -> String {
        self.failing();
        match failure {
            WriteFailure::Refused(msg) => {
                if !self.refusing {
                    tracing::error!(error = %msg, "the database refuses every write: batches are kept and retried until it accepts them (check the credentials and the database)");
                }
                self.refusing = true;
                self.metrics.set_sink_refusal(Some(msg));
                msg.clone()
            }
            WriteFailure::Retry(msg) | WriteFailure::TooLarge(msg) | WriteFailure::Reject(msg) => {
                msg.clone()
            }
        }
    }

    /// Puts points the database refuses one by one into the dead-letter
    /// file (or counts them as dropped when there is none or it is full).
    fn dead_letter(&mut self, lines: &str, msg: &str) {
        let n = points_in(lines);
        let kept = match self.dead_letter.as_mut() {
            Some(dl) => {
                let now = crate::core::timestamp::format_rfc3339(crate::core::timestamp::now_ns());
                dl.append(lines, msg, &now)
                    .map_err(|e| tracing::error!(error = %e, "cannot keep refused points"))
                    .is_ok()
            }
            None => false,
        };
        if kept {
            self.metrics.points_dead_lettered.fetch_add(n, Relaxed);
        } else {
            self.metrics.points_dropped.fetch_add(n, Relaxed);
        }
        // Bisection may isolate many points in a row: one line per 10 s.
        let now = tokio::time::Instant::now();
        if self
            .last_dead_letter_log
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
        {
            self.last_dead_letter_log = Some(now);
            tracing::error!(
                error = %msg,
                file = ?self.dead_letter.as_ref().map(RefusedPoints::path),
                kept,
                dead_lettered_total = self.metrics.points_dead_lettered.load(Relaxed),
                "the database refused points; they are isolated and kept in the dead-letter file"
            );
        }
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

    /// Writes `body`, splitting it on 413 and bisecting it on 400/422 down
    /// to the single points the database refuses (dead-lettered). When a
    /// write must wait (retry, refusal), returns the lines not yet written,
    /// in order, with that failure.
    async fn deliver(&mut self, body: String) -> Result<(), (String, WriteFailure)> {
        let mut pending = vec![body];
        while let Some(piece) = pending.pop() {
            let failure = match self.writer.write(piece.clone()).await {
                Ok(()) => {
                    self.written(points_in(&piece));
                    continue;
                }
                Err(f) => f,
            };
            match failure {
                WriteFailure::TooLarge(msg) | WriteFailure::Reject(msg) => {
                    self.metrics.write_errors.fetch_add(1, Relaxed);
                    match split_lines(&piece) {
                        Some((first, second)) => {
                            pending.push(second);
                            pending.push(first);
                        }
                        None => self.dead_letter(&piece, &msg),
                    }
                }
                wait => {
                    let mut rest = piece;
                    while let Some(p) = pending.pop() {
                        rest.push_str(&p);
                    }
                    return Err((rest, wait));
                }
            }
        }
        Ok(())
    }

    async fn flush(&mut self, buf: &mut String, points: &mut usize) {
        let n = std::mem::take(points) as u64;
        // Keep order: while older batches wait on disk, new ones queue behind them.
        if self.spool.as_ref().is_some_and(|s| !s.is_empty()) && self.spool(buf, n) {
            buf.clear();
            return;
        }
        let mut body = std::mem::take(buf);
        loop {
            let (rest, failure) = match self.deliver(body).await {
                Ok(()) => {
                    self.delay = self.settings.retry_min;
                    break;
                }
                Err(e) => e,
            };
            let msg = self.must_wait(&failure);
            let n = points_in(&rest);
            if self.spool(&rest, n) {
                tracing::warn!(points = n, error = %msg, "write failed; batch spooled to disk");
                self.backoff();
                break;
            }
            if self.stop.is_cancelled() {
                self.metrics.points_dropped.fetch_add(n, Relaxed);
                tracing::error!(points = n, error = %msg, "shutdown deadline reached while the database does not take writes; batch dropped");
                break;
            }
            self.metrics.write_retries.fetch_add(1, Relaxed);
            tracing::warn!(points = n, error = %msg, retry_in_ms = self.delay.as_millis() as u64, "write failed; retrying");
            tokio::select! {
                _ = tokio::time::sleep(self.delay) => {}
                _ = self.stop.cancelled() => {}
            }
            self.delay = (self.delay * 2).min(self.settings.retry_max);
            body = rest;
        }
        buf.reserve(self.settings.batch_size * 200);
    }

    /// Sends spooled batches, oldest first, until the spool is empty, a
    /// write must wait (then backs off), or a round's budget is used.
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
            let len = batch.body.len();
            match self.deliver(batch.body).await {
                Ok(()) => {
                    self.delay = self.settings.retry_min;
                    if let Some(sp) = self.spool.as_mut()
                        && let Err(e) = sp.remove(batch.seq)
                    {
                        tracing::error!(error = %e, "cannot remove a drained spool segment");
                    }
                }
                Err((rest, failure)) => {
                    let msg = self.must_wait(&failure);
                    // Part of the batch went through: keep only the rest, in its place.
                    if rest.len() < len
                        && let Some(sp) = self.spool.as_mut()
                        && let Err(e) = sp.replace_oldest(batch.seq, &rest, points_in(&rest))
                    {
                        tracing::error!(error = %e, "cannot rewrite a partly drained spool segment; it is kept whole");
                    }
                    tracing::warn!(error = %msg, spooled = self.spool.as_ref().map_or(0, |s| s.points()), retry_in_ms = self.delay.as_millis() as u64, "the database does not take writes yet; spool kept");
                    self.backoff();
                    break;
                }
            }
        }
        self.publish_spool_depth();
    }
}

/// Points in a body: its non-empty lines that are not comments.
fn points_in(body: &str) -> u64 {
    body.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count() as u64
}

/// Cuts a body of two lines or more into two halves at a line end.
fn split_lines(body: &str) -> Option<(String, String)> {
    let lines = body.split_inclusive('\n').count();
    if lines < 2 {
        return None;
    }
    let cut: usize = body
        .split_inclusive('\n')
        .take(lines / 2)
        .map(str::len)
        .sum();
    Some((body[..cut].to_string(), body[cut..].to_string()))
}

#[cfg(test)]
mod tests;
