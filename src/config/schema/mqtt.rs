//! `[mqtt]` and `[[topics]]`: the broker, the session and how topics are
//! read.

use super::*;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default = "default_mqtt_port")]
    pub port: u16,
    /// Several broker nodes (`host:port`), tried in order, the next one
    /// when a connection fails; replaces `host`/`port` when set.
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default = "default_client_id")]
    pub client_id: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// File holding the password (systemd `LoadCredential`), trailing newline stripped.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default = "default_keep_alive")]
    pub keep_alive_s: u64,
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// `false` keeps the broker-side session (with QoS 1, nothing published
    /// while the daemon is down is lost).
    #[serde(default)]
    pub clean_session: bool,
    #[serde(default = "default_max_packet")]
    pub max_packet_size: usize,
    #[serde(default = "default_reconnect_min")]
    pub reconnect_min_ms: u64,
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_ms: u64,
    #[serde(default)]
    pub tls: TlsConfig,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(default)]
    pub enabled: bool,
    /// CA bundle (PEM) that signs the broker's certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
}

/// How payloads on a topic filter are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadKind {
    /// A bare number (`21.5`); the topic names the channel.
    Number,
    /// A JSON object with a value field and an optional timestamp field; the
    /// topic names the channel.
    Json,
    /// A JSON object holding several channels (field name = channel) and an
    /// optional timestamp field.
    JsonObject,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// Topic with named segments: `{asset}` (required) and `{channel}`
    /// (required unless `payload = "json_object"`); `+`-like single segments.
    pub filter: String,
    pub payload: PayloadKind,
    #[serde(default = "default_value_field")]
    pub value_field: String,
    #[serde(default = "default_ts_field")]
    pub timestamp_field: String,
}

fn default_host() -> String {
    "127.0.0.1".into()
}

fn default_mqtt_port() -> u16 {
    1883
}

/// Unique per gateway and stable across restarts, so two daemons on one
/// broker never take each other's persistent session.
fn default_client_id() -> String {
    format!("anomalyd-{}", host_name())
}

fn default_keep_alive() -> u64 {
    30
}

fn default_qos() -> u8 {
    1
}

fn default_max_packet() -> usize {
    256 * 1024
}

fn default_reconnect_min() -> u64 {
    200
}

fn default_reconnect_max() -> u64 {
    30_000
}

fn default_value_field() -> String {
    "value".into()
}

fn default_ts_field() -> String {
    "ts".into()
}
