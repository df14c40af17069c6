//! The InfluxDB sink (DESIGN.md §6): scores and alerts become line protocol,
//! batched by size and time and written with the `influxdb2` client to the
//! v2 write API (InfluxDB 2.x/3.x/Cloud/1.8+, VictoriaMetrics). Connection
//! errors, 5xx and 429 are retried with capped exponential backoff while the
//! bounded channel in front of the sink holds the pipeline back; a batch the
//! server rejects as malformed is dropped, counted and logged.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::InfluxConfig;
use crate::ops::metrics::Metrics;
use crate::pipeline::{Output, ScoreRecord};

/// Why the sink could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("influx.url {url:?} is not a usable URL: {message}")]
    Url { url: String, message: String },
    #[error("cannot read influx.ca_file {path}: {source}")]
    Ca {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// How a failed write is handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteFailure {
    /// Try again later (connection error, timeout, 5xx, 429).
    Retry(String),
    /// The server refused the data itself (4xx): retrying cannot help.
    Reject(String),
}

/// Writes line-protocol batches to one bucket.
#[derive(Debug, Clone)]
pub struct InfluxWriter {
    client: influxdb2::Client,
    org: String,
    bucket: String,
}

impl InfluxWriter {
    /// Builds the client with connect and request timeouts (the crate sets
    /// none, and a silent server would hang a write forever).
    ///
    /// # Errors
    /// A bad URL (checked here because the crate panics on one), an
    /// unreadable CA file, or a client that cannot be built.
    pub fn new(cfg: &InfluxConfig, token: &str) -> Result<Self, SinkError> {
        let url = reqwest::Url::parse(&cfg.url).map_err(|e| SinkError::Url {
            url: cfg.url.clone(),
            message: e.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(SinkError::Url {
                url: cfg.url.clone(),
                message: "scheme must be http or https, with a host".into(),
            });
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(cfg.connect_timeout_ms))
            .timeout(Duration::from_millis(cfg.request_timeout_ms))
            .pool_idle_timeout(Duration::from_secs(30));
        if let Some(path) = &cfg.ca_file {
            let pem = std::fs::read(path).map_err(|source| SinkError::Ca {
                path: path.clone(),
                source,
            })?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                SinkError::Client(format!("influx.ca_file {}: {e}", path.display()))
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let client = influxdb2::ClientBuilder::with_builder(
            builder,
            cfg.url.as_str(),
            cfg.org.as_str(),
            token,
        )
        .build()
        .map_err(|e| SinkError::Client(e.to_string()))?;
        Ok(Self {
            client,
            org: cfg.org.clone(),
            bucket: cfg.bucket.clone(),
        })
    }

    /// Writes one batch of line protocol (nanosecond timestamps).
    ///
    /// # Errors
    /// [`WriteFailure`] says whether retrying can help.
    pub async fn write(&self, body: String) -> Result<(), WriteFailure> {
        match self
            .client
            .write_line_protocol_with_precision(
                &self.org,
                &self.bucket,
                body,
                influxdb2::api::write::TimestampPrecision::Nanoseconds,
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(influxdb2::RequestError::Http { status, text }) => {
                let msg = format!("HTTP {status}: {}", text.trim());
                if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
                    Err(WriteFailure::Retry(msg))
                } else {
                    Err(WriteFailure::Reject(msg))
                }
            }
            Err(e) => Err(WriteFailure::Retry(e.to_string())),
        }
    }
}

/// Measurement names.
#[derive(Debug, Clone)]
pub struct Measurements {
    pub score: String,
    pub alert: String,
}

/// Appends one output as a line of line protocol.
pub fn format_output(out: &Output, m: &Measurements, buf: &mut String) {
    match out {
        Output::Barrier(_) => {}
        Output::Score(r) => format_score(r, &m.score, buf),
        Output::Alert { binding, event } => {
            escape_key(&m.alert, buf);
            buf.push_str(",asset=");
            escape_tag(&binding.asset, buf);
            buf.push_str(",model=");
            escape_tag(&binding.model, buf);
            buf.push_str(",state=");
            buf.push_str(event.kind.as_str());
            if let Some((top, _)) = event.top_channels.first() {
                buf.push_str(",top_channel=");
                escape_tag(top, buf);
            }
            let _ = write!(
                buf,
                " score={},peak={},threshold={},duration_s={}",
                finite(event.score),
                finite(event.peak),
                finite(event.threshold),
                event.duration_s()
            );
            // The first channel is the `top_channel` tag; the errors of the
            // ranking are numbers so every compatible store keeps them.
            for (i, (_, err)) in event.top_channels.iter().enumerate() {
                let _ = write!(buf, ",top{}_error={}", i + 1, finite(*err));
            }
            let _ = writeln!(buf, " {}", event.ts);
        }
    }
}

fn format_score(r: &ScoreRecord, measurement: &str, buf: &mut String) {
    escape_key(measurement, buf);
    buf.push_str(",asset=");
    escape_tag(&r.binding.asset, buf);
    buf.push_str(",model=");
    escape_tag(&r.binding.model, buf);
    // One line per window, so this is the sink's hot path: numbers go
    // through `push_f32`/`push_f64` rather than `write!` (same text).
    buf.push_str(" score=");
    push_f32(buf, finite(r.score));
    buf.push_str(",threshold=");
    push_f32(buf, finite(r.threshold));
    buf.push_str(if r.anomalous {
        ",anomalous=true"
    } else {
        ",anomalous=false"
    });
    if r.probability.is_finite() {
        buf.push_str(",probability=");
        push_f64(buf, r.probability);
    }
    for (ch, e) in r.binding.channels.iter().zip(&r.channel_error) {
        if e.is_finite() {
            buf.push_str(",err_");
            escape_key(ch, buf);
            buf.push('=');
            push_f32(buf, *e);
        }
    }
    let _ = writeln!(buf, " {}", r.ts);
}

/// Appends a finite `v` exactly as `format!("{v}")` would, about twice as
/// fast: serde_json's shortest-digits writer (ryu) gives the same digits,
/// and the exponent form it uses for very small or large values is
/// written out in full as `Display` does.
fn push_f32(buf: &mut String, v: f32) {
    push_float(buf, |w| {
        serde_json::ser::Formatter::write_f32(&mut serde_json::ser::CompactFormatter, w, v)
    });
}

/// [`push_f32`] for `f64`.
fn push_f64(buf: &mut String, v: f64) {
    push_float(buf, |w| {
        serde_json::ser::Formatter::write_f64(&mut serde_json::ser::CompactFormatter, w, v)
    });
}

fn push_float(buf: &mut String, write: impl FnOnce(&mut &mut [u8]) -> std::io::Result<()>) {
    // The longest shortest-digits float is 24 bytes ("-1.7976931348623157e308").
    let mut tmp = [0u8; 32];
    let mut w = &mut tmp[..];
    if write(&mut w).is_err() {
        return;
    }
    let n = 32 - w.len();
    let Ok(text) = std::str::from_utf8(&tmp[..n]) else {
        return;
    };
    let (sign, text) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text),
    };
    buf.push_str(sign);
    let Some((mantissa, exp)) = text.split_once('e') else {
        // `Display` leaves out the fraction of a whole number.
        buf.push_str(text.strip_suffix(".0").unwrap_or(text));
        return;
    };
    let exp: i64 = exp.parse().unwrap_or(0);
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = int.len() + frac.len();
    // Position of the decimal point counted in digits from the left.
    let point = int.len() as i64 + exp;
    let zeros = |buf: &mut String, n: i64| buf.extend(std::iter::repeat_n('0', n as usize));
    if point <= 0 {
        buf.push_str("0.");
        zeros(buf, -point);
        buf.push_str(int);
        buf.push_str(frac);
    } else if point >= digits as i64 {
        buf.push_str(int);
        buf.push_str(frac);
        zeros(buf, point - digits as i64);
    } else {
        let all: String = [int, frac].concat();
        let (a, b) = all.split_at(point as usize);
        buf.push_str(a);
        buf.push('.');
        buf.push_str(b);
    }
}

