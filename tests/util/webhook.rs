//! A real HTTP server for webhook tests: a std `TcpListener` on a loopback
//! port, on a thread of its own, that records every request (method, path,
//! headers, body) and answers each with a status the test chooses. It can
//! be started on a port chosen earlier, so a test can configure the daemon
//! with an endpoint that is down and bring it up later.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

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
}

impl WebhookServer {
    /// Listens on `127.0.0.1:port` (0 = any free port), answering 200.
    pub fn start(port: u16) -> WebhookServer {
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
                    if let Some(req) = serve(conn, status.load(Ordering::SeqCst)) {
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
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
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

/// Reads one HTTP/1.x request and answers it with `status`, closing the
/// connection.
fn serve(conn: TcpStream, status: u16) -> Option<HookRequest> {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut reader = BufReader::new(conn.try_clone().ok()?);
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
    let mut conn = conn;
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
