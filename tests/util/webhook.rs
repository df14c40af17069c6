//! A real HTTP server for webhook tests: a std `TcpListener` on a loopback
//! port, on a thread of its own, that records every request (method, path,
//! headers, body) and answers each with a status the test chooses. It can
//! be started on a port chosen earlier, so a test can configure the daemon
//! with an endpoint that is down and bring it up later, and serve HTTPS
//! with a certificate of [`TestCerts`] (rustls, the daemon's provider).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::TestCerts;

/// One request the server received.
#[derive(Debug, Clone)]
pub struct HookRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// When it arrived.
    pub at: Instant,
}

impl HookRequest {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("webhook body is not JSON ({e}): {:?}", self.body))
    }
}

/// The running server; stops when dropped.
pub struct WebhookServer {
    port: u16,
    requests: Arc<Mutex<Vec<HookRequest>>>,
    status: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    tls: bool,
}

impl WebhookServer {
    /// Listens on `127.0.0.1:port` (0 = any free port), answering 200.
    pub fn start(port: u16) -> WebhookServer {
        Self::start_with(port, None)
    }

    /// [`start`](Self::start) serving HTTPS with the server certificate of
    /// `certs` (issued for `127.0.0.1`). A client that refuses the
    /// certificate leaves no request behind.
    pub fn start_tls(port: u16, certs: &TestCerts) -> WebhookServer {
        Self::start_with(port, Some(server_tls(certs)))
    }

    fn start_with(port: u16, tls: Option<Arc<rustls::ServerConfig>>) -> WebhookServer {
        let is_tls = tls.is_some();
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the webhook server");
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, status, stop) = (requests.clone(), status.clone(), stop.clone());
            thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(conn) = conn else { continue };
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                    let status = status.load(Ordering::SeqCst);
                    let req = match &tls {
                        None => serve(conn, status),
                        Some(cfg) => rustls::ServerConnection::new(cfg.clone())
                            .ok()
                            .and_then(|c| serve(rustls::StreamOwned::new(c, conn), status)),
                    };
                    if let Some(req) = req {
                        requests.lock().unwrap().push(req);
                    }
                }
            })
        };
        WebhookServer {
            port,
            requests,
            status,
            stop,
            thread: Some(thread),
            tls: is_tls,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}{path}", self.port)
    }

    /// The status later requests get (e.g. 503 to refuse them).
    pub fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    pub fn requests(&self) -> Vec<HookRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// Waits until `f` holds for the requests so far; panics after
    /// `deadline`, listing them.
    pub fn wait_for(
        &self,
        what: &str,
        deadline: Duration,
        f: impl Fn(&[HookRequest]) -> bool,
    ) -> Vec<HookRequest> {
        let start = Instant::now();
        loop {
            let got = self.requests();
            if f(&got) {
                return got;
            }
            assert!(
                start.elapsed() < deadline,
                "webhook: no {what} within {deadline:?}; got {:?}",
                got.iter().map(|r| &r.body).collect::<Vec<_>>()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The rustls server side for `certs`, on the daemon's provider.
fn server_tls(certs: &TestCerts) -> Arc<rustls::ServerConfig> {
    let read = |p: &Path| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let chain = CertificateDer::pem_slice_iter(&read(&certs.server_cert))
        .collect::<Result<Vec<_>, _>>()
        .expect("server certificate PEM");
    let key = PrivateKeyDer::from_pem_slice(&read(&certs.server_key)).expect("server key PEM");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server certificate and key");
    Arc::new(cfg)
}

/// Reads one HTTP/1.x request from `conn` (plain or TLS) and answers it
/// with `status`, closing the connection.
fn serve(conn: impl Read + Write, status: u16) -> Option<HookRequest> {
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).ok()?;
    let at = Instant::now();
    let conn = reader.get_mut();
    let reason = if status < 300 { "OK" } else { "Error" };
    let _ = write!(
        conn,
        "HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    let _ = conn.flush();
    Some(HookRequest {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        at,
    })
}

impl Drop for WebhookServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
