//! A real NATS cluster (`nats-server` 2.9, Debian package `nats-server`)
//! on free loopback ports: each node with its client, cluster-route, MQTT
//! and monitoring ports, JetStream in a temporary store directory, MQTT
//! sessions and QoS 1 messages kept in JetStream streams replicated to up
//! to three nodes, and the subject mapping that partitions assets
//! (docs/scale-out.md §1, §6):
//!
//! ```text
//! mappings = { "sensors.*": "sensors.{{partition(N,1)}}.{{wildcard(1)}}" }
//! ```
//!
//! so an MQTT publish to `sensors/pump-1` reaches subscribers as
//! `sensors/<p>/pump-1`, `p` = FNV-1a 32 of `pump-1` mod N
//! ([`nats_partition`]). Nodes can be killed (SIGKILL by PID) and
//! restarted on the same ports and store; every process started here is
//! killed when the cluster drops.

use std::fs;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use rumqttc::{Client, ConnectReturnCode, Event, MqttOptions, Packet};
use tempfile::TempDir;

use super::process::{kill_service, log_tail, require_binary, spawn_logged, wait_ready};
use super::{client_id, free_port, http_get, wait_until};

/// Debian's server binary (package `nats-server`).
pub const NATS_SERVER_BIN: &str = "/usr/sbin/nats-server";

/// How long a cluster may take to elect its JetStream meta leader and
/// answer MQTT connects on every node: the first MQTT connect on a node
/// creates the replicated MQTT streams, and each JetStream request the
/// server makes for it gives up after 4 s while leaders are elected.
const CLUSTER_DEADLINE: Duration = Duration::from_secs(60);

/// NATS's `partition(n, ...)` of one token: FNV-1a 32 of its bytes mod
/// `n`. A publisher to a broker without the mapping (mosquitto) computes
/// the partition with it.
pub fn nats_partition(token: &str, n: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in token.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % n
}

/// One node's ports and files.
struct Node {
    name: String,
    client_port: u16,
    route_port: u16,
    mqtt_port: u16,
    http_port: u16,
    config_path: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
}

/// `nodes` clustered `nats-server` processes, killed when dropped.
pub struct NatsCluster {
    nodes: Vec<Node>,
    partitions: u32,
    // Last, so the directory outlives the processes on drop.
    dir: TempDir,
}

