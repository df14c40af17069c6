//! `anomalyd run`: wires the stages together (DESIGN.md §2) and owns the
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
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::model::{LoadedModel, RuntimeError, RuntimeOptions};
use crate::ops::metrics::Metrics;
use crate::pipeline::{Binder, FeatureStage, ModelSlot, NamedModel, Output, Scorer, StageSettings};
use crate::sinks::influx::{InfluxWriter, SinkSettings};
use crate::sources::mqtt::decode::Decoder;
use crate::sources::mqtt::{InferenceMsg, SourceParts, SourceReload};

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
    #[error("the scoring thread could not be started: {0}")]
    Thread(std::io::Error),
}

impl DaemonError {
    /// Exit code: 78 for configuration and model problems, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            DaemonError::Config(_)
            | DaemonError::Spool(_)
            | DaemonError::Journal(_)
            | DaemonError::StateDir { .. }
            | DaemonError::Model { .. }
            | DaemonError::Sink(_)
            | DaemonError::Mqtt(_) => crate::config::EXIT_CONFIG,
            DaemonError::Runtime(RuntimeError::Library { .. }) => crate::config::EXIT_CONFIG,
            _ => 1,
        }
    }
}

/// Checks the model file's SHA-256 against the pinned value, if any.
fn check_pin(path: &Path, expected: Option<&str>) -> Result<(), String> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let actual = crate::model::file_digest(path)
        .map_err(|e| format!("cannot read: {e}"))?
        .sha256;
    if actual.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(format!(
            "SHA-256 is {actual}, config pins {expected}: refusing the file"
        ))
    }
}

/// Loads and validates every configured model.
///
/// # Errors
/// The first model that fails to load, pin-check or validate.
pub fn load_models(cfg: &Config) -> Result<Vec<NamedModel>, DaemonError> {
    let opts = RuntimeOptions {
        library_path: cfg.runtime.library_path.clone(),
        execution_provider: cfg.runtime.execution_provider,
        intra_threads: cfg.runtime.intra_threads,
    };
    let mut out = Vec::new();
    for mc in &cfg.models {
        let err = |message: String| DaemonError::Model {
            name: mc.name.clone(),
            path: mc.path.clone(),
            message,
        };
        check_pin(&mc.path, mc.sha256.as_deref()).map_err(err)?;
        let model = LoadedModel::load(&mc.path, &opts).map_err(|e| err(e.to_string()))?;
        if let Some(expected) = &mc.channels {
            let missing: Vec<&String> = expected
                .iter()
                .filter(|c| !model.metadata.channels.contains(c))
                .collect();
            if !missing.is_empty() {
                return Err(err(format!(
                    "the config names channel(s) {missing:?} that the model lacks (it has {:?})",
                    model.metadata.channels
                )));
            }
        }
        tracing::info!(
            model = %mc.name,
            version = %model.metadata.version,
            provider = %model.provider,
            channels = model.metadata.channels.len(),
            window = model.metadata.window,
            threshold = model.metadata.threshold.value,
            "model loaded"
        );
        out.push(NamedModel {
            name: mc.name.as_str().into(),
            model,
        });
    }
    Ok(out)
}

/// `check-config`: validates the config and loads every model without
/// connecting anywhere. Returns a summary for the operator.
///
/// # Errors
/// As [`load_models`], plus configuration errors.
pub fn check_config(path: &Path) -> Result<String, DaemonError> {
    let cfg = Config::load(path)?;
    crate::model::init_runtime(cfg.runtime.library_path.as_deref())?;
    let models = load_models(&cfg)?;
    let _ = cfg.mqtt_password()?;
    let _ = cfg.influx_token()?;
    let mut s = format!("config {} is valid\n", path.display());
    for m in &models {
        s.push_str(&format!(
            "  model {:?}: {} v{} ({} channels, window {}, threshold {}, provider {})\n",
            m.name,
            m.model.path.display(),
            m.model.metadata.version,
            m.model.metadata.channels.len(),
            m.model.metadata.window,
            m.model.metadata.threshold.value,
            m.model.provider
        ));
    }
    for t in &cfg.topics {
        s.push_str(&format!("  topic {} ({:?})\n", t.filter, t.payload));
    }
    Ok(s)
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
        segment_age: Duration::from_secs(5),
        retention_ns: i64::try_from(span_ms.saturating_mul(2).saturating_mul(1_000_000))
            .unwrap_or(i64::MAX),
        fsync: cfg.journal.fsync,
    }
}

