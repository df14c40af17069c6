//! A typed builder for the daemon configs the tests write: one base config
//! (three topic layouts, the shipped model, fast reconnects and flushes)
//! and a method per variation a test needs, serialised with `toml` so
//! paths and strings are quoted correctly. The daemon's own schema stays
//! the judge: this only writes the file it parses.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{client_id, shipped_model};

/// A daemon config file for tests; [`to_toml`](Self::to_toml) writes it.
///
/// The MQTT client id is drawn once, in [`new`](Self::new), so every text
/// of one config names the same persistent session, and a daemon of
/// another test that outlived its broker never shares it.
#[derive(Debug, Clone, Serialize)]
pub struct DaemonConfig {
    default_model: String,
    mqtt: Mqtt,
    #[serde(skip_serializing_if = "Option::is_none")]
    partitions: Option<Partitions>,
    topics: Vec<Topic>,
    models: Vec<Model>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    assets: Vec<Asset>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pipeline: Option<Pipeline>,
    influx: Influx,
    #[serde(skip_serializing_if = "Option::is_none")]
    spool: Option<Spool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<State>,
    metrics: Metrics,
    log: Log,
    shutdown: Shutdown,
    #[serde(skip_serializing_if = "Option::is_none")]
    alerts: Option<Alerts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<Record>,
}

#[derive(Debug, Clone, Serialize, Default)]
struct Alerts {
    #[serde(skip_serializing_if = "Option::is_none")]
    stale_after_periods: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stuck_after_periods: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    outputs: Vec<AlertOutput>,
}

#[derive(Debug, Clone, Serialize)]
struct AlertOutput {
    name: String,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ca_file: Option<PathBuf>,
    retry_min_ms: u64,
    retry_max_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
struct Record {
    enabled: bool,
    measurement: String,
}

#[derive(Debug, Clone, Serialize)]
struct Mqtt {
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    hosts: Vec<String>,
    client_id: String,
    clean_session: bool,
    qos: u8,
    reconnect_min_ms: u64,
    reconnect_max_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<MqttTls>,
}

/// `[partitions]` (docs/scale-out.md §2).
#[derive(Debug, Clone, Serialize)]
struct Partitions {
    count: u32,
    owned: Vec<u32>,
    session: String,
    handover_topic: String,
}

#[derive(Debug, Clone, Serialize)]
struct MqttTls {
    enabled: bool,
    ca_file: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
struct Topic {
    filter: &'static str,
    payload: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_field: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp_field: Option<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
struct Model {
    name: String,
    path: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channels: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize)]
struct Asset {
    pattern: String,
    model: String,
    threshold: f64,
}

#[derive(Debug, Clone, Serialize)]
struct Pipeline {
    max_assets: usize,
    queue_capacity: usize,
}

#[derive(Debug, Clone, Serialize)]
struct Influx {
    url: String,
    org: &'static str,
    bucket: &'static str,
    batch_size: usize,
    flush_interval_ms: u64,
    retry_min_ms: u64,
    retry_max_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    queue_capacity: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    api: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    database: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gzip: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host_tag: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct Spool {
    directory: PathBuf,
    max_mb: u64,
}

#[derive(Debug, Clone, Serialize)]
struct State {
    directory: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
struct Metrics {
    listen: String,
}

#[derive(Debug, Clone, Serialize)]
struct Log {
    level: &'static str,
}

#[derive(Debug, Clone, Serialize)]
struct Shutdown {
    timeout_s: u64,
}

impl DaemonConfig {
    /// The base config: a broker on `127.0.0.1:mqtt_port` at QoS 1 with a
    /// persistent session; frames on `sensors/{asset}`, bare numbers on
    /// `plant/{asset}/{channel}`, JSON values on `site/{asset}/{channel}`;
    /// the shipped model as `pump`; the database at `influx_url`, flushed
    /// every 100 ms or 200 points; `/metrics` on `127.0.0.1:metrics_port`.
    pub fn new(mqtt_port: u16, influx_url: &str, metrics_port: u16) -> DaemonConfig {
        DaemonConfig {
            default_model: "pump".to_string(),
            mqtt: Mqtt {
                host: Some("127.0.0.1".to_string()),
                port: Some(mqtt_port),
                hosts: Vec::new(),
                client_id: client_id("anomalyd-test"),
                clean_session: false,
                qos: 1,
                reconnect_min_ms: 50,
                reconnect_max_ms: 500,
                username: None,
                password_file: None,
                tls: None,
            },
            partitions: None,
            topics: vec![
                Topic {
                    filter: "sensors/{asset}",
                    payload: "json_object",
                    value_field: None,
                    timestamp_field: Some("ts"),
                },
                Topic {
                    filter: "plant/{asset}/{channel}",
                    payload: "number",
                    value_field: None,
                    timestamp_field: None,
                },
                Topic {
                    filter: "site/{asset}/{channel}",
                    payload: "json",
                    value_field: Some("v"),
                    timestamp_field: Some("time"),
                },
            ],
            models: vec![Model {
                name: "pump".to_string(),
                path: shipped_model(),
                sha256: None,
                channels: None,
            }],
            assets: Vec::new(),
            pipeline: None,
            influx: Influx {
                url: influx_url.to_string(),
                org: "test",
                bucket: "anomalyd",
                batch_size: 200,
                flush_interval_ms: 100,
                retry_min_ms: 50,
                retry_max_ms: 500,
                queue_capacity: None,
                api: None,
                database: None,
                username: None,
                password_file: None,
                gzip: None,
                token_file: None,
                host_tag: None,
            },
            spool: None,
            state: None,
            metrics: Metrics {
                listen: format!("127.0.0.1:{metrics_port}"),
            },
            log: Log { level: "info" },
            shutdown: Shutdown { timeout_s: 10 },
            alerts: None,
            record: None,
        }
    }

