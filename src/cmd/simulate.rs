//! `anomalyd simulate`: publishes sensor rows as MQTT messages, for demos,
//! tests and load tests.
//!
//! Rows come from a CSV/line-protocol log or from the synthetic pump
//! ([`crate::core::synth`]); each of `assets` assets gets its own copy (the synthetic
//! pump of asset `a` is seeded with `seed + a`, so asset 0 reproduces
//! [`crate::core::synth::generate`] with the same seed). A row becomes one JSON
//! object per asset ([`Layout::JsonFrame`]) or one message per channel
//! ([`Layout::PerChannel`]). Missing (NaN) values are left out, as a gap in a
//! historian export would be.
//!
//! Event time: row `i` carries `start + (row_time_i - row_time_0)` in
//! milliseconds, where the synthetic pump's rows are 1 s apart. `start` is
//! [`SimulateOptions::start_ts_ms`] when given; otherwise a log replayed
//! [`Pace::AsFastAsPossible`] keeps its own timestamps, and everything else
//! starts at the current time, so with [`Pace::Speed`]`(1.0)` the timestamps
//! follow the wall clock.
//!
//! Delivery: with QoS 1/2 [`simulate`] returns only after the broker
//! acknowledged every message, so a caller knows everything reached the
//! broker. A lost connection is retried with capped backoff and unacknowledged
//! messages are sent again (at least once); only the first connection failing
//! or the broker staying away for [`RECONNECT_GIVE_UP`] is an error.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS, Request,
    TlsConfiguration, Transport,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::core::log::{LoadError, LoadOptions, LogTable, load_log};
use crate::core::synth::{FaultKind, PUMP_CHANNELS, PumpSimulator};

/// Rows of the synthetic pump are this far apart in event time.
pub const SYNTHETIC_PERIOD_MS: i64 = 1000;
/// How long the broker may stay unreachable after the first connection
/// before [`simulate`] gives up.
pub const RECONNECT_GIVE_UP: Duration = Duration::from_secs(30);
/// After shutdown, how long to wait for outstanding acknowledgements.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Requests queued between the publisher and the MQTT event loop: deep
/// enough to keep the connection busy, bounded so memory is too.
const REQUEST_CAPACITY: usize = 10_000;
/// QoS 1/2 messages in flight (sent, not yet acknowledged).
const INFLIGHT: u16 = 1000;
const MAX_PACKET_SIZE: usize = 256 * 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Where rows come from.
#[derive(Debug, Clone, PartialEq)]
pub enum SimSource {
    /// A CSV or line-protocol log (any format [`load_log`] reads); its
    /// non-label numeric columns are the channels.
    Csv(PathBuf),
    /// [`PumpSimulator`]: the eight [`PUMP_CHANNELS`] at 1 Hz.
    SyntheticPump,
}

/// How fast rows are published.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// Rows per second per asset (every asset publishes row `i` together).
    Rate(f64),
    /// A multiple of real time, following the rows' own timestamps.
    Speed(f64),
    /// No pauses: as fast as the broker takes them.
    AsFastAsPossible,
}

/// What a per-channel message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelPayload {
    /// `12.5` (the receiver uses its receive time).
    Bare,
    /// `{"value":12.5,"ts":1700000000000}`.
    Json,
}

/// Message layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One message per asset and row on the asset's topic:
    /// `{"ts":<ms>,"<channel>":<value>,...}`.
    JsonFrame,
    /// One message per asset, row and channel; the topic template must
    /// contain `{channel}`.
    PerChannel(ChannelPayload),
}

/// TLS for the broker connection (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimTls {
    pub ca_file: PathBuf,
    /// Client certificate and key, for brokers that require one.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// Everything [`simulate`] needs; see [`SimulateOptions::default`].
#[derive(Debug, Clone, PartialEq)]
pub struct SimulateOptions {
    pub broker_host: String,
    pub broker_port: u16,
    pub source: SimSource,
    /// Number of assets, named `{asset_prefix}001`, `{asset_prefix}002`, …
    pub assets: usize,
    pub pace: Pace,
    /// Rows per asset; `None`: the whole log, or forever for the synthetic
    /// pump (until shutdown).
    pub rows: Option<usize>,
    /// Topic with `{asset}` (and `{channel}` for [`Layout::PerChannel`]).
    pub topic_template: String,
    pub layout: Layout,
    /// MQTT QoS 0, 1 or 2.
    pub qos: u8,
    pub asset_prefix: String,
    /// A synthetic fault switched on for these rows (0-based, end
    /// exclusive) of asset 0, or of every asset with `fault_all_assets`.
    pub fault: Option<(FaultKind, Range<usize>)>,
    pub fault_all_assets: bool,
    /// Event time of the first row, ms since the epoch (see the module doc).
    pub start_ts_ms: Option<i64>,
    pub seed: u64,
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls: Option<SimTls>,
    /// MQTT client id; `None` makes a unique one.
    pub client_id: Option<String>,
}

