//! rumqttc options from the `[mqtt]` config: identity, session, packet
//! limits, credentials and TLS; and the QoS mapping.

use std::time::Duration;

use rumqttc::{MqttOptions, QoS, TlsConfiguration, Transport};

use crate::config::{MqttConfig, Qos, Secret};

/// Why the MQTT client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("cannot read {what} {path}: {source}")]
    File {
        what: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Smallest transport limit for incoming packets, whatever the configured
/// payload limit.
pub const MIN_TRANSPORT_LIMIT: usize = 64 * 1024 * 1024;

/// The packet size rumqttc accepts. It treats a larger packet as a
/// connection error, never delivers it and so cannot acknowledge it; a
/// persistent session would then get it first after every reconnect. The
/// transport limit therefore sits well above the configured payload limit,
/// so the daemon reads a poison message and drops it on purpose
/// (docs/durability.md §3).
pub fn transport_limit(max_payload: usize) -> usize {
    max_payload.saturating_mul(4).max(MIN_TRANSPORT_LIMIT)
}

/// Builds rumqttc options from the config, for its first broker node.
///
/// # Errors
/// TLS files that cannot be read.
pub fn mqtt_options(cfg: &MqttConfig, password: Option<&Secret>) -> Result<MqttOptions, MqttError> {
    let (host, port) = cfg.brokers().swap_remove(0);
    options_for(cfg, password, &cfg.client_id, host, port)
}

/// Options for every broker node of the config (`mqtt.hosts`, in order),
/// under `client_id`: the source moves to the next one when a connection
/// fails (docs/scale-out.md §3).
///
/// # Errors
/// TLS files that cannot be read.
pub fn broker_options(
    cfg: &MqttConfig,
    password: Option<&Secret>,
    client_id: &str,
) -> Result<Vec<MqttOptions>, MqttError> {
    cfg.brokers()
        .into_iter()
        .map(|(host, port)| options_for(cfg, password, client_id, host, port))
        .collect()
}

fn options_for(
    cfg: &MqttConfig,
    password: Option<&Secret>,
    client_id: &str,
    host: String,
    port: u16,
) -> Result<MqttOptions, MqttError> {
    let mut o = MqttOptions::new(client_id, host, port);
    o.set_keep_alive(Duration::from_secs(cfg.keep_alive_s));
    o.set_clean_session(cfg.clean_session);
    o.set_max_packet_size(transport_limit(cfg.max_packet_size), cfg.max_packet_size);
    o.set_request_channel_capacity(256);
    o.set_inflight(1000);
    if let Some(user) = &cfg.username {
        o.set_credentials(
            user.clone(),
            password.map(|p| p.expose().to_string()).unwrap_or_default(),
        );
    }
    if cfg.tls.enabled {
        let read = |what: &'static str, path: &std::path::Path| {
            std::fs::read(path).map_err(|source| MqttError::File {
                what,
                path: path.to_path_buf(),
                source,
            })
        };
        let transport = match &cfg.tls.ca_file {
            Some(ca) => {
                let client_auth = match (&cfg.tls.client_cert, &cfg.tls.client_key) {
                    (Some(c), Some(k)) => Some((
                        read("mqtt.tls.client_cert", c)?,
                        read("mqtt.tls.client_key", k)?,
                    )),
                    _ => None,
                };
                Transport::tls_with_config(TlsConfiguration::Simple {
                    ca: read("mqtt.tls.ca_file", ca)?,
                    alpn: None,
                    client_auth,
                })
            }
            // No CA file: the system's roots, verification still on.
            None => Transport::tls_with_default_config(),
        };
        install_tls_provider();
        o.set_transport(transport);
    }
    Ok(o)
}

/// The one mapping from the validated QoS to rumqttc's.
pub fn qos(q: Qos) -> QoS {
    match q {
        Qos::AtMostOnce => QoS::AtMostOnce,
        Qos::AtLeastOnce => QoS::AtLeastOnce,
        Qos::ExactlyOnce => QoS::ExactlyOnce,
    }
}

/// Names the rustls crypto provider for the process (aws-lc-rs, rumqttc's
/// own). rustls cannot choose when more than one is compiled in, and then
/// fails the first TLS handshake; installing twice is harmless.
pub fn install_tls_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_follow_config() {
        let cfg: MqttConfig = serde_json::from_value(serde_json::json!({
            "host": "127.0.0.1", "port": 1999, "client_id": "gw1", "username": "u",
            "clean_session": false, "keep_alive_s": 15, "max_packet_size": 4096
        }))
        .unwrap();
        let o = mqtt_options(&cfg, Some(&Secret::new("p"))).unwrap();
        assert_eq!(o.broker_address(), ("127.0.0.1".to_string(), 1999));
        assert_eq!(o.client_id(), "gw1");
        assert!(!o.clean_session());
        assert_eq!(o.keep_alive(), Duration::from_secs(15));
        assert_eq!(o.credentials().map(|l| l.username), Some("u".to_string()));
        // The daemon, not the client library, decides on oversize messages.
        assert_eq!(o.max_packet_size(), transport_limit(4096));
        assert!(transport_limit(4096) >= 1 << 20);
    }

    #[test]
    fn one_options_per_broker_node() {
        let cfg: MqttConfig = serde_json::from_value(serde_json::json!({
            "hosts": ["10.0.0.1:1884", "10.0.0.2", "[::1]:4222"], "port": 1999
        }))
        .unwrap();
        let all = broker_options(&cfg, None, "fleet-p3").unwrap();
        let addrs: Vec<_> = all.iter().map(MqttOptions::broker_address).collect();
        assert_eq!(
            addrs,
            [
                ("10.0.0.1".to_string(), 1884),
                ("10.0.0.2".to_string(), 1999),
                ("::1".to_string(), 4222)
            ]
        );
        assert!(all.iter().all(|o| o.client_id() == "fleet-p3"));
        assert_eq!(mqtt_options(&cfg, None).unwrap().broker_address().1, 1884);
    }

    #[test]
    fn missing_tls_file_is_a_clear_error() {
        let cfg: MqttConfig = serde_json::from_value(serde_json::json!({
            "tls": {"enabled": true, "ca_file": "/nonexistent/ca.pem"}
        }))
        .unwrap();
        let err = mqtt_options(&cfg, None).unwrap_err().to_string();
        assert!(
            err.contains("mqtt.tls.ca_file") && err.contains("/nonexistent/ca.pem"),
            "{err}"
        );
    }
}
