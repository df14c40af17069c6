//! The local HTTP listener: `/metrics` (Prometheus text) and `/healthz`.
//! A deliberately small HTTP/1.1 responder (GET only, one request per
//! connection): it serves two read-only documents to a scraper on loopback.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::ops::metrics::Metrics;

/// Health as seen by `/healthz`.
#[derive(Debug, Clone)]
pub struct Health {
    pub metrics: Arc<Metrics>,
    pub board: Arc<crate::ops::status::StatusBoard>,
    /// Heartbeats (ns since the epoch) of the pipeline's loops.
    pub heartbeats: Vec<Arc<std::sync::atomic::AtomicU64>>,
    pub stale_after: Duration,
}

impl Health {
    /// Healthy when every loop has beaten recently and the database
    /// takes writes (a refusal keeps data but needs an operator).
    pub fn check(&self, now_ns: u64) -> Result<(), String> {
        if let Some(why) = self.metrics.sink_refusal() {
            return Err(format!(
                "the database refuses writes ({why}); batches are kept and retried"
            ));
        }
        for (i, hb) in self.heartbeats.iter().enumerate() {
            let last = hb.load(Relaxed);
            if now_ns.saturating_sub(last) > self.stale_after.as_nanos() as u64 {
                return Err(format!(
                    "pipeline loop {i} has not reported for {} ms",
                    now_ns.saturating_sub(last) / 1_000_000
                ));
            }
        }
        Ok(())
    }
}

/// Serves until `shutdown`.
///
/// # Errors
/// The address cannot be bound.
pub async fn serve(
    addr: &str,
    health: Health,
    shutdown: CancellationToken,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(s) => s,
                    Err(_) => continue,
                },
            };
            let health = health.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                let mut n = 0;
                let read = tokio::time::timeout(Duration::from_secs(5), async {
                    while n < buf.len() {
                        let k = sock.read(&mut buf[n..]).await?;
                        if k == 0 {
                            break;
                        }
                        n += k;
                        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n")
                            || buf[..n].windows(2).any(|w| w == b"\n\n")
                        {
                            break;
                        }
                    }
                    Ok::<_, std::io::Error>(())
                })
                .await;
                if !matches!(read, Ok(Ok(()))) {
                    return;
                }
                let req = String::from_utf8_lossy(&buf[..n]);
                let (status, ctype, body) = respond(&req, &health);
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(body.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Ok(local)
}

/// The built-in status page: plain HTML and JS polling `/api/status`.
const STATUS_PAGE: &str = include_str!("status_page.html");

fn respond(req: &str, health: &Health) -> (&'static str, &'static str, String) {
    let mut parts = req.split_whitespace();
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        return ("405 Method Not Allowed", "text/plain", "GET only\n".into());
    }
    match path.split('?').next().unwrap_or("") {
        "/" | "/index.html" => (
            "200 OK",
            "text/html; charset=utf-8",
            STATUS_PAGE.to_string(),
        ),
        "/api/status" => (
            "200 OK",
            "application/json",
            serde_json::to_string(&health.board.snapshot(&health.metrics))
                .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")),
        ),
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4",
            health.metrics.render(),
        ),
        "/healthz" => {
            let now = crate::core::timestamp::now_ns() as u64;
            match health.check(now) {
                Ok(()) => ("200 OK", "text/plain", "ok\n".into()),
                Err(e) => ("503 Service Unavailable", "text/plain", format!("{e}\n")),
            }
        }
        _ => (
            "404 Not Found",
            "text/plain",
            "not found: try /metrics or /healthz\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[tokio::test]
    async fn serves_metrics_and_health() {
        let metrics = Arc::new(Metrics::default());
        metrics.windows_scored.store(42, Relaxed);
        let hb = Arc::new(AtomicU64::new(0));
        let health = Health {
            metrics: metrics.clone(),
            board: Arc::default(),
            heartbeats: vec![hb.clone()],
            stale_after: Duration::from_secs(5),
        };
        let stop = CancellationToken::new();
        let addr = serve("127.0.0.1:0", health.clone(), stop.clone())
            .await
            .unwrap();
        let get = |path: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        assert!(
            get("/metrics")
                .await
                .contains("anomalyd_windows_scored_total 42")
        );
        // Heartbeat at 0 is ancient: unhealthy.
        assert!(get("/healthz").await.starts_with("HTTP/1.1 503"));
        let now = crate::core::timestamp::now_ns() as u64;
        hb.store(now, Relaxed);
        assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
        health
            .metrics
            .set_sink_refusal(Some("HTTP 401: authorization failed"));
        let refused = get("/healthz").await;
        assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
        assert!(
            refused.contains("HTTP 401: authorization failed"),
            "{refused}"
        );
        health.metrics.set_sink_refusal(None);
        assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
        let status = get("/api/status").await;
        let body = status.split("\r\n\r\n").nth(1).unwrap();
        let doc: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(doc["assets"], serde_json::json!([]));
        assert!(get("/").await.contains("text/html"));
        stop.cancel();
    }
}