impl Default for SimulateOptions {
    /// One synthetic pump at 1 row/s as JSON frames on `sensors/pump-001`,
    /// QoS 1, to `127.0.0.1:1883`.
    fn default() -> Self {
        Self {
            broker_host: "127.0.0.1".to_string(),
            broker_port: 1883,
            source: SimSource::SyntheticPump,
            assets: 1,
            pace: Pace::Rate(1.0),
            rows: None,
            topic_template: DEFAULT_TOPIC.to_string(),
            layout: Layout::JsonFrame,
            qos: 1,
            asset_prefix: "pump-".to_string(),
            fault: None,
            fault_all_assets: false,
            start_ts_ms: None,
            seed: 0,
            username: None,
            password: None,
            tls: None,
            client_id: None,
        }
    }
}

/// Default topic for [`Layout::JsonFrame`].
pub const DEFAULT_TOPIC: &str = "sensors/{asset}";
/// Default topic for [`Layout::PerChannel`].
pub const DEFAULT_CHANNEL_TOPIC: &str = "sensors/{asset}/{channel}";

/// What a run published.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulateReport {
    /// Rows published per asset.
    pub rows: u64,
    pub assets: usize,
    /// MQTT messages published.
    pub messages: u64,
    /// Channel values published (NaN cells are not sent).
    pub readings: u64,
    /// Messages the broker acknowledged (QoS 1/2; 0 for QoS 0).
    pub acknowledged: u64,
    /// Times the connection was lost and made again.
    pub reconnects: u64,
    /// From the first publish until the last acknowledgement (QoS 1/2) or
    /// the last message written (QoS 0).
    pub elapsed: Duration,
    pub messages_per_sec: f64,
    pub readings_per_sec: f64,
    /// Stopped by the shutdown future before all rows were sent.
    pub interrupted: bool,
}

impl fmt::Display for SimulateReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "simulate: {} rows x {} assets = {} messages ({} readings) in {:.2} s: {:.0} msg/s, {:.0} readings/s",
            self.rows,
            self.assets,
            self.messages,
            self.readings,
            self.elapsed.as_secs_f64(),
            self.messages_per_sec,
            self.readings_per_sec
        )?;
        if self.acknowledged > 0 {
            write!(f, ", {} acknowledged", self.acknowledged)?;
        }
        if self.reconnects > 0 {
            write!(f, ", {} reconnect(s)", self.reconnects)?;
        }
        if self.interrupted {
            write!(f, " (interrupted)")?;
        }
        Ok(())
    }
}

/// Why a simulation could not run or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error("simulate: {option}: {reason}")]
    InvalidOption {
        option: &'static str,
        reason: String,
    },
    #[error("simulate: cannot load rows: {0}")]
    Load(#[from] LoadError),
    #[error("simulate: cannot read {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("simulate: cannot connect to MQTT broker {broker}: {source}")]
    Connect {
        broker: String,
        #[source]
        source: Box<ConnectionError>,
    },
    #[error("simulate: lost MQTT broker {broker} for more than {}s: {source}", RECONNECT_GIVE_UP.as_secs())]
    ConnectionLost {
        broker: String,
        #[source]
        source: Box<ConnectionError>,
    },
    #[error("simulate: the MQTT connection task stopped unexpectedly: {0}")]
    Link(String),
}

fn invalid(option: &'static str, reason: impl Into<String>) -> SimulateError {
    SimulateError::InvalidOption {
        option,
        reason: reason.into(),
    }
}

/// The name of asset `index` (0-based): `pump-001` for prefix `pump-`.
pub fn asset_name(prefix: &str, index: usize) -> String {
    format!("{prefix}{:03}", index + 1)
}

/// When row `row` (event-time offset `row_offset_ms` from the first row) is
/// due, relative to the start of publishing; `None` means at once.
pub fn due_after(pace: Pace, row: usize, row_offset_ms: i64) -> Option<Duration> {
    match pace {
        Pace::Rate(per_sec) => Some(Duration::from_secs_f64(row as f64 / per_sec)),
        Pace::Speed(multiple) => Some(Duration::from_secs_f64(
            row_offset_ms.max(0) as f64 / 1000.0 / multiple,
        )),
        Pace::AsFastAsPossible => None,
    }
}

// ---------------------------------------------------------------------------
// Formatting (pure)
// ---------------------------------------------------------------------------

/// Turns rows into `(topic, payload)` messages; topics and JSON keys are
/// rendered once up front.
#[derive(Debug, Clone)]
pub struct MessageFormatter {
    layout: Layout,
    /// JsonFrame: one topic per asset. PerChannel: `assets x channels`.
    topics: Vec<String>,
    /// Channel names as JSON string literals (quoted and escaped).
    json_keys: Vec<String>,
}