fn slots_of(models: &[NamedModel]) -> Vec<ModelSlot> {
    models
        .iter()
        .map(|m| ModelSlot::new(&m.name, m.model.metadata.clone()))
        .collect()
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn model_status(models: &[NamedModel]) -> Vec<crate::ops::status::ModelStatus> {
    models
        .iter()
        .map(|m| crate::ops::status::ModelStatus {
            name: m.name.to_string(),
            version: m.model.metadata.version.clone(),
            provider: m.model.provider.to_string(),
            channels: m.model.metadata.channels.clone(),
            window: m.model.metadata.window,
        })
        .collect()
}

fn model_info(models: &[NamedModel]) -> Vec<(String, String, String)> {
    models
        .iter()
        .map(|m| {
            (
                m.name.to_string(),
                m.model.metadata.version.clone(),
                m.model.provider.to_string(),
            )
        })
        .collect()
}

/// Takes one message into the batch being gathered. A model swap or a
/// journal barrier ends the batch: it applies after the windows before it.
fn gather(
    msg: InferenceMsg,
    pending: &mut Vec<crate::pipeline::ScoreRequest>,
    swap: &mut Option<Vec<NamedModel>>,
    barrier: &mut Option<u64>,
) {
    match msg {
        InferenceMsg::Windows(w) => pending.extend(w),
        InferenceMsg::Swap(m) => *swap = Some(m),
        InferenceMsg::Barrier(b) => *barrier = Some(b),
    }
}

/// The scoring thread: owns the ONNX Runtime sessions, micro-batches
/// windows across assets (up to `max_batch`, waiting at most `max_wait` for
/// a batch to fill), runs the detectors and hands outputs to the sink.
#[allow(clippy::too_many_arguments)] // Each is a distinct part the thread owns.
fn spawn_scorer(
    mut scorer: Scorer,
    mut rx: mpsc::Receiver<InferenceMsg>,
    tx: mpsc::Sender<Output>,
    max_batch: usize,
    max_wait: Duration,
    heartbeat: Arc<AtomicU64>,
    board: Arc<crate::ops::status::StatusBoard>,
    rt: tokio::runtime::Handle,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("anomalyd-score".into())
        .spawn(move || {
            let mut pending = Vec::with_capacity(max_batch);
            let mut outputs = Vec::with_capacity(max_batch * 2);
            let mut open = true;
            while open {
                heartbeat.store(now_ns(), Relaxed);
                // Wait (bounded, so the heartbeat keeps beating) for work.
                let first = rt.block_on(async {
                    tokio::time::timeout(Duration::from_secs(1), rx.recv()).await
                });
                let msg = match first {
                    Err(_) => continue,
                    Ok(None) => break,
                    Ok(Some(m)) => m,
                };
                let mut swap = None;
                let mut barrier = None;
                gather(msg, &mut pending, &mut swap, &mut barrier);
                // Fill the batch: what is queued now, then wait up to max_wait.
                let deadline = Instant::now() + max_wait;
                while swap.is_none() && barrier.is_none() && pending.len() < max_batch {
                    match rx.try_recv() {
                        Ok(m) => gather(m, &mut pending, &mut swap, &mut barrier),
                        Err(mpsc::error::TryRecvError::Empty) => {
                            let left = deadline.saturating_duration_since(Instant::now());
                            if left.is_zero() {
                                break;
                            }
                            match rt.block_on(async { tokio::time::timeout(left, rx.recv()).await })
                            {
                                Err(_) => break,
                                Ok(None) => {
                                    open = false;
                                    break;
                                }
                                Ok(Some(m)) => gather(m, &mut pending, &mut swap, &mut barrier),
                            }
                        }
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            open = false;
                            break;
                        }
                    }
                }
                while !pending.is_empty() {
                    let take = pending.len().min(max_batch);
                    let mut chunk: Vec<_> = pending.drain(..take).collect();
                    scorer.score(&mut chunk, &mut outputs);
                    board.record(&outputs);
                    for o in outputs.drain(..) {
                        if tx.blocking_send(o).is_err() {
                            return;
                        }
                    }
                }
                // The barrier follows the outputs of every window before it.
                if let Some(b) = barrier
                    && tx.blocking_send(Output::Barrier(b)).is_err()
                {
                    return;
                }
                if let Some(models) = swap {
                    board.set_models(model_status(&models));
                    scorer.replace_models(models);
                }
            }
        })
}

