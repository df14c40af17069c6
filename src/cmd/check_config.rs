//! `anomalyd check-config`: validates the configuration, reads the
//! credentials (saying from where) and loads every model without
//! connecting anywhere.

use std::path::Path;

use crate::cmd::run::{DaemonError, load_models};
use crate::config::Config;

/// `check-config`: validates the config and loads every model without
/// connecting anywhere. Returns a summary for the operator.
///
/// # Errors
/// As [`load_models`], plus configuration errors.
pub fn check_config(path: &Path) -> Result<String, DaemonError> {
    let settings = Config::load(path)?;
    let cfg = &settings.config;
    crate::model::init_runtime(cfg.runtime.library_path.as_deref())?;
    let models = load_models(cfg)?;
    let _ = cfg.mqtt_password()?;
    let _ = cfg.influx_auth()?;
    let mut s = format!("config {} is valid\n", path.display());
    for (key, file, source) in cfg.credential_files() {
        s.push_str(&format!("  {key}: read {} ({source})\n", file.display()));
    }
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
    let brokers: Vec<String> = cfg
        .mqtt
        .brokers()
        .iter()
        .map(|(h, p)| format!("{h}:{p}"))
        .collect();
    s.push_str(&format!("  broker {}\n", brokers.join(", ")));
    if let Some(p) = &cfg.partitions {
        let owned: Vec<String> = p.owned_set().iter().map(u32::to_string).collect();
        s.push_str(&format!(
            "  partitions {} of {} (sessions {}-p<i>, handover records on {}/<i>)\n",
            if owned.is_empty() {
                "none".to_string()
            } else {
                owned.join(", ")
            },
            p.count,
            p.session,
            p.handover_topic
        ));
    }
    crate::cmd::run::alerts::check(cfg)?;
    for o in &cfg.alerts.outputs {
        let to = o.url.as_deref().unwrap_or(o.topic.as_str());
        s.push_str(&format!(
            "  alert output {:?} ({:?}) -> {to}\n",
            o.name, o.kind
        ));
    }
    Ok(s)
}