impl MessageFormatter {
    /// # Errors
    /// [`SimulateError::InvalidOption`] when the template lacks a placeholder
    /// the layout needs, or renders a topic MQTT cannot publish to (empty,
    /// `+`/`#`, or a channel or asset name containing `/`).
    pub fn new(
        template: &str,
        layout: Layout,
        assets: &[String],
        channels: &[String],
    ) -> Result<Self, SimulateError> {
        const OPT: &str = "topic template";
        if assets.len() > 1 && !template.contains("{asset}") {
            return Err(invalid(
                OPT,
                format!(
                    "{template:?} needs {{asset}} to tell {} assets apart",
                    assets.len()
                ),
            ));
        }
        let per_channel = matches!(layout, Layout::PerChannel(_));
        if per_channel != template.contains("{channel}") {
            return Err(invalid(
                OPT,
                if per_channel {
                    format!("{template:?} needs {{channel}} for one message per channel")
                } else {
                    format!("{template:?} has {{channel}} but one JSON object per row is sent")
                },
            ));
        }
        for name in assets
            .iter()
            .chain(per_channel.then_some(channels).into_iter().flatten())
        {
            if name.contains(['/', '+', '#', '\0']) {
                return Err(invalid(
                    OPT,
                    format!("name {name:?} cannot be part of a topic (contains / + # or NUL)"),
                ));
            }
        }
        let mut topics = Vec::new();
        for asset in assets {
            let t = template.replace("{asset}", asset);
            if per_channel {
                topics.extend(channels.iter().map(|c| t.replace("{channel}", c)));
            } else {
                topics.push(t);
            }
        }
        if let Some(bad) = topics
            .iter()
            .find(|t| t.is_empty() || t.contains(['+', '#', '\0']) || t.len() > 65535)
        {
            return Err(invalid(OPT, format!("renders the invalid topic {bad:?}")));
        }
        let json_keys = channels
            .iter()
            .map(|c| serde_json::to_string(c).unwrap_or_else(|_| format!("\"{c}\"")))
            .collect();
        Ok(Self {
            layout,
            topics,
            json_keys,
        })
    }

    /// Appends the messages of one row of asset `asset` (index) to `out`;
    /// returns the number of readings (finite values) they carry.
    pub fn format_row(
        &self,
        asset: usize,
        ts_ms: i64,
        values: &[f64],
        out: &mut Vec<(String, String)>,
    ) -> usize {
        let mut readings = 0;
        match self.layout {
            Layout::JsonFrame => {
                let mut payload = String::with_capacity(16 + values.len() * 24);
                payload.push_str("{\"ts\":");
                payload.push_str(&ts_ms.to_string());
                for (key, v) in self.json_keys.iter().zip(values) {
                    if v.is_finite() {
                        payload.push(',');
                        payload.push_str(key);
                        payload.push(':');
                        payload.push_str(&v.to_string());
                        readings += 1;
                    }
                }
                payload.push('}');
                out.push((self.topics[asset].clone(), payload));
            }
            Layout::PerChannel(kind) => {
                let topics = &self.topics[asset * self.json_keys.len()..];
                for (topic, v) in topics.iter().zip(values) {
                    if !v.is_finite() {
                        continue;
                    }
                    let payload = match kind {
                        ChannelPayload::Bare => v.to_string(),
                        ChannelPayload::Json => format!("{{\"value\":{v},\"ts\":{ts_ms}}}"),
                    };
                    out.push((topic.clone(), payload));
                    readings += 1;
                }
            }
        }
        readings
    }
}

// ---------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------

enum Rows {
    Synthetic {
        pumps: Vec<PumpSimulator>,
        fault: Option<(FaultKind, Range<usize>)>,
        all_assets: bool,
        row: [f64; 8],
    },
    Log {
        table: LogTable,
        columns: Vec<usize>,
        row: Vec<f64>,
    },
}

impl Rows {
    fn new(opts: &SimulateOptions) -> Result<(Self, Vec<String>), SimulateError> {
        match &opts.source {
            SimSource::SyntheticPump => {
                let pumps = (0..opts.assets)
                    .map(|a| PumpSimulator::new(opts.seed.wrapping_add(a as u64)))
                    .collect();
                let rows = Rows::Synthetic {
                    pumps,
                    fault: opts.fault.clone(),
                    all_assets: opts.fault_all_assets,
                    row: [0.0; 8],
                };
                Ok((rows, PUMP_CHANNELS.iter().map(|c| c.to_string()).collect()))
            }
            SimSource::Csv(path) => {
                if opts.fault.is_some() {
                    return Err(invalid(
                        "fault",
                        "only the synthetic pump can inject faults",
                    ));
                }
                let table = load_log(path, &LoadOptions::default())?;
                let channels = table.default_channels();
                let columns = table.select(&channels)?;
                let row = Vec::with_capacity(columns.len());
                Ok((
                    Rows::Log {
                        table,
                        columns,
                        row,
                    },
                    channels,
                ))
            }
        }
    }

    /// Event-time offset of row `i` from row 0 in ms; `None` past the end.
    fn offset_ms(&self, i: usize) -> Option<i64> {
        match self {
            Rows::Synthetic { .. } => Some(i as i64 * SYNTHETIC_PERIOD_MS),
            Rows::Log { table, .. } => {
                let ts = *table.timestamps.get(i)?;
                Some(ts.saturating_sub(table.timestamps[0]).div_euclid(1_000_000))
            }
        }
    }

    /// Own event time of row 0 (logs only).
    fn first_ts_ms(&self) -> Option<i64> {
        match self {
            Rows::Synthetic { .. } => None,
            Rows::Log { table, .. } => table.timestamps.first().map(|ns| ns.div_euclid(1_000_000)),
        }
    }

    fn rows_available(&self) -> Option<usize> {
        match self {
            Rows::Synthetic { .. } => None,
            Rows::Log { table, .. } => Some(table.len()),
        }
    }

