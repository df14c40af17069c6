//! A real mosquitto broker on a free loopback port, in a temporary
//! directory of its own: anonymous or with passwords, plain or TLS (mutual
//! TLS too), with persistence so a restart keeps sessions. Killed by PID
//! when dropped.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rumqttc::{MqttOptions, TlsConfiguration, Transport};
use tempfile::TempDir;

use super::TestCerts;
use super::process::{
    START_DEADLINE, append_log, kill_service, log_tail, require_binary, run_checked, stop_service,
    wait_ready,
};
use super::{free_port, port_open};

/// Debian's broker binary (package `mosquitto`).
pub const MOSQUITTO_BIN: &str = "/usr/sbin/mosquitto";
/// Debian's password tool (package `mosquitto`).
pub const MOSQUITTO_PASSWD_BIN: &str = "/usr/bin/mosquitto_passwd";

/// Options for a [`Mosquitto`] broker.
#[derive(Debug, Default, Clone)]
pub struct MosquittoBuilder {
    users: Vec<(String, String)>,
    tls: bool,
    require_client_cert: bool,
    extra_config: Vec<String>,
}

impl MosquittoBuilder {
    /// Adds a user (the first call creates the password file); anonymous
    /// clients are then refused.
    pub fn password(mut self, user: &str, pass: &str) -> Self {
        self.users.push((user.to_string(), pass.to_string()));
        self
    }

    /// Serves MQTT over TLS with a freshly generated CA and server
    /// certificate (`subjectAltName=IP:127.0.0.1`); a client certificate
    /// signed by the same CA is generated too.
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }

    /// Mutual TLS: the broker refuses clients without a certificate from our
    /// CA (implies [`tls`](Self::tls)).
    pub fn require_client_cert(mut self, on: bool) -> Self {
        self.require_client_cert = on;
        if on {
            self.tls = true;
        }
        self
    }

    /// Appends a raw line to the generated `mosquitto.conf`.
    pub fn config_line(mut self, line: &str) -> Self {
        self.extra_config.push(line.to_string());
        self
    }

    /// Writes the config (and certificates, password file) and starts the
    /// broker on a free port; returns once it accepts TCP connections.
    pub fn start(self) -> Mosquitto {
        require_binary(MOSQUITTO_BIN, "mosquitto");
        let dir = tempfile::Builder::new()
            .prefix("anomalyd-mosquitto-")
            .tempdir()
            .expect("tempdir");
        let data = dir.path().join("data");
        fs::create_dir(&data).expect("create persistence dir");
        let port = free_port();

        let mut conf = vec![
            format!("listener {port} 127.0.0.1"),
            "persistence true".to_string(),
            format!("persistence_location {}/", data.display()),
            "autosave_interval 1".to_string(),
            // The default (1000) silently drops QoS 0 messages for a
            // subscriber that falls behind.
            "max_queued_messages 100000".to_string(),
            "log_dest stderr".to_string(),
            "log_type error".to_string(),
            "log_type warning".to_string(),
            "log_type notice".to_string(),
            "log_type information".to_string(),
            "connection_messages true".to_string(),
        ];
        if is_root() {
            conf.push("user root".to_string());
        }
        if self.users.is_empty() {
            conf.push("allow_anonymous true".to_string());
        } else {
            let file = dir.path().join("passwd");
            for (i, (user, pass)) in self.users.iter().enumerate() {
                let mut cmd = Command::new(MOSQUITTO_PASSWD_BIN);
                if i == 0 {
                    cmd.arg("-c");
                }
                run_checked(cmd.arg("-b").arg(&file).arg(user).arg(pass));
            }
            conf.push("allow_anonymous false".to_string());
            conf.push(format!("password_file {}", file.display()));
        }
        let certs = self
            .tls
            .then(|| TestCerts::generate(&dir.path().join("tls")));
        if let Some(c) = &certs {
            conf.push(format!("cafile {}", c.ca_cert.display()));
            conf.push(format!("certfile {}", c.server_cert.display()));
            conf.push(format!("keyfile {}", c.server_key.display()));
            if self.require_client_cert {
                conf.push("require_certificate true".to_string());
            }
        }
        conf.extend(self.extra_config.iter().cloned());
        let config_path = dir.path().join("mosquitto.conf");
        fs::write(&config_path, conf.join("\n") + "\n").expect("write mosquitto.conf");

        let mut broker = Mosquitto {
            log_path: dir.path().join("mosquitto.log"),
            config_path,
            data_dir: data,
            port,
            child: None,
            certs,
            users: self.users,
            dir,
        };
        broker.spawn();
        broker
    }
}