/// Line protocol cannot carry NaN/inf; they are written as 0 only where a
/// field is mandatory (score fields are finite by construction).
fn finite(v: f32) -> f32 {
    if v.is_finite() { v } else { 0.0 }
}

fn escape_key(s: &str, buf: &mut String) {
    // Asset, model and channel names rarely need escaping: copy them whole.
    if !s
        .bytes()
        .any(|b| matches!(b, b',' | b' ' | b'=' | b'\\' | b'\n'))
    {
        buf.push_str(s);
        return;
    }
    for c in s.chars() {
        if matches!(c, ',' | ' ' | '=' | '\\') {
            buf.push('\\');
        }
        if c == '\n' {
            buf.push_str("\\n");
            continue;
        }
        buf.push(c);
    }
}

fn escape_tag(s: &str, buf: &mut String) {
    if s.is_empty() {
        // An empty tag value is invalid line protocol.
        buf.push('_');
        return;
    }
    escape_key(s, buf);
}

/// Settings of the writer loop.
#[derive(Debug, Clone)]
pub struct SinkSettings {
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub measurements: Measurements,
}

impl SinkSettings {
    pub fn from_config(c: &InfluxConfig) -> Self {
        Self {
            batch_size: c.batch_size,
            flush_interval: Duration::from_millis(c.flush_interval_ms),
            retry_min: Duration::from_millis(c.retry_min_ms),
            retry_max: Duration::from_millis(c.retry_max_ms),
            measurements: Measurements {
                score: c.score_measurement.clone(),
                alert: c.alert_measurement.clone(),
            },
        }
    }
}

