//! Integration-test harness: real mosquitto and VictoriaMetrics processes on
//! free loopback ports, MQTT and HTTP client helpers, and the paths the tests
//! need (workspace root, ONNX Runtime library, SKAB data).
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

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration, Transport};
use tempfile::TempDir;

/// Debian's broker binary (package `mosquitto`).
pub const MOSQUITTO_BIN: &str = "/usr/sbin/mosquitto";
/// Debian's password tool (package `mosquitto`).
pub const MOSQUITTO_PASSWD_BIN: &str = "/usr/bin/mosquitto_passwd";
/// Debian's single-node VictoriaMetrics (package `victoria-metrics`).
pub const VICTORIA_METRICS_BIN: &str = "/usr/bin/victoria-metrics";

/// How long a service may take to become ready on a loaded 2-core machine.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long a service may take to exit after SIGTERM before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------

/// The workspace root (the `anomalyd` package directory).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `anomalyd` binary Cargo built for these tests.
pub fn anomalyd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_anomalyd"))
}

/// The ONNX Runtime library: `$ORT_DYLIB_PATH`, else the copy that
/// `scripts/setup.sh` puts in `<root>/.ort/`.
/// The window length of the shipped `models/pump.onnx`.
pub const WINDOW: usize = 40;

/// Windows scored from `rows` on-grid frame messages of one asset: each
/// message closes its own frame, so a window ends at every row from
/// `WINDOW` on.
pub fn windows_for(rows: usize) -> usize {
    rows + 1 - WINDOW
}

pub fn ort_dylib() -> PathBuf {
    match std::env::var_os("ORT_DYLIB_PATH") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => workspace_root().join(".ort/libonnxruntime.so.1.31.1"),
    }
}

/// The SKAB data set: `$SKAB_DIR`, else `<root>/../shared/data/skab`.
///
/// Returns `None` (and prints why, so a skipped test is visible with
/// `--nocapture`) when it is absent; panics instead when `CI=true`, because CI
/// must never pass by skipping.
pub fn skab_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("SKAB_DIR") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => workspace_root().join("../shared/data/skab"),
    };
    if dir.is_dir() {
        return Some(dir);
    }
    let reason = format!("SKAB data set not found at {}", dir.display());
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{reason} (required when CI=true; set SKAB_DIR)");
    }
    eprintln!("skipping: {reason} (set SKAB_DIR to run this test)");
    None
}

// ---------------------------------------------------------------------------
// Polling and ports
// ---------------------------------------------------------------------------

/// A loopback TCP port that was free a moment ago (bind port 0, read it back).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Polls `f` until it returns true; panics with `what` after `deadline`.
///
/// Polls often at first (1 ms) and backs off to 100 ms, so fast conditions
/// cost little and slow ones do not spin.
pub fn wait_until(deadline: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        if f() {
            return;
        }
        if start.elapsed() >= deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        thread::sleep(pause.min(deadline.saturating_sub(start.elapsed())));
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Whether something accepts TCP connections on `127.0.0.1:port`.
pub fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// Sends SIGTERM to `child` (only that PID), waits up to `deadline`, then
/// SIGKILLs it if it is still running.
fn terminate(child: &mut Child, deadline: Duration) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let start = Instant::now();
    while start.elapsed() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// SIGKILLs `child` and reaps it.
fn kill_now(child: &mut Child) {
    if child.try_wait().ok().flatten().is_none() {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// The last `max` bytes of a log file, for panic messages.
fn log_tail(path: &Path, max: usize) -> String {
    let text = fs::read(path).unwrap_or_default();
    let start = text.len().saturating_sub(max);
    String::from_utf8_lossy(&text[start..]).into_owned()
}

fn append_log(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open log {}: {e}", path.display()))
}

fn require_binary(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} not found: install Debian package `{package}` (bash scripts/setup.sh)"
    );
}

fn run_checked(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// HTTP (std only, HTTP/1.0)
// ---------------------------------------------------------------------------

/// A complete HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `GET url` (`http://host:port/path?query`) with HTTP/1.0 over a std
/// `TcpStream`; 10 s timeouts.
pub fn http_get(url: &str) -> std::io::Result<HttpResponse> {
    http_request("GET", url, None, b"")
}

/// `POST url` with `body` of `content_type`.
pub fn http_post(url: &str, content_type: &str, body: &[u8]) -> std::io::Result<HttpResponse> {
    http_request("POST", url, Some(content_type), body)
}

fn http_request(
    method: &str,
    url: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    let invalid = |msg: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, msg);
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| invalid(format!("not an http:// URL: {url}")))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = authority
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| invalid(format!("cannot resolve {authority}")))?;
    let timeout = Duration::from_secs(10);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {authority}\r\n");
    if let Some(ct) = content_type {
        request.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    if method != "GET" {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_http_response(&raw).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "malformed HTTP response from {url}: {:?}",
                String::from_utf8_lossy(&raw[..raw.len().min(200)])
            ),
        )
    })
}