/// A mosquitto broker on `127.0.0.1:port()`, killed when dropped.
pub struct Mosquitto {
    port: u16,
    child: Option<Child>,
    config_path: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    certs: Option<TestCerts>,
    users: Vec<(String, String)>,
    // Last, so the directory outlives the process on drop.
    dir: TempDir,
}

impl Mosquitto {
    /// An anonymous plain-TCP broker, already running.
    pub fn start() -> Mosquitto {
        Self::builder().start()
    }

    pub fn builder() -> MosquittoBuilder {
        MosquittoBuilder::default()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mqtt://127.0.0.1:PORT` (or `mqtts://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.certs.is_some() {
            "mqtts"
        } else {
            "mqtt"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The CA certificate (PEM) that signed the server and client certs.
    pub fn ca_file(&self) -> &Path {
        &self.tls_certs().ca_cert
    }

    /// A client certificate (PEM) signed by [`ca_file`](Self::ca_file).
    pub fn client_cert(&self) -> &Path {
        &self.tls_certs().client_cert
    }

    /// The key (PKCS#8 PEM) of [`client_cert`](Self::client_cert).
    pub fn client_key(&self) -> &Path {
        &self.tls_certs().client_key
    }

    fn tls_certs(&self) -> &TestCerts {
        self.certs
            .as_ref()
            .expect("this broker was started without .tls(true)")
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Everything the broker logged so far (all runs).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The PID of the running broker, if any.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// rumqttc options for this broker: port, the first user's credentials,
    /// and TLS (with the client certificate) when enabled.
    pub fn mqtt_options(&self, client_id: &str) -> MqttOptions {
        let mut opts = MqttOptions::new(client_id, "127.0.0.1", self.port);
        opts.set_keep_alive(Duration::from_secs(30));
        if let Some((user, pass)) = self.users.first() {
            opts.set_credentials(user, pass);
        }
        if let Some(c) = &self.certs {
            let read = |p: &Path| fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            // The daemon's choice of rustls provider (sources/mqtt/options.rs).
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            opts.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
                ca: read(&c.ca_cert),
                alpn: None,
                client_auth: Some((read(&c.client_cert), read(&c.client_key))),
            }));
        }
        opts
    }

    /// SIGTERM and wait: mosquitto saves its persistence file on the way out.
    pub fn stop(&mut self) {
        stop_service(&mut self.child, self.port, "mosquitto");
    }

    /// SIGKILL: a crash; only what autosave (every second) wrote survives.
    pub fn kill(&mut self) {
        kill_service(&mut self.child);
    }

    /// [`stop`](Self::stop), then start again on the same port with the same
    /// config and persistence directory.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Starts the broker again after [`stop`](Self::stop) or
    /// [`kill`](Self::kill) (same port, config and persistence).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "mosquitto is already running");
        self.spawn();
    }

    fn spawn(&mut self) {
        let log = append_log(&self.log_path);
        let child = Command::new(MOSQUITTO_BIN)
            .arg("-c")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {MOSQUITTO_BIN}: {e}"));
        self.child = Some(child);
        let port = self.port;
        wait_ready(
            &mut self.child,
            Duration::from_millis(5),
            || port_open(port),
            |status| {
                format!(
                    "mosquitto exited at start ({status}); config {}:\n{}\nlog:\n{}",
                    self.config_path.display(),
                    fs::read_to_string(&self.config_path).unwrap_or_default(),
                    log_tail(&self.log_path, 4000)
                )
            },
            || {
                format!(
                    "mosquitto not listening on port {port} after {START_DEADLINE:?}; log:\n{}",
                    log_tail(&self.log_path, 4000)
                )
            },
        );
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        kill_service(&mut self.child);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