/// Runs the daemon until `shutdown` resolves (SIGTERM/SIGINT in the
/// binary). `reload` yields once per SIGHUP. `config_path` is re-read on
/// reload.
///
/// # Errors
/// Start-up failures: config, ONNX Runtime library, models, sink, listener.
pub async fn run(
    cfg: Config,
    config_path: PathBuf,
    shutdown: impl Future<Output = ()>,
    mut reload: mpsc::Receiver<()>,
) -> Result<(), DaemonError> {
    let started = Instant::now();
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

    let token = cfg.influx_token()?;
    let writer = InfluxWriter::new(&cfg.influx, token.expose())?;
    let password = cfg.mqtt_password()?;
    let mut options = crate::sources::mqtt::mqtt_options(&cfg.mqtt, password.as_ref())?;
    // At-least-once through a crash: journal, then acknowledge.
    let (journal, barriers) = match (&state_dir, cfg.journal.enabled && cfg.mqtt.qos >= 1) {
        (Some(dir), true) => {
            let settings = journal_settings(&cfg, &models, &dir.join("journal"));
            let retention_s = settings.retention_ns / 1_000_000_000;
            let (journal, replay) = crate::state::journal::Journal::open(settings)?;
            tracing::info!(
                directory = %dir.join("journal").display(),
                segments = replay.len(),
                retention_s,
                "intake journal opened: messages are acknowledged once journaled"
            );
            if cfg.mqtt.clean_session {
                tracing::warn!(
                    "mqtt.clean_session = true: the broker forgets unacknowledged messages when the daemon is away"
                );
            }
            options.set_manual_acks(true);
            let (tx, rx) = mpsc::unbounded_channel();
            (
                Some(crate::sources::mqtt::JournalParts {
                    journal,
                    replay,
                    processed: rx,
                }),
                Some(tx),
            )
        }
        (None, true) => {
            tracing::warn!(
                "no state directory: messages are acknowledged on receipt, and a crash loses what was not yet scored"
            );
            (None, None)
        }
        _ => (None, None),
    };
    let decoder = Decoder::from_config(&cfg.topics).map_err(|e| {
        DaemonError::Config(ConfigError::Parse {
            origin: config_path.display().to_string(),
            message: e.to_string(),
        })
    })?;

    let source_hb = Arc::new(AtomicU64::new(now_ns()));
    let scorer_hb = Arc::new(AtomicU64::new(now_ns()));
    let listen_stop = CancellationToken::new();
    if !cfg.metrics.listen.is_empty() {
        let health = crate::ops::http::Health {
            metrics: metrics.clone(),
            board: board.clone(),
            heartbeats: vec![source_hb.clone(), scorer_hb.clone()],
            stale_after: Duration::from_secs(10),
        };
        let addr = crate::ops::http::serve(&cfg.metrics.listen, health, listen_stop.clone())
            .await
            .map_err(|source| DaemonError::Listen {
                addr: cfg.metrics.listen.clone(),
                source,
            })?;
        tracing::info!(%addr, "metrics at http://{addr}/metrics");
    }

    let stage = FeatureStage::new(
        slots_of(&models),
        Binder::from_config(&cfg),
        StageSettings::from_config(&cfg),
        metrics.clone(),
    );
    // The source sends windows in batches of up to WINDOWS_PER_SEND: the
    // channel's capacity in messages keeps queue_capacity a bound in windows.
    let (win_tx, win_rx) = mpsc::channel::<InferenceMsg>(
        cfg.pipeline
            .queue_capacity
            .div_ceil(crate::sources::mqtt::WINDOWS_PER_SEND)
            .max(1),
    );
    let (out_tx, out_rx) = mpsc::channel::<Output>(cfg.influx.queue_capacity);
    let (reload_tx, reload_rx) = mpsc::channel::<SourceReload>(1);
    let (ready_tx, ready_rx) = oneshot::channel();

    let mut scorer = Scorer::new(models, metrics.clone());
    match &state_dir {
        Some(dir) => scorer = scorer.with_alert_state(dir),
        None => tracing::warn!("no state directory: open alerts are not kept across restarts"),
    }
    let scorer_thread = spawn_scorer(
        scorer,
        win_rx,
        out_tx,
        cfg.runtime.max_batch,
        Duration::from_millis(cfg.runtime.max_wait_ms),
        scorer_hb.clone(),
        board.clone(),
        tokio::runtime::Handle::current(),
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
    let sink_stop = CancellationToken::new();
    let sink = tokio::spawn(crate::sinks::influx::run_sink(
        writer,
        SinkSettings::from_config(&cfg.influx),
        out_rx,
        metrics.clone(),
        sink_stop.clone(),
        spool,
        barriers,
    ));

    let source_stop = CancellationToken::new();
    let source = tokio::spawn(crate::sources::mqtt::run_source(
        SourceParts {
            options,
            qos: cfg.mqtt.qos,
            max_payload: cfg.mqtt.max_packet_size,
            reconnect_min: Duration::from_millis(cfg.mqtt.reconnect_min_ms),
            reconnect_max: Duration::from_millis(cfg.mqtt.reconnect_max_ms),
            decoder,
            stage,
            journal,
        },
        win_tx.clone(),
        reload_rx,
        metrics.clone(),
        source_hb.clone(),
        ready_tx,
        source_stop.clone(),
    ));

    // READY once the models are loaded and the broker has answered.
    let ready_metrics = metrics.clone();
    tokio::spawn(async move {
        if ready_rx.await.is_ok() {
            let ms = started.elapsed().as_millis();
            tracing::info!(startup_ms = ms as u64, "ready");
            let _ = crate::ops::notify::ready();
            let _ = crate::ops::notify::status(&format!(
                "scoring; {} asset(s)",
                ready_metrics.assets.load(Relaxed)
            ));
        }
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
                        let now = now_ns();
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
    let mut current = cfg;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(()) = reload.recv() => {
                match reload_config(&config_path, &current).await {
                    Ok((new_cfg, models)) => {
                        let old: Vec<String> = current.models.iter().map(|m| m.name.clone()).collect();
                        let info = model_info(&models);
                        let reload_msg = SourceReload {
                            slots: slots_of(&models),
                            binder: Binder::from_config(&new_cfg),
                            settings: StageSettings::from_config(&new_cfg),
                            decoder: match Decoder::from_config(&new_cfg.topics) {
                                Ok(d) => d,
                                Err(e) => {
                                    tracing::error!(error = %e, "reload refused");
                                    metrics.reload_failures.fetch_add(1, Relaxed);
                                    continue;
                                }
                            },
                        };
                        // Models first (ordered with queued windows), then the source.
                        if win_tx.send(InferenceMsg::Swap(models)).await.is_err() || reload_tx.send(reload_msg).await.is_err() {
                            break;
                        }
                        metrics.set_models(info.clone());
                        metrics.reloads.fetch_add(1, Relaxed);
                        tracing::info!(old = ?old, new = ?info, "reloaded config and models");
                        if new_cfg.influx.url != current.influx.url || new_cfg.mqtt.host != current.mqtt.host || new_cfg.mqtt.port != current.mqtt.port {
                            tracing::warn!("connection settings changed: they take effect at the next restart");
                        }
                        current = new_cfg;
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
    drop(reload_tx);
    source_stop.cancel();
    let deadline = current.shutdown_timeout();
    let drain = async {
        let _ = source.await;
        let _ = tokio::task::spawn_blocking(move || scorer_thread.join()).await;
        let _ = sink.await;
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
    listen_stop.cancel();
    tracing::info!(
        windows_scored = metrics.windows_scored.load(Relaxed),
        points_written = metrics.points_written.load(Relaxed),
        points_dropped = metrics.points_dropped.load(Relaxed),
        "stopped"
    );
    Ok(())
}

async fn reload_config(
    path: &Path,
    current: &Config,
) -> Result<(Config, Vec<NamedModel>), DaemonError> {
    let new_cfg = Config::load(path)?;
    if new_cfg.runtime.library_path != current.runtime.library_path {
        tracing::warn!("runtime.library_path changed: it takes effect at the next restart");
    }
    let c = new_cfg.clone();
    let models = tokio::task::spawn_blocking(move || load_models(&c))
        .await
        .map_err(|e| DaemonError::Thread(std::io::Error::other(e.to_string())))??;
    Ok((new_cfg, models))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_mismatch_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("m.onnx");
        std::fs::write(&f, b"abc").unwrap();
        // sha256("abc")
        let good = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert!(check_pin(&f, Some(good)).is_ok());
        assert!(check_pin(&f, None).is_ok());
        let err = check_pin(&f, Some(&"0".repeat(64))).unwrap_err();
        assert!(err.contains("refusing") && err.contains(good), "{err}");
    }
}
