//! `anomalyd run`: wires the stages together (docs/architecture.md §2) and owns the
//! process lifecycle: start-up, systemd notifications, SIGHUP reload and a
//! draining shutdown.
//!
//! ```text
//! MQTT task (decode, align, window, normalise)
//!   --bounded--> scoring thread (ORT sessions, micro-batches, detectors)
//!   --bounded--> sink task (InfluxDB batches)
//! ```

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

pub mod alerts;
mod models;
mod scoring;
mod sessions;

use crate::config::{Config, ConfigError, Settings};
use crate::core::timestamp::now_ns;
use crate::model::RuntimeError;
use crate::ops::metrics::Metrics;
use crate::pipeline::{InferenceMsg, NamedModel, Output, Scorer};
use crate::sinks::influx::{InfluxWriter, SinkSettings};
use crate::state::open_alerts::AlertStore;
pub use models::load_models;
use models::{model_info, model_status, reload_config, slots_of};
use scoring::spawn_scorer;

/// Why the daemon could not start (reload failures are logged, not fatal).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("model {name:?} ({path}): {message}")]
    Model {
        name: String,
        path: PathBuf,
        message: String,
    },
    #[error(transparent)]
    Sink(#[from] crate::sinks::influx::SinkError),
    #[error(transparent)]
    Mqtt(#[from] crate::sources::mqtt::MqttError),
    #[error("state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("metrics listener on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Spool(#[from] crate::state::spool::SpoolError),
    #[error(transparent)]
    Journal(#[from] crate::state::journal::JournalError),
    #[error(transparent)]
    RefusedPoints(#[from] crate::state::RefusedPointsError),
    #[error("the scoring thread could not be started: {0}")]
    Thread(std::io::Error),
    #[error(transparent)]
    Outbox(#[from] crate::state::OutboxError),
    #[error(transparent)]
    Webhook(#[from] crate::sinks::alerts::webhook::WebhookError),
    #[error("MQTT broker {addr}: {message}")]
    Broker { addr: String, message: String },
}

/// Journal rotation and retention for these models: processed segments are
/// kept for twice the longest window span plus the allowed lateness, so a
/// replay after a crash rebuilds every window that was still open.
fn journal_settings(
    cfg: &Config,
    models: &[NamedModel],
    dir: &Path,
) -> crate::state::journal::JournalSettings {
    let span_ms = models
        .iter()
        .map(|m| {
            let meta = &m.model.metadata;
            (meta.window as u64 + 2).saturating_mul(meta.sample_period_ms)
        })
        .max()
        .unwrap_or(0)
        .saturating_add(cfg.pipeline.allowed_lateness_ms);
    crate::state::journal::JournalSettings {
        dir: dir.to_path_buf(),
        max_bytes: cfg.journal.max_mb.saturating_mul(1024 * 1024),
        segment_bytes: 8 * 1024 * 1024,
        // Short segments: a crash rewrites at most the unconfirmed one
        // (docs/durability.md §4).
        segment_age: Duration::from_secs(1),
        retention_ns: i64::try_from(span_ms.saturating_mul(2).saturating_mul(1_000_000))
            .unwrap_or(i64::MAX),
        fsync: cfg.journal.fsync,
    }
}

/// Keeps systemd's `STATUS=` line on what `/readyz` says, and logs each
/// change between ready and degraded, until `stop`.
async fn report_readiness(metrics: &Metrics, after: Duration, stop: CancellationToken) {
    let mut last: Option<(Vec<String>, u64)> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let now_s = u64::try_from(now_ns() / 1_000_000_000).unwrap_or(0);
        let why = crate::ops::readiness::degraded(metrics, now_s, after);
        let assets = metrics.assets.load(Relaxed);
        // Seconds in the reasons change every tick: compare their kind.
        let kinds: Vec<String> = why
            .iter()
            .map(|w| crate::ops::readiness::reason_kind(w).to_string())
            .collect();
        if last
            .as_ref()
            .is_some_and(|(k, a)| *k == kinds && *a == assets)
        {
            continue;
        }
        match (&last, why.is_empty()) {
            (_, false) => tracing::warn!(reasons = ?why, "degraded"),
            (Some((k, _)), true) if !k.is_empty() => tracing::info!("ready again"),
            _ => {}
        }
        let _ = crate::ops::notify::status(&crate::ops::readiness::status_line(&why, assets));
        last = Some((kinds, assets));
    }
}

/// Runs the daemon until `shutdown` resolves (SIGTERM/SIGINT in the
/// binary). `reload` yields once per SIGHUP. `config_path` is re-read on
/// reload.
///
/// # Errors
/// Start-up failures: config, ONNX Runtime library, models, sink, listener.
pub async fn run(
    settings: Settings,
    config_path: PathBuf,
    shutdown: impl Future<Output = ()>,
    mut reload: mpsc::Receiver<()>,
) -> Result<(), DaemonError> {
    let started = Instant::now();
    let cfg = &settings.config;
    let lib = crate::model::init_runtime(cfg.runtime.library_path.as_deref())?;
    tracing::info!(library = %lib.display(), "ONNX Runtime loaded");
    let cfg_for_load = cfg.clone();
    let models = tokio::task::spawn_blocking(move || load_models(&cfg_for_load))
        .await
        .map_err(|e| DaemonError::Thread(std::io::Error::other(e.to_string())))??;
    let metrics = Arc::new(Metrics::default());
    metrics.set_models(model_info(&models));
    let state_dir = cfg.state.resolved_directory();
    if let Some(dir) = &state_dir {
        std::fs::create_dir_all(dir).map_err(|source| DaemonError::StateDir {
            path: dir.clone(),
            source,
        })?;
    }
    let board = Arc::new(crate::ops::status::StatusBoard::default());
    board.set_models(model_status(&models));

    // A reload (SIGHUP) sends new credentials: a fixed password or token
    // takes effect without a restart, and nothing kept meanwhile is lost.
    let (auth_tx, auth_rx) = watch::channel(cfg.influx_auth()?);
    let writer = InfluxWriter::new(&cfg.influx, auth_rx)?;
    // At-least-once through a crash: journal, then acknowledge (each
    // session opens its own journal: sessions.rs).
    let journal = journal_settings(cfg, &models, &state_dir.clone().unwrap_or_default());
    match (
        &state_dir,
        cfg.journal.enabled && settings.qos.acknowledged(),
    ) {
        (Some(_), true) if cfg.mqtt.clean_session => tracing::warn!(
            "mqtt.clean_session = true: the broker forgets unacknowledged messages when the daemon is away"
        ),
        (None, true) => tracing::warn!(
            "no state directory: messages are acknowledged on receipt, and a crash loses what was not yet scored"
        ),
        _ => {}
    }

    let source_hb = Arc::new(AtomicU64::new(now_ns() as u64));
    let scorer_hb = Arc::new(AtomicU64::new(now_ns() as u64));
    let listen_stop = CancellationToken::new();
    if !cfg.metrics.listen.is_empty() {
        let health = crate::ops::http::Health {
            metrics: metrics.clone(),
            board: board.clone(),
            heartbeats: vec![source_hb.clone(), scorer_hb.clone()],
            stale_after: Duration::from_secs(10),
            degraded_after: Duration::from_secs(cfg.metrics.degraded_after_s),
        };
        let addr = crate::ops::http::serve(&cfg.metrics.listen, health, listen_stop.clone())
            .await
            .map_err(|source| DaemonError::Listen {
                addr: cfg.metrics.listen.clone(),
                source,
            })?;
        tracing::info!(%addr, "metrics at http://{addr}/metrics");
    }

    let slots = slots_of(&models);
    // The source sends windows in batches of up to WINDOWS_PER_SEND: the
    // channel's capacity in messages keeps queue_capacity a bound in windows.
    let (win_tx, win_rx) = flume::bounded::<InferenceMsg>(
        cfg.pipeline
            .queue_capacity
            .div_ceil(crate::sources::mqtt::WINDOWS_PER_SEND)
            .max(1),
    );
    // The scoring thread sends a batch's outputs as one message, about one
    // per window (a score; rarely also an alert transition).
    let (out_tx, out_rx) = crate::sinks::sink_queue::<crate::pipeline::ScoredBatch>(
        cfg.influx
            .queue_capacity
            .div_ceil(cfg.runtime.max_batch.max(1)),
    );
    let (ready_tx, ready_rx) = oneshot::channel();

    let mut scorer = Scorer::new(models, metrics.clone());
    let alerts = match &state_dir {
        Some(dir) => {
            let (store, open) = AlertStore::open(dir);
            scorer.restore_open_alerts(open);
            Some(store)
        }
        None => {
            tracing::warn!("no state directory: open alerts are not kept across restarts");
            None
        }
    };
    let open_anomalies = scorer
        .open_alerts()
        .into_iter()
        .map(|(a, o)| (a, o.start_ts));
    let mut quality_restore = Vec::new();
    let (fanout, alert_outputs) =
        match alerts::start(cfg, state_dir.as_deref(), &metrics, open_anomalies)? {
            Some((f, o)) => {
                quality_restore = f.active.quality();
                (Some(f), Some(o))
            }
            None => (None, None),
        };
    let scorer_thread = spawn_scorer(
        scorer,
        win_rx,
        out_tx,
        cfg.runtime.max_batch,
        scorer_hb.clone(),
        board.clone(),
        metrics.clone(),
        alerts,
        fanout,
    )
    .map_err(DaemonError::Thread)?;

    let spool = match cfg.spool.resolved_directory(state_dir.as_deref()) {
        Some(dir) => {
            let (spool, report) =
                crate::state::spool::Spool::open(&dir, cfg.spool.max_mb * 1024 * 1024)?;
            tracing::info!(
                directory = %dir.display(),
                segments = report.segments,
                points = report.points,
                quarantined = report.quarantined,
                "spool opened"
            );
            Some(spool)
        }
        None => {
            tracing::warn!(
                "no spool directory: batches the database cannot take are held in memory only"
            );
            None
        }
    };
    let dead_letter = match &state_dir {
        Some(dir) => Some(crate::state::RefusedPoints::open(
            dir,
            cfg.spool.max_mb * 1024 * 1024,
        )?),
        None => {
            tracing::warn!(
                "no state directory: points the database refuses one by one are logged and dropped"
            );
            None
        }
    };
    let sink_stop = CancellationToken::new();
    // [record]: frames go to their own writer loop, so that recording
    // never holds scores back; it ends when the source drops its sender.
    let mut record_tx = None;
    let record_sink = if cfg.record.enabled {
        let (tx, rx) = mpsc::channel::<Output>(cfg.record.queue_capacity);
        record_tx = Some(tx);
        let mut settings = SinkSettings::from_config(&cfg.influx);
        settings.measurements.record = cfg.record.measurement.clone();
        tracing::info!(measurement = %cfg.record.measurement, "recording aligned frames");
        Some(tokio::spawn(crate::sinks::influx::run_sink(
            writer.clone(),
            settings,
            rx,
            metrics.clone(),
            sink_stop.clone(),
            crate::sinks::SinkStore::default(),
        )))
    } else {
        None
    };
    let sink = tokio::spawn(crate::sinks::influx::run_sink(
        writer,
        SinkSettings::from_config(&cfg.influx),
        out_rx,
        metrics.clone(),
        sink_stop.clone(),
        crate::sinks::SinkStore { spool, dead_letter },
    ));

    let source_stop = CancellationToken::new();
    let mut sessions = sessions::Sessions::new(sessions::Shared {
        metrics: metrics.clone(),
        heartbeat: source_hb.clone(),
        windows: win_tx.clone(),
        state_dir: state_dir.clone(),
        record: record_tx,
        quality_restore,
        journal,
    });
    sessions.start_all(&settings, &slots, ready_tx)?;

    // READY once the models are loaded and the broker has answered; then
    // STATUS= follows readiness (docs/durability.md §5).
    let ready_metrics = metrics.clone();
    let degraded_after = Duration::from_secs(cfg.metrics.degraded_after_s);
    let status_stop = source_stop.clone();
    tokio::spawn(async move {
        if ready_rx.await.is_err() {
            return;
        }
        let ms = started.elapsed().as_millis();
        tracing::info!(startup_ms = ms as u64, "ready");
        let _ = crate::ops::notify::ready();
        report_readiness(&ready_metrics, degraded_after, status_stop).await;
    });
    // WATCHDOG=1 only while both pipeline loops beat.
    if let Some(interval) = crate::ops::notify::watchdog_interval() {
        let hbs = [source_hb.clone(), scorer_hb.clone()];
        let stop = source_stop.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(interval);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = t.tick() => {
                        let now = now_ns() as u64;
                        let fresh = hbs.iter().all(|h| now.saturating_sub(h.load(Relaxed)) < 5_000_000_000 + interval.as_nanos() as u64 * 2);
                        if fresh {
                            let _ = crate::ops::notify::watchdog();
                        } else {
                            tracing::error!("pipeline heartbeat is stale; withholding the watchdog ping");
                        }
                    }
                }
            }
        });
    }

    tokio::pin!(shutdown);
    let mut current = settings;
    // A daemon that owns no partition has no source to beat for it.
    let mut standby_beat = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = standby_beat.tick(), if sessions.is_empty() => {
                source_hb.store(now_ns() as u64, Relaxed);
            }
            Some(()) = reload.recv() => {
                match reload_config(&config_path, &current.config).await {
                    Ok((new, models)) => {
                        let old: Vec<String> = current.config.models.iter().map(|m| m.name.clone()).collect();
                        let info = model_info(&models);
                        let slots = slots_of(&models);
                        let journal = journal_settings(&new.config, &models, &state_dir.clone().unwrap_or_default());
                        // Models first (ordered with queued windows), then the sessions.
                        if win_tx.send_async(InferenceMsg::Swap(models)).await.is_err() {
                            break;
                        }
                        sessions.reload(&new, &slots, journal).await;
                        metrics.set_models(info.clone());
                        metrics.reloads.fetch_add(1, Relaxed);
                        tracing::info!(old = ?old, new = ?info, "reloaded config and models");
                        match new.config.influx_auth() {
                            Ok(auth) => {
                                auth_tx.send_if_modified(|a| {
                                    let changed = *a != auth;
                                    *a = auth;
                                    changed
                                });
                            }
                            Err(e) => tracing::error!(error = %e, "the database credentials could not be re-read; the old ones stay in use"),
                        }
                        let (was, now) = (&current.config, &new.config);
                        if now.influx.url != was.influx.url || now.mqtt.host != was.mqtt.host || now.mqtt.port != was.mqtt.port || now.mqtt.hosts != was.mqtt.hosts {
                            tracing::warn!("connection settings changed: they take effect at the next restart");
                        }
                        let outputs = |c: &Config| serde_json::to_string(&c.alerts.outputs).unwrap_or_default();
                        if outputs(now) != outputs(was) {
                            tracing::warn!("alert outputs changed: they take effect at the next restart");
                        }
                        current = new;
                    }
                    Err(e) => {
                        metrics.reload_failures.fetch_add(1, Relaxed);
                        tracing::error!(error = %e, "reload refused; the running config and models stay in service");
                    }
                }
            }
        }
    }

    // Shutdown: stop reading, drain the pipeline, flush the sink.
    tracing::info!("shutting down: draining the pipeline");
    let _ = crate::ops::notify::stopping();
    drop(win_tx);
    source_stop.cancel();
    let deadline = current.shutdown_timeout();
    let drain = async {
        sessions.stop_all().await;
        let _ = tokio::task::spawn_blocking(move || scorer_thread.join()).await;
        let _ = sink.await;
        if let Some(r) = record_sink {
            let _ = r.await;
        }
    };
    tokio::pin!(drain);
    if tokio::time::timeout(deadline, &mut drain).await.is_err() {
        tracing::error!(
            timeout_s = deadline.as_secs(),
            "shutdown deadline reached; dropping what is left"
        );
        sink_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    }
    if let Some(o) = alert_outputs {
        o.finish(Duration::from_secs(2)).await;
    }
    listen_stop.cancel();
    tracing::info!(
        windows_scored = metrics.windows_scored.load(Relaxed),
        points_written = metrics.points_written.load(Relaxed),
        points_dropped = metrics.points_dropped.load(Relaxed),
        "stopped"
    );
    Ok(())
}