impl NatsCluster {
    /// Starts `nodes` servers (one: no cluster block) mapping `sensors.*`
    /// into `partitions` partitions; returns once the cluster has a
    /// JetStream meta leader and every node acknowledges an MQTT connect.
    /// A node that finds one of its ports taken (another test bound it
    /// between `free_port` and the server's start) exits at once; the
    /// cluster then starts again on other ports.
    pub fn start(nodes: usize, partitions: u32) -> NatsCluster {
        assert!(nodes >= 1 && partitions >= 1, "nodes and partitions >= 1");
        require_binary(NATS_SERVER_BIN, "nats-server");
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            let mut cluster = Self::configure(nodes, partitions);
            // All first: a meta leader needs a quorum of them.
            for i in 0..cluster.nodes.len() {
                cluster.spawn(i);
            }
            match cluster.wait_listening() {
                Ok(()) => {
                    for i in 0..cluster.nodes.len() {
                        cluster.wait_node(i);
                    }
                    return cluster;
                }
                Err(why) if attempt < ATTEMPTS => {
                    eprintln!("nats: {why}; starting the cluster again on other ports");
                }
                Err(why) => panic!("nats: {why}, {ATTEMPTS} times"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Ports and config files of a cluster not started yet.
    fn configure(nodes: usize, partitions: u32) -> NatsCluster {
        let dir = tempfile::Builder::new()
            .prefix("anomalyd-nats-")
            .tempdir()
            .expect("tempdir");
        let nodes = (0..nodes)
            .map(|i| Node {
                name: format!("n{i}"),
                client_port: free_port(),
                route_port: free_port(),
                mqtt_port: free_port(),
                http_port: free_port(),
                config_path: dir.path().join(format!("n{i}.conf")),
                log_path: dir.path().join(format!("n{i}.log")),
                child: None,
            })
            .collect();
        let cluster = NatsCluster {
            nodes,
            partitions,
            dir,
        };
        for i in 0..cluster.nodes.len() {
            let text = cluster.config_text(i);
            fs::write(&cluster.nodes[i].config_path, text).expect("write nats config");
        }
        cluster
    }

    /// Waits until every node has bound its listeners ("Server is ready"
    /// in its log); `Err` when one found a port taken.
    fn wait_listening(&self) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let logs: Vec<String> = self
                .nodes
                .iter()
                .map(|n| fs::read_to_string(&n.log_path).unwrap_or_default())
                .collect();
            if let Some(i) = logs
                .iter()
                .position(|l| l.contains("address already in use"))
            {
                return Err(format!("node {} found a port taken", self.nodes[i].name));
            }
            if logs.iter().all(|l| l.contains("Server is ready")) {
                return Ok(());
            }
            // Anything else is left to wait_node, which reports it.
            if start.elapsed() > Duration::from_secs(20) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One node, for the benchmark and the partition measurement.
    pub fn single(partitions: u32) -> NatsCluster {
        Self::start(1, partitions)
    }

    fn config_text(&self, i: usize) -> String {
        let n = &self.nodes[i];
        let store = self.dir.path().join(format!("js-{}", n.name));
        let replicas = self.nodes.len().min(3);
        let mut text = format!(
            "server_name: {name}\n\
             listen: \"127.0.0.1:{client}\"\n\
             http: \"127.0.0.1:{http}\"\n\
             jetstream {{\n  store_dir: \"{store}\"\n}}\n\
             mqtt {{\n  listen: \"127.0.0.1:{mqtt}\"\n  stream_replicas: {replicas}\n}}\n\
             mappings = {{ \"sensors.*\": \"sensors.{{{{partition({p},1)}}}}.{{{{wildcard(1)}}}}\" }}\n",
            name = n.name,
            client = n.client_port,
            http = n.http_port,
            store = store.display(),
            mqtt = n.mqtt_port,
            p = self.partitions,
        );
        if self.nodes.len() > 1 {
            let routes: Vec<String> = self
                .nodes
                .iter()
                .map(|m| format!("\"nats-route://127.0.0.1:{}\"", m.route_port))
                .collect();
            text.push_str(&format!(
                "cluster {{\n  name: anomalyd\n  listen: \"127.0.0.1:{}\"\n  routes: [{}]\n}}\n",
                n.route_port,
                routes.join(", ")
            ));
        }
        text
    }

    fn spawn(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        assert!(n.child.is_none(), "node {} is already running", n.name);
        let child = spawn_logged(
            NATS_SERVER_BIN,
            &["-c".as_ref(), n.config_path.as_os_str()],
            &n.log_path,
        );
        n.child = Some(child);
    }

    /// Waits until node `i` answers on its monitoring port, sees a meta
    /// leader (clustered) and acknowledges an MQTT connect.
    fn wait_node(&mut self, i: usize) {
        let clustered = self.nodes.len() > 1;
        let n = &mut self.nodes[i];
        let (http, log_path, config_path) = (n.http_port, n.log_path.clone(), &n.config_path);
        wait_ready(
            &mut n.child,
            Duration::from_millis(20),
            // Not /healthz: a restarted node reports its replicas "not
            // current" for many seconds while it already serves MQTT.
            || http_get(&format!("http://127.0.0.1:{http}/varz")).is_ok_and(|r| r.status == 200),
            |status| {
                format!(
                    "nats-server exited at start ({status}); config {}:\n{}\nlog:\n{}",
                    config_path.display(),
                    fs::read_to_string(config_path).unwrap_or_default(),
                    log_tail(&log_path, 4000)
                )
            },
            || {
                format!(
                    "nats-server not healthy; log:\n{}",
                    log_tail(&log_path, 4000)
                )
            },
        );
        let (name, mqtt) = (n.name.clone(), n.mqtt_port);
        let start = Instant::now();
        let mut leader = !clustered;
        let mut pause = Duration::from_millis(20);
        loop {
            leader = leader || meta_leader(http).is_some();
            if leader && mqtt_connects(mqtt) {
                return;
            }
            assert!(
                start.elapsed() < CLUSTER_DEADLINE,
                "node {name}: no JetStream meta leader (seen: {leader}) or no MQTT CONNACK after {:?}; log:\n{}",
                start.elapsed(),
                log_tail(&log_path, 6000)
            );
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// How many nodes the cluster has (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// How many partitions the mapping makes.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Every node's MQTT port, in node order.
    pub fn mqtt_ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.mqtt_port).collect()
    }

    /// Node `i`'s MQTT port.
    pub fn mqtt_port(&self, i: usize) -> u16 {
        self.nodes[i].mqtt_port
    }

    /// `127.0.0.1:PORT` for every node's MQTT listener, in node order.
    pub fn mqtt_hosts(&self) -> Vec<String> {
        self.mqtt_ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect()
    }

    /// The node (name) that leads the JetStream meta group, as node `i`
    /// sees it.
    pub fn meta_leader(&self, i: usize) -> Option<String> {
        meta_leader(self.nodes[i].http_port)
    }

    /// Node `i`'s `/jsz` monitoring document with stream and consumer
    /// details.
    pub fn jsz(&self, i: usize) -> serde_json::Value {
        let url = format!(
            "http://127.0.0.1:{}/jsz?consumers=true&config=true",
            self.nodes[i].http_port
        );
        let body = http_get(&url)
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .body;
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: {e}: {body}"))
    }

    /// Whether node `i` acknowledges a clean-session MQTT connect now.
    pub fn accepts_mqtt(&self, i: usize) -> bool {
        mqtt_connects(self.nodes[i].mqtt_port)
    }

    /// Whether node `i` acknowledges a QoS 1 publish within 5 s now: it
    /// stores it in the replicated `$MQTT_msgs` stream, which has no
    /// leader for seconds after the node that led it died (connects are
    /// accepted before that, publishes reset the connection).
    pub fn accepts_qos1(&self, i: usize) -> bool {
        let opts = MqttOptions::new(
            client_id("nats-probe"),
            "127.0.0.1",
            self.nodes[i].mqtt_port,
        );
        let (client, mut connection) = Client::new(opts, 10);
        if client
            .publish(
                "anomalyd-probe",
                rumqttc::QoS::AtLeastOnce,
                false,
                b"1".to_vec(),
            )
            .is_err()
        {
            return false;
        }
        let start = Instant::now();
        let mut ok = false;
        while start.elapsed() < Duration::from_secs(5) {
            match connection.recv_timeout(Duration::from_millis(200)) {
                Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => {
                    ok = true;
                    break;
                }
                Ok(Ok(_)) | Err(_) => {}
                Ok(Err(_)) => break,
            }
        }
        let _ = client.disconnect();
        ok
    }

    /// Everything node `i` logged so far (all runs).
    pub fn log(&self, i: usize) -> String {
        fs::read_to_string(&self.nodes[i].log_path).unwrap_or_default()
    }

    /// The PID of node `i`, if it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    /// SIGKILL node `i` (by PID): a crash. Its MQTT port is closed when
    /// this returns.
    pub fn kill(&mut self, i: usize) {
        kill_service(&mut self.nodes[i].child);
        let port = self.nodes[i].mqtt_port;
        wait_until(Duration::from_secs(10), "the MQTT port to close", || {
            !super::port_open(port)
        });
    }

    /// Starts node `i` again (killing it first if it runs) on the same
    /// ports and JetStream store; returns once it is back in the cluster
    /// and acknowledges an MQTT connect.
    pub fn restart(&mut self, i: usize) {
        kill_service(&mut self.nodes[i].child);
        self.spawn(i);
        self.wait_node(i);
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            kill_service(&mut n.child);
        }
    }
}

/// The JetStream meta leader's name as the node with monitoring port
/// `http_port` reports it (`/jsz`), or `None` (no leader yet, no answer).
fn meta_leader(http_port: u16) -> Option<String> {
    let body = http_get(&format!("http://127.0.0.1:{http_port}/jsz"))
        .ok()?
        .body;
    let doc: serde_json::Value = serde_json::from_str(&body).ok()?;
    doc["meta_cluster"]["leader"]
        .as_str()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
}

/// Whether a clean-session MQTT connect to `127.0.0.1:port` is
/// acknowledged with success within 10 s.
fn mqtt_connects(port: u16) -> bool {
    let mut opts = MqttOptions::new(client_id("nats-probe"), "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut connection) = Client::new(opts, 10);
    let start = Instant::now();
    let mut ok = false;
    while start.elapsed() < Duration::from_secs(10) {
        match connection.recv_timeout(Duration::from_millis(200)) {
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                ok = ack.code == ConnectReturnCode::Success;
                break;
            }
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(_)) => break,
        }
    }
    let _ = client.disconnect();
    // Let the disconnect go out, so the server drops the probe at once.
    for _ in 0..5 {
        if connection.recv_timeout(Duration::from_millis(50)).is_err() {
            break;
        }
    }
    ok
}