    /// The config file's text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a test config serialises to TOML")
    }

    /// The `pump` model's file (default: the shipped model).
    pub fn model_path(mut self, path: &Path) -> Self {
        self.default_model_entry().path = path.to_path_buf();
        self
    }

    /// Pins the `pump` model's SHA-256 (hex).
    pub fn model_sha256(mut self, hex: &str) -> Self {
        self.default_model_entry().sha256 = Some(hex.to_string());
        self
    }

    /// The channels the `pump` model is bound to, by name.
    pub fn model_channels(mut self, channels: &[&str]) -> Self {
        self.default_model_entry().channels =
            Some(channels.iter().map(|c| c.to_string()).collect());
        self
    }

    /// Another model, `name`, loaded from `path`.
    pub fn extra_model(mut self, name: &str, path: &Path) -> Self {
        self.models.push(Model {
            name: name.to_string(),
            path: path.to_path_buf(),
            sha256: None,
            channels: None,
        });
        self
    }

    /// Assets matching `pattern` are scored by `model` against `threshold`.
    pub fn asset(mut self, pattern: &str, model: &str, threshold: f64) -> Self {
        self.assets.push(Asset {
            pattern: pattern.to_string(),
            model: model.to_string(),
            threshold,
        });
        self
    }

    /// `mqtt.qos` (the tests also write invalid levels on purpose).
    pub fn qos(mut self, level: u8) -> Self {
        self.mqtt.qos = level;
        self
    }

    /// `mqtt.hosts` (`127.0.0.1:PORT`, tried in order) in place of
    /// `mqtt.host` and `mqtt.port`.
    pub fn mqtt_hosts(mut self, hosts: &[String]) -> Self {
        self.mqtt.host = None;
        self.mqtt.port = None;
        self.mqtt.hosts = hosts.to_vec();
        self
    }

    /// `[partitions]`: this daemon owns `owned` of `count` partitions,
    /// each consumed through the persistent session `<session>-p<i>`,
    /// handed over on `anomalyd/handover`; the one topic is then
    /// `sensors/{partition}/{asset}` (json_object frames, `ts`).
    pub fn partitions(mut self, count: u32, owned: &[u32], session: &str) -> Self {
        self.partitions = Some(Partitions {
            count,
            owned: owned.to_vec(),
            session: session.to_string(),
            handover_topic: "anomalyd/handover".to_string(),
        });
        self.topics = vec![Topic {
            filter: "sensors/{partition}/{asset}",
            payload: "json_object",
            value_field: None,
            timestamp_field: Some("ts"),
        }];
        self
    }

    /// `influx.host_tag`: the `host` tag on every point.
    pub fn host_tag(mut self, tag: &str) -> Self {
        self.influx.host_tag = Some(tag.to_string());
        self
    }

    /// Logs in as `user` with the password in `password_file`.
    pub fn mqtt_credentials(mut self, user: &str, password_file: &Path) -> Self {
        self.mqtt.username = Some(user.to_string());
        self.mqtt.password_file = Some(password_file.to_path_buf());
        self
    }

    /// MQTT over TLS, verifying the broker against `ca_file`.
    pub fn mqtt_tls(mut self, ca_file: &Path) -> Self {
        self.mqtt.tls = Some(MqttTls {
            enabled: true,
            ca_file: ca_file.to_path_buf(),
        });
        self
    }