fn parse_http_response(raw: &[u8]) -> Option<HttpResponse> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body)?;
    }
    Some(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// Percent-encodes a query-string value (RFC 3986 unreserved bytes stay).
pub fn url_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// mosquitto
// ---------------------------------------------------------------------------

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
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, STOP_DEADLINE);
        }
        wait_until(STOP_DEADLINE, "mosquitto port to close", || {
            !port_open(self.port)
        });
    }

    /// SIGKILL: a crash; only what autosave (every second) wrote survives.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_now(&mut child);
        }
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
        let start = Instant::now();
        loop {
            if port_open(self.port) {
                return;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                panic!(
                    "mosquitto exited at start ({status}); config {}:\n{}\nlog:\n{}",
                    self.config_path.display(),
                    fs::read_to_string(&self.config_path).unwrap_or_default(),
                    log_tail(&self.log_path, 4000)
                );
            }
            if start.elapsed() > START_DEADLINE {
                panic!(
                    "mosquitto not listening on port {} after {START_DEADLINE:?}; log:\n{}",
                    self.port,
                    log_tail(&self.log_path, 4000)
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_now(&mut child);
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A throw-away PKI made with the `openssl` CLI: a CA, a server certificate
/// for `127.0.0.1`/`localhost`, and a client certificate.
#[derive(Debug, Clone)]
pub struct TestCerts {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TestCerts {
    /// Generates the CA and both leaf certificates in `dir` (created).
    pub fn generate(dir: &Path) -> TestCerts {
        fs::create_dir_all(dir).expect("create tls dir");
        let p = |name: &str| dir.join(name);
        let openssl = || {
            let mut c = Command::new("openssl");
            c.current_dir(dir);
            c
        };
        // P-256 keys: fast to generate, PKCS#8 PEM, accepted by rustls.
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        run_checked(
            openssl()
                .args(["req", "-x509", "-nodes", "-days", "3650"])
                .args(ec)
                .args([
                    "-subj",
                    "/CN=anomalyd test CA",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.crt",
                ]),
        );
        let leaf = |name: &str, cn: &str, ext: &str| {
            fs::write(p(&format!("{name}.ext")), ext).expect("write ext file");
            run_checked(openssl().args(["req", "-nodes"]).args(ec).args([
                "-subj",
                &format!("/CN={cn}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ]));
            run_checked(openssl().args([
                "x509",
                "-req",
                "-days",
                "3650",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-CAserial",
                "ca.srl",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.crt"),
            ]));
        };
        leaf(
            "server",
            "127.0.0.1",
            "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\n\
             basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\n",
        );
        leaf(
            "client",
            "anomalyd-test-client",
            "basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=clientAuth\n",
        );
        TestCerts {
            ca_cert: p("ca.crt"),
            server_cert: p("server.crt"),
            server_key: p("server.key"),
            client_cert: p("client.crt"),
            client_key: p("client.key"),
        }
    }
}

// ---------------------------------------------------------------------------
// MQTT clients (rumqttc sync client, each on its own thread)
// ---------------------------------------------------------------------------

/// A unique client id (MQTT brokers disconnect the older of two equal ids).
pub fn client_id(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        _ => panic!("invalid MQTT QoS {level}"),
    }
}

/// Publishes one message to an anonymous broker on `127.0.0.1:port` and
/// returns once it was written (QoS 0) or acknowledged (QoS 1/2).
pub fn mqtt_publish(port: u16, topic: &str, payload: impl Into<Vec<u8>>, qos: u8) {
    mqtt_publish_many(port, &[(topic.to_string(), payload.into())], qos);
}

/// Publishes `messages` in order over one connection to an anonymous broker
/// on `127.0.0.1:port`; returns once all were written (QoS 0) or
/// acknowledged (QoS 1/2).
pub fn mqtt_publish_many(port: u16, messages: &[(String, Vec<u8>)], qos: u8) -> usize {
    let opts = MqttOptions::new(client_id("test-pub"), "127.0.0.1", port);
    mqtt_publish_with(opts, messages, qos)
}

/// [`mqtt_publish_many`] with any options (credentials, TLS: see
/// [`Mosquitto::mqtt_options`]); panics on a connection error.
pub fn mqtt_publish_with(opts: MqttOptions, messages: &[(String, Vec<u8>)], qos: u8) -> usize {
    try_mqtt_publish_with(opts, messages, qos)
        .unwrap_or_else(|e| panic!("MQTT publish failed: {e}"))
}

/// [`mqtt_publish_with`] that returns connection errors (refused
/// credentials, TLS failures) instead of panicking; gives up after 60 s.
pub fn try_mqtt_publish_with(
    mut opts: MqttOptions,
    messages: &[(String, Vec<u8>)],
    qos_level: u8,
) -> Result<usize, String> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let level = qos(qos_level);
    opts.set_inflight(1000);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut connection) = Client::new(opts, 1000);
    let acked = AtomicUsize::new(0);
    let failed = Mutex::new(None::<String>);
    thread::scope(|s| {
        // The connection runs a runtime of its own: keep it off any caller's
        // runtime (and off the thread that queues the publishes).
        let events = s.spawn(|| {
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::PubAck(_) | Packet::PubComp(_))) => {
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    // Requests are handled in order, so every publish queued
                    // before the disconnect has been written by now.
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    Err(e) => {
                        *failed.lock().unwrap() = Some(e.to_string());
                        return;
                    }
                }
            }
        });
        let mut count = 0;
        for (topic, payload) in messages {
            if client
                .publish(topic.clone(), level, false, payload.clone())
                .is_err()
            {
                break; // the connection ended; its error is reported below
            }
            count += 1;
        }
        if level != QoS::AtMostOnce {
            let start = Instant::now();
            while acked.load(Ordering::SeqCst) < count && failed.lock().unwrap().is_none() {
                if start.elapsed() > Duration::from_secs(60) {
                    *failed.lock().unwrap() = Some(format!(
                        "only {} of {count} messages acknowledged after 60 s",
                        acked.load(Ordering::SeqCst)
                    ));
                    break;
                }
                thread::sleep(Duration::from_millis(2));
            }
        }
        let _ = client.disconnect();
        events.join().expect("MQTT event thread panicked");
        match failed.lock().unwrap().take() {
            Some(e) => Err(format!("after {count} messages: {e}")),
            None => Ok(count),
        }
    })
}

/// One message a [`MqttSubscriber`] received.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
}

impl Received {
    pub fn payload_str(&self) -> &str {
        std::str::from_utf8(&self.payload).expect("payload is not UTF-8")
    }

    /// The payload parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "payload on {} is not JSON ({e}): {:?}",
                self.topic,
                self.payload_str()
            )
        })
    }
}

