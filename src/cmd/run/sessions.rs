//! The MQTT sessions the daemon runs (docs/scale-out.md §2): one, or one
//! per owned partition of `[partitions]`, each a source on its own thread with its own
//! feature stage, intake journal (`<state>/journal/p<i>`) and persistent
//! session `<session>-p<i>`. A reload starts the partitions newly owned
//! (they take over from their handover record) and stops those given up
//! (they leave one).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::DaemonError;
use crate::config::{Secret, Settings};
use crate::ops::metrics::Metrics;
use crate::pipeline::{
    Binder, FeatureStage, ModelSlot, Output, QualityRules, StageSettings, WindowSender,
};
use crate::sources::mqtt::decode::Decoder;
use crate::sources::mqtt::{JournalParts, PartitionParts, SourceParts, SourceReload};
use crate::state::journal::{Journal, JournalSettings};

/// `None`: the daemon's only session; `Some(i)`: partition `i`'s.
pub(super) type SessionKey = Option<u32>;

struct Running {
    reload: mpsc::Sender<SourceReload>,
    stop: CancellationToken,
    /// Resolves when the session's thread has finished.
    task: oneshot::Receiver<()>,
    given_up: Arc<AtomicBool>,
}

/// What every session shares.
pub(super) struct Shared {
    pub metrics: Arc<Metrics>,
    pub heartbeat: Arc<AtomicU64>,
    pub windows: WindowSender,
    pub state_dir: Option<PathBuf>,
    /// `[record]`'s queue, if it is on.
    pub record: Option<mpsc::Sender<Output>>,
    /// Data-quality alarms open before the restart (for the first stages).
    pub quality_restore: Vec<(String, String, i64)>,
    /// Journal rotation and retention for the models in service; `dir` is
    /// replaced per session.
    pub journal: JournalSettings,
}

/// The running sessions.
pub(super) struct Sessions {
    shared: Shared,
    running: BTreeMap<SessionKey, Running>,
}

impl Sessions {
    pub fn new(shared: Shared) -> Self {
        Self {
            shared,
            running: BTreeMap::new(),
        }
    }

    /// Starts every session `settings` asks for; `ready` fires once each
    /// has its subscriptions confirmed.
    ///
    /// # Errors
    /// A session's journal or TLS files cannot be opened.
    pub fn start_all(
        &mut self,
        settings: &Settings,
        slots: &[ModelSlot],
        ready: oneshot::Sender<()>,
    ) -> Result<(), DaemonError> {
        let mut waits = Vec::new();
        for key in settings.sessions() {
            let (tx, rx) = oneshot::channel();
            self.start(settings, key, slots, tx)?;
            waits.push(rx);
        }
        tokio::spawn(async move {
            for w in waits {
                if w.await.is_err() {
                    return;
                }
            }
            let _ = ready.send(());
        });
        Ok(())
    }

