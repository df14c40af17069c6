//! Integration-test harness: real mosquitto and VictoriaMetrics processes on
//! free loopback ports, the daemon under test with a typed config, MQTT and
//! HTTP client helpers, and the paths the tests need (workspace root, ONNX
//! Runtime library, SKAB data).
//!
//! Every process is started by the test that uses it, in its own temporary
//! directory, and is killed by PID when its guard drops. Nothing here sleeps a
//! fixed time to wait: readiness and results are polled with a deadline.
//!
//! The helpers block. In an async test that also runs the daemon in-process,
//! use `#[tokio::test(flavor = "multi_thread")]` (or `spawn_blocking`) so a
//! blocking poll does not starve the daemon's tasks. The MQTT helpers run
//! their rumqttc client on a thread of their own, so they work inside a tokio
//! runtime too.

#![allow(dead_code)] // Each test module uses a different part of the harness.

mod config;
mod daemon;
mod http;
mod influxd;
mod model;
mod mosquitto;
mod mqtt;
mod nats;
mod offline;
mod paths;
mod process;
mod series;
mod stack;
mod subscriber;
mod tls;
mod victoria;
mod webhook;

pub use config::DaemonConfig;
pub use daemon::Daemon;
pub use http::{http_get, http_post, url_encode};
pub use influxd::{Influxd, InfluxdOptions};
pub use model::{START_NS, WINDOW, shipped_model, synth_rows, windows_for};
pub use mosquitto::Mosquitto;
pub use mqtt::{
    client_id, frame_messages, frame_payloads, mqtt_publish, mqtt_publish_many, mqtt_publish_with,
    publish_frames, qos, try_mqtt_publish_with,
};
pub use nats::{NatsCluster, nats_partition};
pub use offline::{ReplayRow, replay_scores, run_trainer, trainer_bin};
pub use paths::{
    anomalyd_bin, file_mode, ort_dylib, read_repo_file, skab_dir, tool, workspace_root,
};
pub use process::{free_port, output_text, port_open, run_checked, run_output, wait_until};
pub use series::{Series, point_count};
pub use stack::Stack;
pub use subscriber::{MqttSubscriber, Received};
pub use tls::TestCerts;
pub use victoria::VictoriaMetrics;
pub use webhook::WebhookServer;
