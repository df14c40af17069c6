//! `anomalyd tap --config FILE [--seconds 30]`: the onboarding command for
//! a new plant (docs/alerts.md §7). Subscribes with the configured topic
//! filters on a connection of its own (clean session, QoS 0, so it takes
//! nothing from the daemon's session), decodes for a while, and reports
//! per asset the channels seen, their rates and value ranges, the bound
//! model, and what that model is missing or does not know.

mod report;

use std::path::Path;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Packet, QoS};

use crate::cmd::run::{DaemonError, load_models};
use crate::config::{Config, MqttConfig};
use crate::core::reading::Message;
use crate::pipeline::Binder;
use crate::sources::mqtt::Decoder;
pub use report::{ModelView, TapLog, render};

/// Listens for `seconds` and returns the report.
///
/// # Errors
/// The config, a model or the broker settings are unusable, or the broker
/// cannot be reached within 10 s.
pub async fn tap(path: &Path, seconds: f64) -> Result<String, DaemonError> {
    let settings = Config::load(path)?;
    let cfg = &settings.config;
    crate::model::init_runtime(cfg.runtime.library_path.as_deref())?;
    let loaded = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || load_models(&cfg))
            .await
            .map_err(|e| DaemonError::Thread(std::io::Error::other(e.to_string())))??
    };
    let models: Vec<ModelView> = loaded
        .iter()
        .map(|m| ModelView {
            name: m.name.to_string(),
            channels: m.model.metadata.channels.clone(),
            sample_period_ms: m.model.metadata.sample_period_ms,
        })
        .collect();
    let binder = Binder::from_config(cfg);
    let decoder = Decoder::new(settings.topics.clone());
    let mc = MqttConfig {
        client_id: format!("{}-tap-{}", cfg.mqtt.client_id, std::process::id()),
        clean_session: true,
        ..cfg.mqtt.clone()
    };
    let password = cfg.mqtt_password()?;
    let options = crate::sources::mqtt::mqtt_options(&mc, password.as_ref())?;
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let mut log = TapLog::default();
    let mut msg = Message::default();
    let mut subscribed = false;
    let mut listening = None;
    let connect_deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let until = listening.map_or(connect_deadline, |t: tokio::time::Instant| {
            t + Duration::from_secs_f64(seconds)
        });
        let ev = match tokio::time::timeout_at(until, eventloop.poll()).await {
            Err(_) if listening.is_some() => break,
            Err(_) => {
                return Err(DaemonError::Broker {
                    addr: format!("{}:{}", cfg.mqtt.host, cfg.mqtt.port),
                    message: "no answer within 10 s".into(),
                });
            }
            Ok(Err(e)) if listening.is_none() => {
                return Err(DaemonError::Broker {
                    addr: format!("{}:{}", cfg.mqtt.host, cfg.mqtt.port),
                    message: e.to_string(),
                });
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "MQTT connection lost while listening");
                break;
            }
            Ok(Ok(ev)) => ev,
        };
        match ev {
            Event::Incoming(Packet::ConnAck(_)) if !subscribed => {
                for s in decoder.subscriptions() {
                    let _ = client.try_subscribe(s, QoS::AtMostOnce);
                }
                subscribed = true;
            }
            Event::Incoming(Packet::SubAck(_)) if listening.is_none() => {
                listening = Some(tokio::time::Instant::now());
                eprintln!("listening for {seconds} s ...");
            }
            Event::Incoming(Packet::Publish(p)) => {
                match decoder.decode_into(&p.topic, &p.payload, &mut msg) {
                    Ok(()) => log.add(&msg),
                    Err(e) => log.skip(e.reason().as_str(), format!("{:?}: {e}", p.topic)),
                }
            }
            _ => {}
        }
    }
    let _ = client.try_disconnect();
    Ok(render(&log, seconds, |asset| {
        let name = binder.model_for(asset)?;
        models.iter().find(|m| m.name == name)
    }))
}
