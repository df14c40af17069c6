//! Wires the alert outputs (docs/alerts.md §4-§5): opens the outbox in the
//! state directory, builds one sender per `[[alerts.outputs]]` entry and
//! runs its delivery loop as a task; at shutdown gives them a moment to
//! deliver what is queued (the rest waits in the outbox).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::DaemonError;
use super::scoring::AlertFanout;
use crate::config::{AlertOutputConfig, AlertOutputKind, Config, MqttConfig, Secret};
use crate::ops::metrics::Metrics;
use crate::sinks::alerts::mqtt::MqttAlertSender;
use crate::sinks::alerts::webhook::WebhookSender;
use crate::sinks::alerts::{ActiveAlarms, AlertFilter, OutputLoop};
use crate::state::Outbox;

/// The running alert outputs.
pub(super) struct AlertOutputs {
    tasks: Vec<JoinHandle<()>>,
    stop: CancellationToken,
    outbox: Arc<Outbox>,
    names: Vec<String>,
}

/// Opens the outbox and starts every configured output; `None` when no
/// output is configured. `open_anomalies` are the assets whose anomaly
/// alert is open (restored), so messages list it as active.
///
/// # Errors
/// The outbox directory is unusable, or an output cannot be built (bad
/// URL, unreadable token, CA or TLS file).
pub(super) fn start(
    cfg: &Config,
    state_dir: Option<&Path>,
    metrics: &Arc<Metrics>,
    open_anomalies: impl Iterator<Item = (String, i64)>,
) -> Result<Option<(AlertFanout, AlertOutputs)>, DaemonError> {
    let outputs = &cfg.alerts.outputs;
    if outputs.is_empty() {
        return Ok(None);
    }
    let names: Vec<String> = outputs.iter().map(|o| o.name.clone()).collect();
    let dir = state_dir.map(|d| d.join("outbox"));
    if dir.is_none() {
        tracing::warn!(
            "no state directory: undelivered alerts are kept in memory only and lost at a restart"
        );
    }
    let (outbox, report) = Outbox::open(dir.as_deref(), &names, cfg.alerts.outbox_max_alerts)?;
    tracing::info!(
        outputs = ?names,
        pending = report.pending,
        unreadable = report.unreadable,
        "alert outbox opened"
    );
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    let password = cfg.mqtt_password()?;
    for o in outputs {
        let run = OutputLoop {
            name: o.name.clone(),
            filter: AlertFilter::from_config(o),
            retry_min: Duration::from_millis(o.retry_min_ms),
            retry_max: Duration::from_millis(o.retry_max_ms),
        };
        let counters = metrics.alert_output(&o.name);
        let (ob, st) = (outbox.clone(), stop.clone());
        let task = match o.kind {
            AlertOutputKind::Mqtt => {
                let sender = mqtt_sender(cfg, o, password.as_ref())?;
                tokio::spawn(run.run(sender, ob, counters, st))
            }
            AlertOutputKind::Webhook => tokio::spawn(run.run(webhook_sender(o)?, ob, counters, st)),
        };
        tasks.push(task);
    }
    // The alarms active when the daemon stopped: messages keep listing
    // them, and the data-quality ones are restored in the feature stage.
    let active_path = dir.as_ref().map(|d| d.join("active.json"));
    let mut active = match active_path.as_ref().map(std::fs::read_to_string) {
        Some(Ok(text)) => ActiveAlarms::from_json(&text).unwrap_or_else(|e| {
            tracing::error!(error = %e, "unreadable active alarms; starting without them");
            ActiveAlarms::default()
        }),
        _ => ActiveAlarms::default(),
    };
    for (a, start) in open_anomalies {
        active.restore_anomaly(&a, start);
    }
    Ok(Some((
        AlertFanout {
            outbox: outbox.clone(),
            active,
            metrics: metrics.clone(),
            active_path,
        },
        AlertOutputs {
            tasks,
            stop,
            outbox,
            names,
        },
    )))
}

/// Builds every configured output without connecting (`check-config`).
///
/// # Errors
/// As [`start`], for the outputs.
pub fn check(cfg: &Config) -> Result<(), DaemonError> {
    let password = cfg.mqtt_password()?;
    for o in &cfg.alerts.outputs {
        match o.kind {
            AlertOutputKind::Mqtt => {
                mqtt_sender(cfg, o, password.as_ref())?;
            }
            AlertOutputKind::Webhook => {
                webhook_sender(o)?;
            }
        }
    }
    Ok(())
}

/// An MQTT output: the input broker's settings (credentials, TLS) unless
/// the output names another, on a connection of its own.
fn mqtt_sender(
    cfg: &Config,
    o: &AlertOutputConfig,
    password: Option<&Secret>,
) -> Result<MqttAlertSender, DaemonError> {
    let mc = MqttConfig {
        host: o.host.clone().unwrap_or_else(|| cfg.mqtt.host.clone()),
        port: o.port.unwrap_or(cfg.mqtt.port),
        client_id: o
            .client_id
            .clone()
            .unwrap_or_else(|| format!("{}-alerts-{}", cfg.mqtt.client_id, o.name)),
        clean_session: true,
        ..cfg.mqtt.clone()
    };
    let options = crate::sources::mqtt::mqtt_options(&mc, password)?;
    let timeout = Duration::from_millis(o.timeout_ms);
    Ok(MqttAlertSender::new(
        options,
        o.topic.clone(),
        o.retain,
        timeout,
    ))
}

fn webhook_sender(o: &AlertOutputConfig) -> Result<WebhookSender, DaemonError> {
    Ok(WebhookSender::new(
        &o.name,
        o.url.as_deref().unwrap_or_default(),
        o.token_file.as_deref(),
        o.ca_file.as_deref(),
        Duration::from_millis(o.timeout_ms),
    )?)
}

impl AlertOutputs {
    /// Lets the outputs deliver what is queued for up to `grace`, then
    /// stops them; what is left is delivered after the next start.
    pub(super) async fn finish(self, grace: Duration) {
        let start = Instant::now();
        while start.elapsed() < grace && self.names.iter().any(|n| self.outbox.pending(n) > 0) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