    /// Values of row `i` for asset `asset`; rows must be taken in order.
    fn values(&mut self, asset: usize, i: usize) -> &[f64] {
        match self {
            Rows::Synthetic {
                pumps,
                fault,
                all_assets,
                row,
            } => {
                let active = fault
                    .as_ref()
                    .filter(|(_, r)| (asset == 0 || *all_assets) && r.contains(&i))
                    .map(|(kind, _)| *kind);
                let pump = &mut pumps[asset];
                pump.set_fault(active);
                *row = pump.next_row();
                &row[..]
            }
            Rows::Log {
                table,
                columns,
                row,
            } => {
                row.clear();
                row.extend(columns.iter().map(|&c| table.values[i][c]));
                &row[..]
            }
        }
    }
}

// ---------------------------------------------------------------------------
// MQTT
// ---------------------------------------------------------------------------

/// State of the connection task, watched by the publisher.
#[derive(Debug, Clone, Copy, Default)]
struct LinkStatus {
    connected: bool,
    /// Successful connections (the first one included).
    connects: u64,
    acked: u64,
}

fn check_options(opts: &SimulateOptions) -> Result<(), SimulateError> {
    if opts.broker_host.is_empty() {
        return Err(invalid("broker host", "is empty"));
    }
    if opts.broker_port == 0 {
        return Err(invalid("broker port", "must not be 0"));
    }
    if opts.assets == 0 {
        return Err(invalid("assets", "must be at least 1"));
    }
    if opts.qos > 2 {
        return Err(invalid(
            "qos",
            format!("is {}, must be 0, 1 or 2", opts.qos),
        ));
    }
    match opts.pace {
        Pace::Rate(v) if !(v.is_finite() && v > 0.0) => {
            return Err(invalid("rate", format!("{v} is not a positive number")));
        }
        Pace::Speed(v) if !(v.is_finite() && v > 0.0) => {
            return Err(invalid("speed", format!("{v} is not a positive number")));
        }
        _ => {}
    }
    if let Some((_, r)) = &opts.fault
        && r.start >= r.end
    {
        return Err(invalid("fault rows", format!("{r:?} is empty")));
    }
    if opts.password.is_some() && opts.username.is_none() {
        return Err(invalid("password", "given without a username"));
    }
    Ok(())
}

fn mqtt_options(opts: &SimulateOptions) -> Result<MqttOptions, SimulateError> {
    let client_id = opts.client_id.clone().unwrap_or_else(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        format!("anomalyd-sim-{}-{nanos:x}", std::process::id())
    });
    let mut m = MqttOptions::new(client_id, opts.broker_host.clone(), opts.broker_port);
    m.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true)
        .set_inflight(INFLIGHT)
        .set_request_channel_capacity(REQUEST_CAPACITY)
        .set_max_packet_size(MAX_PACKET_SIZE, MAX_PACKET_SIZE);
    if let Some(user) = &opts.username {
        m.set_credentials(user.clone(), opts.password.clone().unwrap_or_default());
    }
    if let Some(tls) = &opts.tls {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| SimulateError::ReadFile {
                path: path.clone(),
                source,
            })
        };
        let client_auth = match &tls.client_cert {
            Some((cert, key)) => Some((read(cert)?, read(key)?)),
            None => None,
        };
        m.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
            ca: read(&tls.ca_file)?,
            alpn: None,
            client_auth,
        }));
    }
    Ok(m)
}