/// Receives outputs until the channel closes, writing batches.
///
/// With a spool, a batch the database cannot take right now goes to disk
/// and later batches follow it there (order is kept); the spool drains in
/// the background with capped backoff while new data keeps arriving.
/// Without one, a failing batch is retried in memory and the bounded
/// channel in front holds the pipeline back. On `stop` (the shutdown
/// deadline) a batch still being retried in memory is dropped and counted.
pub async fn run_sink(
    writer: InfluxWriter,
    settings: SinkSettings,
    mut rx: mpsc::Receiver<Output>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    spool: Option<crate::state::spool::Spool>,
    barriers: Option<mpsc::UnboundedSender<u64>>,
) {
    let mut sink = Sink {
        writer,
        delay: settings.retry_min,
        settings,
        metrics,
        stop,
        spool,
        next_drain: tokio::time::Instant::now(),
    };
    sink.publish_spool_depth();
    let mut buf = String::with_capacity(sink.settings.batch_size * 200);
    let mut points = 0usize;
    let mut tick = tokio::time::interval(sink.settings.flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            item = rx.recv() => match item {
                Some(Output::Barrier(seq)) => {
                    // Everything before the barrier is written or spooled
                    // (or counted as dropped) once this flush returns.
                    if points > 0 {
                        sink.flush(&mut buf, &mut points).await;
                    }
                    if let Some(b) = &barriers {
                        let _ = b.send(seq);
                    }
                }
                Some(out) => {
                    format_output(&out, &sink.settings.measurements, &mut buf);
                    points += 1;
                    sink.metrics.sink_queue_depth.store(rx.len() as u64, Relaxed);
                    if points >= sink.settings.batch_size {
                        sink.flush(&mut buf, &mut points).await;
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                if points > 0 {
                    sink.flush(&mut buf, &mut points).await;
                }
                sink.drain().await;
            }
        }
    }
    if points > 0 {
        sink.flush(&mut buf, &mut points).await;
    }
    // One last drain attempt; what stays is kept for the next start.
    sink.drain().await;
}

struct Sink {
    writer: InfluxWriter,
    settings: SinkSettings,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    spool: Option<crate::state::spool::Spool>,
    delay: Duration,
    next_drain: tokio::time::Instant,
}

impl Sink {
    fn written(&self, n: u64) {
        self.metrics.points_written.fetch_add(n, Relaxed);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.metrics.last_write_unix_s.store(now, Relaxed);
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
                    self.metrics.write_errors.fetch_add(1, Relaxed);
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
                    self.metrics.write_errors.fetch_add(1, Relaxed);
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
    use super::*;
    use crate::core::detect::{AlertEvent, AlertKind, DetectorSettings};
    use crate::pipeline::AssetBinding;

    fn binding() -> Arc<AssetBinding> {
        Arc::new(AssetBinding {
            asset: "pump 1".into(),
            model: "pump".into(),
            detector: DetectorSettings {
                threshold: 0.5,
                raise_after: 1,
                clear_after: 1,
                clear_ratio: 0.8,
            },
            channels: vec!["flow rate".to_string(), "p,1".to_string()].into(),
        })
    }

    fn m() -> Measurements {
        Measurements {
            score: "anomaly_score".into(),
            alert: "anomaly_alert".into(),
        }
    }

    #[test]
    fn score_line_escapes_and_carries_all_fields() {
        let mut buf = String::new();
        format_output(
            &Output::Score(ScoreRecord {
                binding: binding(),
                ts: 1_700_000_000_000_000_000,
                score: 0.25,
                threshold: 0.5,
                anomalous: false,
                probability: 0.9,
                channel_error: vec![0.1, 0.4],
            }),
            &m(),
            &mut buf,
        );
        assert_eq!(
            buf,
            "anomaly_score,asset=pump\\ 1,model=pump score=0.25,threshold=0.5,anomalous=false,probability=0.9,err_flow\\ rate=0.1,err_p\\,1=0.4 1700000000000000000\n"
        );
    }

    #[test]
    fn numbers_are_written_as_display_writes_them() {
        // The same text as `format!("{v}")`: plain notation, shortest digits
        // that read back as `v`. Where two candidates are equally short and
        // equally close (a tie in the last digit, e.g. 312985.125f32 as
        // ...12 or ...13), ryu rounds to even and `Display` up: both read
        // back as the same number.
        let check32 = |v: f32| {
            let mut buf = String::new();
            push_f32(&mut buf, v);
            let display = format!("{v}");
            if buf != display {
                assert_eq!(buf.parse::<f32>(), Ok(v), "{buf} vs {display}");
                assert_eq!(buf.len(), display.len(), "{buf} vs {display}");
            }
        };
        let check64 = |v: f64| {
            let mut buf = String::new();
            push_f64(&mut buf, v);
            let display = format!("{v}");
            if buf != display {
                assert_eq!(buf.parse::<f64>(), Ok(v), "{buf} vs {display}");
                assert_eq!(buf.len(), display.len(), "{buf} vs {display}");
            }
        };
        let mut same = 0;
        for v in [0.0f32, -0.0, 1.0, 0.1, 1e-7, 1e20, 312_985.12] {
            let mut buf = String::new();
            push_f32(&mut buf, v);
            same += usize::from(buf == format!("{v}"));
        }
        assert_eq!(same, 6, "exact text except for the tie");
        for v in [
            0.0,
            -0.0,
            1.0,
            -2.0,
            0.1,
            0.25,
            1e-5,
            1.5e-7,
            123_456_790.0,
            1e16,
            3.4e38,
            f32::MAX,
            f32::MIN_POSITIVE,
            1e-45,
            0.102_339_51,
        ] {
            check32(v);
            check64(f64::from(v));
        }
        for v in [0.9, 1e-10, 1e300, f64::MAX, f64::MIN_POSITIVE, 5e-324, 0.3] {
            check64(v);
        }
        // Random bit patterns: every finite float class, both signs.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v32 = f32::from_bits(x as u32);
            if v32.is_finite() {
                check32(v32);
            }
            let v64 = f64::from_bits(x);
            if v64.is_finite() {
                check64(v64);
            }
        }
    }

    #[test]
    fn nan_probability_is_left_out() {
        let mut buf = String::new();
        format_output(
            &Output::Score(ScoreRecord {
                binding: binding(),
                ts: 5,
                score: 1.0,
                threshold: 0.5,
                anomalous: true,
                probability: f64::NAN,
                channel_error: vec![f32::NAN, 1.0],
            }),
            &m(),
            &mut buf,
        );
        assert!(
            !buf.contains("probability") && !buf.contains("NaN"),
            "{buf}"
        );
        assert!(buf.contains("anomalous=true"));
    }

    #[test]
    fn alert_line_has_state_and_top_channel_tags() {
        let mut buf = String::new();
        format_output(
            &Output::Alert {
                binding: binding(),
                event: AlertEvent {
                    kind: AlertKind::Raised,
                    start_ts: 1_000_000_000,
                    ts: 4_000_000_000,
                    score: 2.0,
                    peak: 3.0,
                    threshold: 0.5,
                    top_channels: vec![("p,1".into(), 1.5), ("flow rate".into(), 0.5)],
                },
            },
            &m(),
            &mut buf,
        );
        assert_eq!(
            buf,
            "anomaly_alert,asset=pump\\ 1,model=pump,state=raised,top_channel=p\\,1 score=2,peak=3,threshold=0.5,duration_s=3,top1_error=1.5,top2_error=0.5 4000000000\n"
        );
    }

    #[test]
    fn bad_url_is_an_error_not_a_panic() {
        let cfg: InfluxConfig = serde_json::from_value(serde_json::json!({
            "url": "htp:/nowhere", "bucket": "b"
        }))
        .unwrap();
        assert!(InfluxWriter::new(&cfg, "").is_err());
    }
}
