//! The local HTTP listener: `/metrics` (Prometheus text), `/healthz`
//! (liveness), `/readyz` (readiness, `readiness.rs`) and the status page.
//! A deliberately small HTTP/1.1 responder (GET only, one request per
//! connection): it serves read-only documents to a scraper on loopback.

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
    /// How long a failing sink or a waiting intake is tolerated by `/readyz`.
    pub degraded_after: Duration,
}

impl Health {
    /// Why the daemon is not ready now; empty when it is.
    pub fn degraded(&self) -> Vec<String> {
        let now_s = u64::try_from(crate::core::timestamp::now_ns() / 1_000_000_000).unwrap_or(0);
        crate::ops::readiness::degraded(&self.metrics, now_s, self.degraded_after)
    }

    /// Healthy when every loop has beaten recently.
    pub fn check(&self, now_ns: u64) -> Result<(), String> {
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
        "/api/status" => {
            let mut doc = health.board.snapshot(&health.metrics);
            doc.degraded = health.degraded();
            (
                "200 OK",
                "application/json",
                serde_json::to_string(&doc).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")),
            )
        }
        "/readyz" => {
            let why = health.degraded();
            if why.is_empty() {
                ("200 OK", "text/plain", "ready\n".into())
            } else {
                (
                    "503 Service Unavailable",
                    "text/plain",
                    format!("degraded\n{}\n", why.join("\n")),
                )
            }
        }
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
            "not found: try /metrics, /healthz or /readyz\n".into(),
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
            degraded_after: Duration::from_secs(60),
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
        // Alive but not ready: no broker yet. Liveness does not care.
        let readyz = get("/readyz").await;
        assert!(readyz.starts_with("HTTP/1.1 503"), "{readyz}");
        assert!(
            readyz.contains("not connected to the MQTT broker"),
            "{readyz}"
        );
        metrics.mqtt_connected.store(1, Relaxed);
        assert!(get("/readyz").await.starts_with("HTTP/1.1 200"));
        metrics.journal_stalled.store(1, Relaxed);
        assert!(get("/readyz").await.contains("journal cannot write"));
        assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
        let status = get("/api/status").await;
        let body = status.split("\r\n\r\n").nth(1).unwrap();
        let doc: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(doc["assets"], serde_json::json!([]));
        assert!(doc["degraded"][0].as_str().unwrap().contains("journal"));
        assert!(get("/").await.contains("text/html"));
        stop.cancel();
    }
}