/// Polls the event loop: counts acknowledgements, reconnects with capped
/// backoff and re-queues what was not acknowledged (rumqttc drops it on a
/// new clean session), until the client disconnects.
async fn drive(
    mut eventloop: EventLoop,
    status: watch::Sender<LinkStatus>,
    broker: String,
) -> Result<(), SimulateError> {
    let mut held: VecDeque<Request> = VecDeque::new();
    let mut ever_connected = false;
    let mut down_since: Option<Instant> = None;
    let mut backoff = BACKOFF_MIN;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                eventloop.pending.extend(held.drain(..));
                if down_since.take().is_some() {
                    tracing::info!(%broker, "simulate: reconnected to the MQTT broker");
                }
                ever_connected = true;
                backoff = BACKOFF_MIN;
                status.send_modify(|s| {
                    s.connected = true;
                    s.connects += 1;
                });
            }
            Ok(Event::Incoming(Packet::PubAck(_) | Packet::PubComp(_))) => {
                status.send_modify(|s| s.acked += 1);
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(ConnectionError::RequestsDone) => {
                return Ok(());
            }
            Ok(_) => {}
            Err(source) => {
                if !ever_connected {
                    return Err(SimulateError::Connect {
                        broker,
                        source: Box::new(source),
                    });
                }
                held.extend(eventloop.pending.drain(..));
                status.send_modify(|s| s.connected = false);
                let since = *down_since.get_or_insert_with(Instant::now);
                if since.elapsed() > RECONNECT_GIVE_UP {
                    return Err(SimulateError::ConnectionLost {
                        broker,
                        source: Box::new(source),
                    });
                }
                tracing::warn!(%broker, error = %source, retry_in_ms = backoff.as_millis() as u64,
                    "simulate: MQTT connection lost");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// The connection task's error, once it has ended.
async fn link_error(link: JoinHandle<Result<(), SimulateError>>) -> SimulateError {
    match link.await {
        Ok(Err(e)) => e,
        Ok(Ok(())) => SimulateError::Link("it ended before the publisher".to_string()),
        Err(join) => SimulateError::Link(join.to_string()),
    }
}

fn qos_of(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Publishes the rows described by `opts` until they are all sent (and, for
/// QoS 1/2, acknowledged) or `shutdown` resolves.
///
/// # Errors
/// Invalid options, a log that cannot be loaded, TLS files that cannot be
/// read, the first connection failing (e.g. refused credentials), or the
/// broker staying unreachable for longer than [`RECONNECT_GIVE_UP`].
pub async fn simulate(
    opts: SimulateOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<SimulateReport, SimulateError> {
    check_options(&opts)?;
    let (mut rows, channels) = Rows::new(&opts)?;
    let assets: Vec<String> = (0..opts.assets)
        .map(|a| asset_name(&opts.asset_prefix, a))
        .collect();
    let formatter = MessageFormatter::new(&opts.topic_template, opts.layout, &assets, &channels)?;
    let row_limit = match (opts.rows, rows.rows_available()) {
        (Some(n), Some(available)) => Some(n.min(available)),
        (n, available) => n.or(available),
    };
    let start_ts = match (opts.start_ts_ms, opts.pace, rows.first_ts_ms()) {
        (Some(ts), _, _) => ts,
        (None, Pace::AsFastAsPossible, Some(own)) => own,
        _ => now_ms(),
    };
    let qos = qos_of(opts.qos);
    let broker = format!("{}:{}", opts.broker_host, opts.broker_port);

    let (client, eventloop) = AsyncClient::new(mqtt_options(&opts)?, REQUEST_CAPACITY);
    let (status_tx, mut status) = watch::channel(LinkStatus::default());
    let mut link = tokio::spawn(drive(eventloop, status_tx, broker.clone()));

    let mut report = SimulateReport {
        rows: 0,
        assets: opts.assets,
        messages: 0,
        readings: 0,
        acknowledged: 0,
        reconnects: 0,
        elapsed: Duration::ZERO,
        messages_per_sec: 0.0,
        readings_per_sec: 0.0,
        interrupted: false,
    };
    tokio::pin!(shutdown);
    let connected = tokio::select! {
        () = &mut shutdown => None,
        r = status.wait_for(|s| s.connected) => Some(r.is_ok()),
    };
    match connected {
        None => {
            link.abort();
            report.interrupted = true;
            return Ok(report);
        }
        Some(false) => return Err(link_error(link).await),
        Some(true) => {}
    }
    tracing::info!(%broker, assets = opts.assets, rows = ?row_limit, "simulate: publishing");

    let started = Instant::now();
    let mut batch = Vec::new();
    'rows: for i in 0.. {
        if row_limit.is_some_and(|n| i >= n) {
            break;
        }
        let Some(offset) = rows.offset_ms(i) else {
            break;
        };
        if let Some(due) = due_after(opts.pace, i, offset) {
            let at = started + due;
            if at > Instant::now() {
                tokio::select! {
                    () = &mut shutdown => {
                        report.interrupted = true;
                        break 'rows;
                    }
                    () = tokio::time::sleep_until(at) => {}
                }
            }
        }
        let ts = start_ts.saturating_add(offset);
        for asset in 0..opts.assets {
            let values = rows.values(asset, i);
            report.readings += formatter.format_row(asset, ts, values, &mut batch) as u64;
            for (topic, payload) in batch.drain(..) {
                tokio::select! {
                    biased;
                    () = &mut shutdown => {
                        report.interrupted = true;
                        break 'rows;
                    }
                    sent = client.publish(topic, qos, false, payload) => {
                        if sent.is_err() {
                            return Err(link_error(link).await);
                        }
                        report.messages += 1;
                    }
                }
            }
        }
        report.rows += 1;
    }

    // With QoS 1/2 the run is done when the broker has everything.
    if qos != QoS::AtMostOnce {
        let expected = report.messages;
        let all_acked = |s: &LinkStatus| s.acked >= expected;
        let mut waited = Ok(Ok(()));
        if !report.interrupted {
            tokio::select! {
                () = &mut shutdown => report.interrupted = true,
                r = status.wait_for(all_acked) => waited = Ok(r.map(|_| ())),
            }
        }
        if report.interrupted {
            waited = tokio::time::timeout(SHUTDOWN_GRACE, status.wait_for(all_acked))
                .await
                .map(|r| r.map(|_| ()));
        }
        if let Ok(Err(_)) = waited {
            return Err(link_error(link).await);
        }
        report.acknowledged = status.borrow().acked;
    }
    report.reconnects = status.borrow().connects.saturating_sub(1);

    // Requests are handled in order: the disconnect goes out after every
    // queued publish, so QoS 0 messages are written before we return.
    if client.disconnect().await.is_ok() {
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut link).await {
            Ok(Ok(Err(e))) if !report.interrupted => return Err(e),
            Ok(_) => {}
            Err(_) => link.abort(),
        }
    } else if !report.interrupted {
        return Err(link_error(link).await);
    }

    // For QoS 0 this includes writing out the queue, so the rate is honest.
    report.elapsed = started.elapsed();
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    report.messages_per_sec = report.messages as f64 / secs;
    report.readings_per_sec = report.readings as f64 / secs;
    Ok(report)
}

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

/// `anomalyd simulate` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// MQTT broker as HOST:PORT (a bare HOST means port 1883).
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub broker: String,
    /// Publish the rows of this CSV or line-protocol log.
    #[arg(long, conflicts_with = "synthetic")]
    pub input: Option<PathBuf>,
    /// Publish generated data of this kind (`pump`, the default when no --input).
    #[arg(long, value_parser = ["pump"])]
    pub synthetic: Option<String>,
    /// Number of assets (each publishes every row).
    #[arg(long, default_value_t = 1)]
    pub assets: usize,
    /// Rows per second per asset [default: 1].
    #[arg(long, conflicts_with_all = ["speed", "fast"])]
    pub rate: Option<f64>,
    /// Follow the rows' timestamps at this multiple of real time.
    #[arg(long, conflicts_with = "fast")]
    pub speed: Option<f64>,
    /// Publish as fast as the broker accepts.
    #[arg(long)]
    pub fast: bool,
    /// Rows per asset [default: the whole log; the synthetic pump runs until Ctrl-C].
    #[arg(long)]
    pub rows: Option<usize>,
    /// Topic template with {asset} (and {channel} with --per-channel)
    /// [default: sensors/{asset}, or sensors/{asset}/{channel}].
    #[arg(long)]
    pub topic_template: Option<String>,
    /// One message per channel instead of one JSON object per row.
    #[arg(long)]
    pub per_channel: bool,
    /// With --per-channel: send bare numbers instead of {"value":..,"ts":..}.
    #[arg(long, requires = "per_channel")]
    pub bare: bool,
    /// MQTT QoS (0, 1 or 2).
    #[arg(long, default_value_t = 1)]
    pub qos: u8,
    /// Asset names are this prefix plus 001, 002, ...
    #[arg(long, default_value = "pump-")]
    pub asset_prefix: String,
    /// Inject a synthetic fault: bearing, cavitation or blockage.
    #[arg(long, requires = "fault_rows")]
    pub fault: Option<FaultKind>,
    /// Rows with the fault, START..END (0-based, END exclusive).
    #[arg(long, requires = "fault")]
    pub fault_rows: Option<String>,
    /// Inject the fault into every asset, not only the first.
    #[arg(long, requires = "fault")]
    pub fault_all_assets: bool,
    /// Event time of the first row (RFC 3339 or an epoch number).
    #[arg(long)]
    pub start_ts: Option<String>,
    /// Seed of the synthetic pump (asset N uses seed + N).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub username: Option<String>,
    /// File holding the MQTT password (keeps it out of the process list).
    #[arg(long, conflicts_with = "password")]
    pub password_file: Option<PathBuf>,
    #[arg(long)]
    pub password: Option<String>,
    /// Connect with TLS, trusting this CA certificate (PEM).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, requires_all = ["client_key", "ca_file"])]
    pub client_cert: Option<PathBuf>,
    #[arg(long, requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// MQTT client id [default: a unique one].
    #[arg(long)]
    pub client_id: Option<String>,
}

/// Parses `HOST:PORT` (or a bare host, port 1883; `[v6]:PORT` for IPv6).
pub fn parse_broker(s: &str) -> Result<(String, u16), SimulateError> {
    let bad = || invalid("broker", format!("{s:?} is not HOST:PORT"));
    if let Some(rest) = s.strip_prefix('[') {
        let (host, port) = rest.split_once("]:").ok_or_else(bad)?;
        return Ok((host.to_string(), port.parse().map_err(|_| bad())?));
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !host.contains(':') => {
            Ok((host.to_string(), port.parse().map_err(|_| bad())?))
        }
        None if !s.is_empty() => Ok((s.to_string(), 1883)),
        _ => Err(bad()),
    }
}

/// Parses `START..END` into a row range.
pub fn parse_row_range(s: &str) -> Result<Range<usize>, SimulateError> {
    let bad = || invalid("fault rows", format!("{s:?} is not START..END"));
    let (a, b) = s.split_once("..").ok_or_else(bad)?;
    let start = a.trim().parse().map_err(|_| bad())?;
    let end = b.trim().parse().map_err(|_| bad())?;
    Ok(start..end)
}

impl SimulateArgs {
    /// Checks the arguments and turns them into [`SimulateOptions`].
    ///
    /// # Errors
    /// [`SimulateError::InvalidOption`] for a malformed row range or start
    /// time, [`SimulateError::ReadFile`] for an unreadable password file.
    pub fn into_options(self) -> Result<SimulateOptions, SimulateError> {
        let pace = match (self.rate, self.speed, self.fast) {
            (_, _, true) => Pace::AsFastAsPossible,
            (_, Some(x), _) => Pace::Speed(x),
            (r, None, false) => Pace::Rate(r.unwrap_or(1.0)),
        };
        let layout = match (self.per_channel, self.bare) {
            (false, _) => Layout::JsonFrame,
            (true, false) => Layout::PerChannel(ChannelPayload::Json),
            (true, true) => Layout::PerChannel(ChannelPayload::Bare),
        };
        let topic_template = self.topic_template.unwrap_or_else(|| {
            if self.per_channel {
                DEFAULT_CHANNEL_TOPIC
            } else {
                DEFAULT_TOPIC
            }
            .to_string()
        });
        let fault = match (self.fault, self.fault_rows) {
            (Some(kind), Some(rows)) => Some((kind, parse_row_range(&rows)?)),
            _ => None,
        };
        let start_ts_ms = self
            .start_ts
            .map(|s| {
                crate::core::timestamp::parse_timestamp(&s)
                    .map(|ns| ns.div_euclid(1_000_000))
                    .map_err(|e| invalid("start ts", e.to_string()))
            })
            .transpose()?;
        let password = match self.password_file {
            Some(path) => Some(
                std::fs::read_to_string(&path)
                    .map_err(|source| SimulateError::ReadFile { path, source })?
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
            ),
            None => self.password,
        };
        let tls = self.ca_file.map(|ca_file| SimTls {
            ca_file,
            client_cert: self.client_cert.zip(self.client_key),
        });
        let (broker_host, broker_port) = parse_broker(&self.broker)?;
        Ok(SimulateOptions {
            broker_host,
            broker_port,
            source: self.input.map_or(SimSource::SyntheticPump, SimSource::Csv),
            assets: self.assets,
            pace,
            rows: self.rows,
            topic_template,
            layout,
            qos: self.qos,
            asset_prefix: self.asset_prefix,
            fault,
            fault_all_assets: self.fault_all_assets,
            start_ts_ms,
            seed: self.seed,
            username: self.username,
            password,
            tls,
            client_id: self.client_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn json_frame_topic_and_payload() {
        let f = MessageFormatter::new(
            "plant/{asset}",
            Layout::JsonFrame,
            &names(&["pump-001", "pump-002"]),
            &names(&["current", "flow rate"]),
        )
        .unwrap();
        let mut out = Vec::new();
        let n = f.format_row(1, 1_700_000_000_000, &[2.5, 0.1], &mut out);
        assert_eq!(n, 2);
        assert_eq!(
            out,
            [(
                "plant/pump-002".to_string(),
                r#"{"ts":1700000000000,"current":2.5,"flow rate":0.1}"#.to_string()
            )]
        );
        let json: serde_json::Value = serde_json::from_str(&out[0].1).unwrap();
        assert_eq!(json["flow rate"], 0.1);
    }

    #[test]
    fn json_frame_leaves_out_missing_values_and_escapes_names() {
        let f = MessageFormatter::new(
            "s/{asset}",
            Layout::JsonFrame,
            &names(&["a"]),
            &names(&["x\"y", "gap", "z"]),
        )
        .unwrap();
        let mut out = Vec::new();
        let n = f.format_row(0, -5, &[1e-7, f64::NAN, 3.0], &mut out);
        assert_eq!(n, 2);
        // Shortest round-trip decimals, never NaN or exponent-free garbage.
        assert_eq!(out[0].1, r#"{"ts":-5,"x\"y":0.0000001,"z":3}"#);
        let json: serde_json::Value = serde_json::from_str(&out[0].1).unwrap();
        assert_eq!(json, serde_json::json!({"ts": -5, "x\"y": 1e-7, "z": 3}));
    }

    #[test]
    fn per_channel_topics_and_payloads() {
        let assets = names(&["p1", "p2"]);
        let channels = names(&["current", "pressure"]);
        let json = MessageFormatter::new(
            "plant/{asset}/{channel}",
            Layout::PerChannel(ChannelPayload::Json),
            &assets,
            &channels,
        )
        .unwrap();
        let mut out = Vec::new();
        assert_eq!(json.format_row(1, 42, &[1.5, f64::NAN], &mut out), 1);
        assert_eq!(
            out,
            [(
                "plant/p2/current".to_string(),
                r#"{"value":1.5,"ts":42}"#.to_string()
            )]
        );
        let bare = MessageFormatter::new(
            "{channel}/{asset}",
            Layout::PerChannel(ChannelPayload::Bare),
            &assets,
            &channels,
        )
        .unwrap();
        out.clear();
        bare.format_row(0, 42, &[1.0, -0.25], &mut out);
        assert_eq!(
            out,
            [
                ("current/p1".to_string(), "1".to_string()),
                ("pressure/p1".to_string(), "-0.25".to_string())
            ]
        );
    }

    #[test]
    fn templates_are_checked_against_the_layout() {
        let two = names(&["a", "b"]);
        let ch = names(&["c"]);
        let err = |t: &str, layout, assets: &[String], channels: &[String]| {
            MessageFormatter::new(t, layout, assets, channels)
                .unwrap_err()
                .to_string()
        };
        let per = Layout::PerChannel(ChannelPayload::Bare);
        assert!(err("s/x", Layout::JsonFrame, &two, &ch).contains("{asset}"));
        assert!(err("s/{asset}", per, &two, &ch).contains("{channel}"));
        assert!(err("s/{asset}/{channel}", Layout::JsonFrame, &two, &ch).contains("{channel}"));
        assert!(err("s/+/{asset}", Layout::JsonFrame, &two, &ch).contains("invalid topic"));
        assert!(err("s/{asset}/{channel}", per, &two, &names(&["a/b"])).contains("\"a/b\""));
        // One asset may use a fixed topic.
        MessageFormatter::new("s/only", Layout::JsonFrame, &names(&["a"]), &ch).unwrap();
    }

    #[test]
    fn pacing() {
        let ms = Duration::from_millis;
        assert_eq!(due_after(Pace::Rate(10.0), 5, 999), Some(ms(500)));
        assert_eq!(due_after(Pace::Rate(0.5), 3, 0), Some(ms(6000)));
        assert_eq!(due_after(Pace::Speed(2.0), 4, 4000), Some(ms(2000)));
        assert_eq!(due_after(Pace::Speed(1.0), 1, -10), Some(ms(0)));
        assert_eq!(due_after(Pace::AsFastAsPossible, 1_000_000, 5), None);
    }

    #[test]
    fn asset_names_are_numbered_from_one() {
        assert_eq!(asset_name("pump-", 0), "pump-001");
        assert_eq!(asset_name("m", 1233), "m1234");
    }

    #[test]
    fn synthetic_rows_match_synth_generate_for_asset_zero() {
        let opts = SimulateOptions {
            assets: 2,
            seed: 7,
            fault: Some((FaultKind::Bearing, 3..6)),
            ..SimulateOptions::default()
        };
        let (mut rows, channels) = Rows::new(&opts).unwrap();
        assert_eq!(channels, PUMP_CHANNELS);
        let log =
            crate::core::synth::generate(8, 7, 0, 1_000_000_000, Some((FaultKind::Bearing, 3..6)));
        let other = crate::core::synth::generate(8, 8, 0, 1_000_000_000, None);
        for i in 0..8 {
            assert_eq!(rows.offset_ms(i), Some(i as i64 * 1000));
            assert_eq!(rows.values(0, i), &log.values[i][..], "asset 0 row {i}");
            assert_eq!(rows.values(1, i), &other.values[i][..], "asset 1 row {i}");
        }
    }

    #[test]
    fn invalid_options_are_refused() {
        let bad = |opts: SimulateOptions| check_options(&opts).unwrap_err().to_string();
        let d = SimulateOptions::default;
        assert!(bad(SimulateOptions { assets: 0, ..d() }).contains("assets"));
        assert!(bad(SimulateOptions { qos: 3, ..d() }).contains("qos"));
        assert!(
            bad(SimulateOptions {
                pace: Pace::Rate(0.0),
                ..d()
            })
            .contains("rate")
        );
        assert!(
            bad(SimulateOptions {
                pace: Pace::Speed(f64::NAN),
                ..d()
            })
            .contains("speed")
        );
        let fault = Some((FaultKind::Blockage, 5..5));
        assert!(bad(SimulateOptions { fault, ..d() }).contains("fault rows"));
    }

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: SimulateArgs,
    }

    fn parse(args: &[&str]) -> SimulateOptions {
        let cli =
            Cli::try_parse_from(std::iter::once("simulate").chain(args.iter().copied())).unwrap();
        cli.args.into_options().unwrap()
    }

    #[test]
    fn broker_addresses() {
        assert_eq!(parse_broker("h:1").unwrap(), ("h".to_string(), 1));
        assert_eq!(parse_broker("h").unwrap(), ("h".to_string(), 1883));
        assert_eq!(parse_broker("[::1]:99").unwrap(), ("::1".to_string(), 99));
        assert!(parse_broker("h:x").is_err());
        assert!(parse_broker("").is_err());
    }

    #[test]
    fn command_line_defaults_and_choices() {
        assert_eq!(parse(&[]), SimulateOptions::default());
        let o = parse(&[
            "--broker",
            "127.0.0.1:1884",
            "--assets",
            "3",
            "--fast",
            "--per-channel",
            "--bare",
            "--qos",
            "0",
            "--fault",
            "cavitation",
            "--fault-rows",
            "10..20",
            "--start-ts",
            "2024-01-01T00:00:00Z",
            "--rows",
            "50",
        ]);
        assert_eq!(o.broker_port, 1884);
        assert_eq!(o.assets, 3);
        assert_eq!(o.pace, Pace::AsFastAsPossible);
        assert_eq!(o.layout, Layout::PerChannel(ChannelPayload::Bare));
        assert_eq!(o.topic_template, DEFAULT_CHANNEL_TOPIC);
        assert_eq!(o.fault, Some((FaultKind::Cavitation, 10..20)));
        assert_eq!(o.start_ts_ms, Some(1_704_067_200_000));
        assert_eq!(o.rows, Some(50));
        assert_eq!(parse(&["--speed", "60"]).pace, Pace::Speed(60.0));
        assert_eq!(parse(&["--rate", "100"]).pace, Pace::Rate(100.0));
        assert!(Cli::try_parse_from(["simulate", "--rate", "1", "--fast"]).is_err());
        assert!(Cli::try_parse_from(["simulate", "--fault", "bearing"]).is_err());
        let cli = Cli::try_parse_from(["simulate", "--fault", "bearing", "--fault-rows", "9"]);
        assert!(cli.unwrap().args.into_options().is_err());
    }

    #[test]
    fn csv_rows_keep_their_spacing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.csv");
        std::fs::write(
            &path,
            "datetime;a;b;anomaly\n2020-03-09 10:14:33;1;2;0\n2020-03-09 10:14:34;3;;0\n2020-03-09 10:14:36;5;6;1\n",
        )
        .unwrap();
        let opts = SimulateOptions {
            source: SimSource::Csv(path),
            ..SimulateOptions::default()
        };
        let (mut rows, channels) = Rows::new(&opts).unwrap();
        assert_eq!(channels, ["a", "b"]);
        assert_eq!(rows.rows_available(), Some(3));
        assert_eq!(rows.first_ts_ms(), Some(1_583_748_873_000));
        assert_eq!(
            (0..4).map(|i| rows.offset_ms(i)).collect::<Vec<_>>(),
            [Some(0), Some(1000), Some(3000), None]
        );
        assert_eq!(rows.values(0, 1)[0], 3.0);
        assert!(rows.values(0, 1)[1].is_nan());
    }
}
