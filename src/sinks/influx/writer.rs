//! The InfluxDB v2 write API client (`/api/v2/write`, nanosecond
//! precision) through the `influxdb2` crate: InfluxDB 2.x/3.x/Cloud/1.8+
//! and VictoriaMetrics. It sends one batch and sorts failures into retry
//! (connection errors, timeouts, 5xx, 429, 408) and reject (any other
//! 4xx); batching and retries are the runner's.

use std::time::Duration;

use crate::config::InfluxConfig;
use crate::sinks::runner::{BatchWriter, WriteFailure};

/// Why the sink could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("influx.url {url:?} is not a usable URL: {message}")]
    Url { url: String, message: String },
    #[error("cannot read influx.ca_file {path}: {source}")]
    Ca {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// Writes line-protocol batches to one bucket.
#[derive(Debug, Clone)]
pub struct InfluxWriter {
    client: influxdb2::Client,
    org: String,
    bucket: String,
}

impl InfluxWriter {
    /// Builds the client with connect and request timeouts (the crate sets
    /// none, and a silent server would hang a write forever).
    ///
    /// # Errors
    /// A bad URL (checked here because the crate panics on one), an
    /// unreadable CA file, or a client that cannot be built.
    pub fn new(cfg: &InfluxConfig, token: &str) -> Result<Self, SinkError> {
        let url = reqwest::Url::parse(&cfg.url).map_err(|e| SinkError::Url {
            url: cfg.url.clone(),
            message: e.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(SinkError::Url {
                url: cfg.url.clone(),
                message: "scheme must be http or https, with a host".into(),
            });
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(cfg.connect_timeout_ms))
            .timeout(Duration::from_millis(cfg.request_timeout_ms))
            .pool_idle_timeout(Duration::from_secs(30));
        if let Some(path) = &cfg.ca_file {
            let pem = std::fs::read(path).map_err(|source| SinkError::Ca {
                path: path.clone(),
                source,
            })?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                SinkError::Client(format!("influx.ca_file {}: {e}", path.display()))
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let client = influxdb2::ClientBuilder::with_builder(
            builder,
            cfg.url.as_str(),
            cfg.org.as_str(),
            token,
        )
        .build()
        .map_err(|e| SinkError::Client(e.to_string()))?;
        Ok(Self {
            client,
            org: cfg.org.clone(),
            bucket: cfg.bucket.clone(),
        })
    }
}

impl BatchWriter for InfluxWriter {
    async fn write(&self, body: String) -> Result<(), WriteFailure> {
        match self
            .client
            .write_line_protocol_with_precision(
                &self.org,
                &self.bucket,
                body,
                influxdb2::api::write::TimestampPrecision::Nanoseconds,
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(influxdb2::RequestError::Http { status, text }) => Err(http_failure(status, &text)),
            Err(e) => Err(WriteFailure::Retry(e.to_string())),
        }
    }
}

/// Sorts an HTTP error answer: the server may recover from 5xx, 429 and
/// 408; any other status means it refuses the data itself.
fn http_failure(status: reqwest::StatusCode, text: &str) -> WriteFailure {
    let msg = format!("HTTP {status}: {}", text.trim());
    if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
        WriteFailure::Retry(msg)
    } else {
        WriteFailure::Reject(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_url_is_an_error_not_a_panic() {
        let cfg: InfluxConfig = serde_json::from_value(serde_json::json!({
            "url": "htp:/nowhere", "bucket": "b"
        }))
        .unwrap();
        assert!(InfluxWriter::new(&cfg, "").is_err());
    }
}