    /// `pipeline.max_assets` and `pipeline.queue_capacity`.
    pub fn pipeline(mut self, max_assets: usize, queue_capacity: usize) -> Self {
        self.pipeline = Some(Pipeline {
            max_assets,
            queue_capacity,
        });
        self
    }

    /// `influx.batch_size` (the tests also write invalid sizes on purpose).
    pub fn batch_size(mut self, points: usize) -> Self {
        self.influx.batch_size = points;
        self
    }

    /// `influx.flush_interval_ms`.
    pub fn flush_interval_ms(mut self, ms: u64) -> Self {
        self.influx.flush_interval_ms = ms;
        self
    }

    /// `influx.queue_capacity`.
    pub fn influx_queue_capacity(mut self, points: usize) -> Self {
        self.influx.queue_capacity = Some(points);
        self
    }

    /// Writes through the v1 API (`/write`) to `database`.
    pub fn influx_v1(mut self, database: &str) -> Self {
        self.influx.api = Some("v1");
        self.influx.database = Some(database.to_string());
        self
    }

    /// Logs in to the database as `user` with the password in `password_file`.
    pub fn influx_credentials(mut self, user: &str, password_file: &Path) -> Self {
        self.influx.username = Some(user.to_string());
        self.influx.password_file = Some(password_file.to_path_buf());
        self
    }

    /// `influx.token_file`.
    pub fn influx_token_file(mut self, path: &Path) -> Self {
        self.influx.token_file = Some(path.to_path_buf());
        self
    }

    /// `influx.gzip`.
    pub fn influx_gzip(mut self, on: bool) -> Self {
        self.influx.gzip = Some(on);
        self
    }

    /// `[record]`: aligned frames written to `measurement`.
    pub fn record(mut self, measurement: &str) -> Self {
        self.record = Some(Record {
            enabled: true,
            measurement: measurement.to_string(),
        });
        self
    }

    /// Spools unwritten batches to `directory`, up to `max_mb`.
    pub fn spool(mut self, directory: &Path, max_mb: u64) -> Self {
        self.spool = Some(Spool {
            directory: directory.to_path_buf(),
            max_mb,
        });
        self
    }

    /// Keeps the intake journal and open alerts in `directory`.
    pub fn state_dir(mut self, directory: &Path) -> Self {
        self.state = Some(State {
            directory: directory.to_path_buf(),
        });
        self
    }

    /// `alerts.stale_after_periods` and `alerts.stuck_after_periods`.
    pub fn quality_alarms(mut self, stale_after: u32, stuck_after: u32) -> Self {
        let a = self.alerts.get_or_insert_with(Alerts::default);
        a.stale_after_periods = Some(stale_after);
        a.stuck_after_periods = Some(stuck_after);
        self
    }

    /// An MQTT alert output `name` on the input broker, default topic.
    pub fn mqtt_alert_output(mut self, name: &str) -> Self {
        self.alert_output(name, "mqtt", None, None);
        self
    }

    /// An MQTT alert output `name` to the broker on `127.0.0.1:port`.
    pub fn mqtt_alert_output_to(mut self, name: &str, port: u16) -> Self {
        self.alert_output(name, "mqtt", None, None);
        if let Some(o) = self.alerts.as_mut().and_then(|a| a.outputs.last_mut()) {
            o.port = Some(port);
        }
        self
    }

    /// A webhook alert output `name` posting to `url`, with the bearer
    /// token in `token_file`.
    pub fn webhook_output(mut self, name: &str, url: &str, token_file: Option<&Path>) -> Self {
        self.alert_output(name, "webhook", Some(url), token_file);
        self
    }

    /// The extra CA the alert output `name` verifies its server with.
    pub fn alert_output_ca_file(mut self, name: &str, ca_file: &Path) -> Self {
        let outputs = self.alerts.iter_mut().flat_map(|a| a.outputs.iter_mut());
        for o in outputs.filter(|o| o.name == name) {
            o.ca_file = Some(ca_file.to_path_buf());
        }
        self
    }

    fn alert_output(
        &mut self,
        name: &str,
        kind: &'static str,
        url: Option<&str>,
        token_file: Option<&Path>,
    ) {
        let a = self.alerts.get_or_insert_with(Alerts::default);
        a.outputs.push(AlertOutput {
            name: name.to_string(),
            kind,
            url: url.map(str::to_string),
            token_file: token_file.map(Path::to_path_buf),
            port: None,
            ca_file: None,
            retry_min_ms: 50,
            retry_max_ms: 500,
        });
    }

    /// `pump`: [`new`](Self::new) puts it first and nothing removes it.
    fn default_model_entry(&mut self) -> &mut Model {
        &mut self.models[0]
    }
}