/// A subscriber that collects every message on a background thread.
/// Subscribed (SubAck received) when [`connect`](Self::connect) returns, so
/// nothing published afterwards is missed.
pub struct MqttSubscriber {
    client: Client,
    received: Arc<Mutex<Vec<Received>>>,
    error: Arc<Mutex<Option<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl MqttSubscriber {
    /// Subscribes to `filter` at QoS 1 on an anonymous broker.
    pub fn connect(port: u16, filter: &str) -> MqttSubscriber {
        let opts = MqttOptions::new(client_id("test-sub"), "127.0.0.1", port);
        Self::connect_with(opts, filter, 1)
    }

    /// Subscribes to `filter` at `qos_level` with `opts`; panics when the
    /// broker refuses the connection or the subscription within 10 s.
    pub fn connect_with(opts: MqttOptions, filter: &str, qos_level: u8) -> MqttSubscriber {
        Self::try_connect_with(opts, filter, qos_level)
            .unwrap_or_else(|e| panic!("MQTT subscriber for {filter}: {e}"))
    }

    /// [`connect_with`](Self::connect_with) that returns the broker's
    /// refusal (credentials, TLS, subscription) instead of panicking.
    pub fn try_connect_with(
        mut opts: MqttOptions,
        filter: &str,
        qos_level: u8,
    ) -> Result<MqttSubscriber, String> {
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut connection) = Client::new(opts, 1000);
        client
            .subscribe(filter, qos(qos_level))
            .map_err(|e| e.to_string())?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let error = Arc::new(Mutex::new(None));
        let subscribed = Arc::new(Mutex::new(None::<bool>));
        let thread = {
            let (received, error, subscribed) =
                (received.clone(), error.clone(), subscribed.clone());
            thread::spawn(move || {
                for event in connection.iter() {
                    match event {
                        Ok(Event::Incoming(Packet::SubAck(ack))) => {
                            let ok = ack
                                .return_codes
                                .iter()
                                .all(|c| !matches!(c, rumqttc::SubscribeReasonCode::Failure));
                            *subscribed.lock().unwrap() = Some(ok);
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            received.lock().unwrap().push(Received {
                                topic: p.topic.clone(),
                                payload: p.payload.to_vec(),
                                qos: p.qos as u8,
                                retain: p.retain,
                            });
                        }
                        Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                        Ok(_) => {}
                        Err(e) => {
                            *error.lock().unwrap() = Some(e.to_string());
                            return;
                        }
                    }
                }
            })
        };
        let start = Instant::now();
        loop {
            if let Some(e) = error.lock().unwrap().clone() {
                let _ = thread.join();
                return Err(format!("cannot connect: {e}"));
            }
            match *subscribed.lock().unwrap() {
                Some(true) => break,
                Some(false) => return Err(format!("broker refused subscription to {filter}")),
                None => {}
            }
            if start.elapsed() > Duration::from_secs(10) {
                return Err("no SubAck within 10 s".to_string());
            }
            thread::sleep(Duration::from_millis(2));
        }
        Ok(MqttSubscriber {
            client,
            received,
            error,
            thread: Some(thread),
        })
    }