    fn start(
        &mut self,
        settings: &Settings,
        key: SessionKey,
        slots: &[ModelSlot],
        connected: oneshot::Sender<()>,
    ) -> Result<(), DaemonError> {
        let cfg = &settings.config;
        let sh = &self.shared;
        let password: Option<Secret> = cfg.mqtt_password()?;
        let parts_cfg = cfg.partitions.as_ref();
        let client_id = match (key, parts_cfg) {
            (Some(i), Some(p)) => p.client_id(i),
            _ => cfg.mqtt.client_id.clone(),
        };
        let mut brokers =
            crate::sources::mqtt::broker_options(&cfg.mqtt, password.as_ref(), &client_id)?;
        let journal = match (
            &sh.state_dir,
            cfg.journal.enabled && settings.qos.acknowledged(),
        ) {
            (Some(dir), true) => {
                let mut js = sh.journal.clone();
                js.dir = match key {
                    Some(i) => dir.join("journal").join(format!("p{i}")),
                    None => dir.join("journal"),
                };
                let retention_s = js.retention_ns / 1_000_000_000;
                let directory = js.dir.display().to_string();
                let (journal, replay) = Journal::open(js)?;
                tracing::info!(
                    %directory,
                    segments = replay.len(),
                    retention_s,
                    "intake journal opened: messages are acknowledged once journaled"
                );
                Some(JournalParts {
                    journal,
                    replay,
                    confirm: Arc::new(watch::channel(None).0),
                    sync_interval: Duration::from_millis(cfg.journal.sync_interval_ms),
                    sync_max_pending: cfg.journal.sync_max_pending,
                })
            }
            _ => None,
        };
        // The source acknowledges QoS 1/2 messages itself: after their
        // journal sync, or without a journal at its next rest, all of a
        // read's in one write (sources/mqtt/acks.rs).
        if settings.qos.acknowledged() {
            for b in &mut brokers {
                b.set_manual_acks(true);
            }
        }
        let mut stage = FeatureStage::new(
            slots.to_vec(),
            Binder::from_config(cfg),
            StageSettings::from_config(cfg),
            sh.metrics.clone(),
        );
        stage.set_quality_rules(QualityRules::from_config(cfg));
        if let Some(tx) = &sh.record {
            stage.record_to(tx.clone());
        }
        stage.restore_quality(sh.quality_restore.clone());
        let given_up = Arc::new(AtomicBool::new(false));
        let partition = match (key, parts_cfg) {
            (Some(i), Some(p)) => Some(PartitionParts {
                index: i,
                handover_topic: p.handover_topic(i),
                owner: cfg.mqtt.client_id.clone(),
                span_ns: sh.journal.retention_ns / 2,
                given_up: given_up.clone(),
            }),
            _ => None,
        };
        let (reload_tx, reload_rx) = mpsc::channel(1);
        let stop = CancellationToken::new();
        let parts = SourceParts {
            brokers,
            qos: settings.qos,
            max_payload: cfg.mqtt.max_packet_size,
            reconnect_min: Duration::from_millis(cfg.mqtt.reconnect_min_ms),
            reconnect_max: Duration::from_millis(cfg.mqtt.reconnect_max_ms),
            max_wait: Duration::from_millis(cfg.runtime.max_wait_ms),
            decoder: Decoder::new(settings.topics_for(key)),
            stage,
            journal,
            dead_letters: sh
                .state_dir
                .as_deref()
                .filter(|_| cfg.journal.dead_letter_mb > 0)
                .map(|d| {
                    crate::state::DeadLetters::new(
                        d,
                        cfg.journal.dead_letter_mb.saturating_mul(1024 * 1024),
                    )
                }),
            partition,
        };
        // A partition's log lines name it.
        let span = match key {
            Some(i) => tracing::info_span!("partition", index = i),
            None => tracing::Span::none(),
        };
        let source = crate::sources::mqtt::run_source(
            parts,
            sh.windows.clone(),
            reload_rx,
            sh.metrics.clone(),
            sh.heartbeat.clone(),
            connected,
            stop.clone(),
        )
        .instrument(span);
        // Each session reads its broker on a thread of its own, with its
        // own single-threaded runtime: at low rates its reads are paced by
        // sleeping that thread (docs/low-rate.md §4), which must hold up
        // no other session, the sink or the HTTP endpoint.
        // Its blocking threads run the journal's syncs (`anomalyd-sync`).
        let runtime = tokio::runtime::Builder::new_current_thread()
            .thread_name("anomalyd-sync")
            .enable_all()
            .build()
            .map_err(DaemonError::Thread)?;
        let (done, task) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("anomalyd-mqtt".into())
            .spawn(move || {
                runtime.block_on(source);
                drop(done);
            })
            .map_err(DaemonError::Thread)?;
        if let Some(i) = key {
            tracing::info!(partition = i, session = %client_id, "partition session started");
        }
        self.running.insert(
            key,
            Running {
                reload: reload_tx,
                stop,
                task,
                given_up,
            },
        );
        self.publish_counts();
        Ok(())
    }

    /// Hands a reload to every running session (each gets its own topic
    /// filters), then starts and stops sessions to match the new
    /// ownership. A partition given up leaves its handover record before
    /// this returns.
    pub async fn reload(
        &mut self,
        settings: &Settings,
        slots: &[ModelSlot],
        journal: JournalSettings,
    ) {
        self.shared.journal = journal;
        let cfg = &settings.config;
        let wanted = settings.sessions();
        let leaving: Vec<SessionKey> = self
            .running
            .keys()
            .filter(|k| !wanted.contains(k))
            .copied()
            .collect();
        // Given up: all stop at once, each leaving its handover record.
        let mut stopping = Vec::new();
        for key in leaving {
            if let Some(r) = self.running.remove(&key) {
                r.given_up.store(true, Relaxed);
                r.stop.cancel();
                stopping.push((key, r.task));
            }
        }
        for (key, task) in stopping {
            let _ = task.await;
            if let Some(i) = key {
                tracing::info!(partition = i, "partition given up");
            }
        }
        for (key, r) in &self.running {
            let msg = SourceReload {
                slots: slots.to_vec(),
                binder: Binder::from_config(cfg),
                settings: StageSettings::from_config(cfg),
                decoder: Decoder::new(settings.topics_for(*key)),
                quality: QualityRules::from_config(cfg),
            };
            if r.reload.send(msg).await.is_err() {
                tracing::warn!("a session ended before its reload");
            }
        }
        self.shared.quality_restore.clear();
        for key in wanted {
            if self.running.contains_key(&key) {
                continue;
            }
            let (tx, _) = oneshot::channel();
            if let Err(e) = self.start(settings, key, slots, tx) {
                tracing::error!(partition = ?key, error = %e, "cannot start the session");
            }
        }
        self.publish_counts();
    }

    fn publish_counts(&self) {
        let m = &self.shared.metrics;
        m.set_sessions(self.running.len() as u64);
        let partitions = self.running.keys().filter(|k| k.is_some()).count();
        m.partitions_owned.store(partitions as u64, Relaxed);
    }

    /// No session runs (a standby daemon that owns no partition).
    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Stops every session (each drains its windows and, for a partition,
    /// leaves its handover record) and waits for them.
    pub async fn stop_all(mut self) {
        for r in self.running.values() {
            r.stop.cancel();
        }
        for (_, r) in std::mem::take(&mut self.running) {
            let _ = r.task.await;
        }
    }
}