    /// All messages received so far, in arrival order.
    pub fn messages(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// Waits until at least `n` messages arrived; panics after `deadline`
    /// (saying how many did, and the last few) or when the connection failed.
    pub fn wait_for(&self, n: usize, deadline: Duration) -> Vec<Received> {
        let start = Instant::now();
        loop {
            if let Some(e) = self.error.lock().unwrap().as_ref() {
                panic!("MQTT subscriber failed: {e}");
            }
            let got = self.messages();
            if got.len() >= n {
                return got;
            }
            if start.elapsed() >= deadline {
                let last: Vec<_> = got
                    .iter()
                    .rev()
                    .take(3)
                    .map(|m| (m.topic.as_str(), String::from_utf8_lossy(&m.payload)))
                    .collect();
                panic!(
                    "timed out after {deadline:?} waiting for {n} MQTT messages: got {}; last: {last:?}",
                    got.len()
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for MqttSubscriber {
    fn drop(&mut self) {
        let _ = self.client.disconnect();
        if let Some(t) = self.thread.take() {
            // Errors end the thread too; either way it ends promptly.
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// VictoriaMetrics
// ---------------------------------------------------------------------------

/// One series read back from VictoriaMetrics' `/api/v1/export`.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// `__name__` and every label.
    pub metric: BTreeMap<String, String>,
    pub values: Vec<f64>,
    /// Milliseconds since the epoch, one per value.
    pub timestamps: Vec<i64>,
}

impl Series {
    /// The metric name, e.g. `anomaly_score_score` (measurement `_` field).
    pub fn name(&self) -> &str {
        self.label("__name__").unwrap_or("")
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.metric.get(key).map(String::as_str)
    }

    /// `(timestamp_ms, value)` pairs sorted by time.
    pub fn points(&self) -> Vec<(i64, f64)> {
        let mut points: Vec<_> = self
            .timestamps
            .iter()
            .copied()
            .zip(self.values.iter().copied())
            .collect();
        points.sort_by_key(|p| p.0);
        points
    }

    fn from_json_line(line: &str) -> Series {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("bad export line ({e}): {line}"));
        let metric = v["metric"]
            .as_object()
            .unwrap_or_else(|| panic!("export line without metric: {line}"))
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        let values = v["values"]
            .as_array()
            .unwrap_or_else(|| panic!("export line without values: {line}"))
            .iter()
            .map(|x| match x {
                serde_json::Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
                // Non-finite values come back as strings ("NaN", "Inf").
                serde_json::Value::String(s) => s.parse().unwrap_or(f64::NAN),
                _ => f64::NAN,
            })
            .collect();
        let timestamps = v["timestamps"]
            .as_array()
            .unwrap_or_else(|| panic!("export line without timestamps: {line}"))
            .iter()
            .map(|t| {
                t.as_i64()
                    .unwrap_or_else(|| panic!("bad timestamp in {line}"))
            })
            .collect();
        Series {
            metric,
            values,
            timestamps,
        }
    }
}

/// Total number of points in `series`.
pub fn point_count(series: &[Series]) -> usize {
    series.iter().map(|s| s.values.len()).sum()
}

/// A single-node VictoriaMetrics on `127.0.0.1:port()`, killed when dropped.
/// It serves the InfluxDB write API at `url()/api/v2/write`.
pub struct VictoriaMetrics {
    port: u16,
    child: Option<Child>,
    data_dir: PathBuf,
    log_path: PathBuf,
    // Last, so the directory outlives the process on drop.
    dir: TempDir,
}

impl VictoriaMetrics {
    /// Starts it on a free port with a fresh data directory; returns once
    /// `/health` answers.
    pub fn start() -> VictoriaMetrics {
        require_binary(VICTORIA_METRICS_BIN, "victoria-metrics");
        let dir = tempfile::Builder::new()
            .prefix("anomalyd-victoria-")
            .tempdir()
            .expect("tempdir");
        let mut vm = VictoriaMetrics {
            port: free_port(),
            child: None,
            data_dir: dir.path().join("data"),
            log_path: dir.path().join("victoria-metrics.log"),
            dir,
        };
        vm.spawn();
        vm
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Everything it logged so far (all runs).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM and wait (it flushes its data on the way out); the port is
    /// closed when this returns, so writers see connection errors.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, STOP_DEADLINE);
        }
        wait_until(STOP_DEADLINE, "VictoriaMetrics port to close", || {
            !port_open(self.port)
        });
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_now(&mut child);
        }
    }

    /// Starts again after [`stop`](Self::stop)/[`kill`](Self::kill), on the
    /// same port with the same data directory.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "VictoriaMetrics is already running");
        self.spawn();
    }

    fn spawn(&mut self) {
        let log = append_log(&self.log_path);
        let child = Command::new(VICTORIA_METRICS_BIN)
            .arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
            .arg(format!("-storageDataPath={}", self.data_dir.display()))
            .arg("-retentionPeriod=100y")
            // Make points visible to queries as soon as they are flushed.
            .arg("-search.latencyOffset=0s")
            .arg("-search.disableCache")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {VICTORIA_METRICS_BIN}: {e}"));
        self.child = Some(child);
        let health = format!("{}/health", self.url());
        let start = Instant::now();
        loop {
            if http_get(&health).is_ok_and(|r| r.status == 200) {
                return;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                panic!(
                    "VictoriaMetrics exited at start ({status}); log:\n{}",
                    log_tail(&self.log_path, 4000)
                );
            }
            if start.elapsed() > START_DEADLINE {
                panic!(
                    "VictoriaMetrics /health not OK after {START_DEADLINE:?}; log:\n{}",
                    log_tail(&self.log_path, 4000)
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Makes freshly ingested points searchable (`/internal/force_flush`).
    pub fn flush(&self) {
        let r = http_get(&format!("{}/internal/force_flush", self.url()))
            .expect("VictoriaMetrics force_flush");
        assert_eq!(r.status, 200, "force_flush: {}", r.body);
    }

    /// Writes InfluxDB line protocol directly (`/write`); panics unless 204.
    /// VictoriaMetrics accepts garbage with 204 too: read it back.
    pub fn write_lines(&self, lines: &str) {
        let r = http_post(
            &format!("{}/write", self.url()),
            "text/plain",
            lines.as_bytes(),
        )
        .expect("VictoriaMetrics write");
        assert_eq!(r.status, 204, "write: {}", r.body);
    }

    /// Every series matching `selector` (e.g. `{__name__=~"anomaly_score_.*"}`
    /// or `anomaly_score_score{asset="pump-001"}`), all time, after a flush.
    pub fn export(&self, selector: &str) -> Vec<Series> {
        self.flush();
        let url = format!(
            "{}/api/v1/export?match[]={}&start=0",
            self.url(),
            url_encode(selector)
        );
        let r = http_get(&url).unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(r.status, 200, "export {selector}: {}", r.body);
        let mut series: Vec<Series> = r
            .body
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(Series::from_json_line)
            .collect();
        series.sort_by(|a, b| a.metric.cmp(&b.metric));
        series
    }

    /// Polls [`export`](Self::export) until the matching series hold at
    /// least `n` points in total; panics after `deadline` with what it saw.
    pub fn wait_for_points(&self, selector: &str, n: usize, deadline: Duration) -> Vec<Series> {
        let start = Instant::now();
        loop {
            let last = self.export(selector);
            if point_count(&last) >= n {
                return last;
            }
            if start.elapsed() >= deadline {
                let names: Vec<String> = last
                    .iter()
                    .map(|s| format!("{:?}: {} points", s.metric, s.values.len()))
                    .collect();
                panic!(
                    "timed out after {deadline:?} waiting for {n} points of {selector}: got {} in {names:#?}",
                    point_count(&last)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for VictoriaMetrics {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_now(&mut child);
        }
    }
}

// ---------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------

/// The first `rows` rows of the synthetic pump seeded with `seed`, as
/// `anomalyd simulate` publishes them for an asset with that seed.
pub fn synth_rows(rows: usize, seed: u64) -> Vec<[f64; 8]> {
    anomalyd::core::synth::generate(rows, seed, 0, 1_000_000_000, None).values
}
