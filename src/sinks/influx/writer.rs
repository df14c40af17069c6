//! The InfluxDB write client: one POST of a line-protocol batch to the v2
//! write API (`/api/v2/write`: InfluxDB 2.x/3.x/Cloud/1.8+,
//! VictoriaMetrics) or the v1 one (`/write`: InfluxDB 1.x), nanosecond
//! precision, optionally gzipped, with connect and request timeouts. It
//! sorts each failure by what the runner should do with it
//! (docs/influxdb.md §2); batching, retries, splitting and the spool are
//! the runner's.

use std::io::Write as _;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use tokio::sync::watch;

use crate::config::{InfluxApi, InfluxAuth, InfluxConfig};
use crate::sinks::http::{self, CaFile, ClientOptions};
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
    #[error(transparent)]
    Client(#[from] http::ClientError),
}

/// Writes line-protocol batches to one bucket (v2) or database (v1).
#[derive(Debug, Clone)]
pub struct InfluxWriter {
    client: reqwest::Client,
    /// The write endpoint with its query string.
    endpoint: reqwest::Url,
    /// The latest credentials: a reload (SIGHUP) sends new ones.
    auth: watch::Receiver<InfluxAuth>,
    gzip: bool,
}

impl InfluxWriter {
    /// Builds the client with connect and request timeouts (a silent
    /// server would otherwise hang a write forever). `auth` carries the
    /// credentials; whoever holds its sender may replace them.
    ///
    /// # Errors
    /// A bad URL, an unreadable CA file, or a client that cannot be built.
    pub fn new(cfg: &InfluxConfig, auth: watch::Receiver<InfluxAuth>) -> Result<Self, SinkError> {
        let endpoint = write_endpoint(cfg)?;
        let ca = match &cfg.ca_file {
            Some(path) => Some((
                path.as_path(),
                std::fs::read(path).map_err(|source| SinkError::Ca {
                    path: path.clone(),
                    source,
                })?,
            )),
            None => None,
        };
        let client = http::client(&ClientOptions {
            connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
            timeout: Duration::from_millis(cfg.request_timeout_ms),
            pool_idle_timeout: Some(Duration::from_secs(30)),
            ca: ca.as_ref().map(|(path, pem)| CaFile {
                key: "influx.ca_file",
                path,
                pem,
            }),
        })?;
        Ok(Self {
            client,
            endpoint,
            auth,
            gzip: cfg.gzip,
        })
    }

    /// The URL batches are posted to.
    pub fn endpoint(&self) -> &reqwest::Url {
        &self.endpoint
    }
}

/// `/api/v2/write?org=&bucket=&precision=ns` or
/// `/write?db=&rp=&precision=n` under the configured URL (which may carry
/// a path prefix, e.g. behind a reverse proxy).
fn write_endpoint(cfg: &InfluxConfig) -> Result<reqwest::Url, SinkError> {
    let bad = |message: String| SinkError::Url {
        url: cfg.url.clone(),
        message,
    };
    let mut url = reqwest::Url::parse(&cfg.url).map_err(|e| bad(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(bad("scheme must be http or https, with a host".into()));
    }
    let path = format!(
        "{}/{}",
        url.path().trim_end_matches('/'),
        match cfg.api {
            InfluxApi::V2 => "api/v2/write",
            InfluxApi::V1 => "write",
        }
    );
    url.set_path(&path);
    {
        let mut q = url.query_pairs_mut();
        q.clear();
        match cfg.api {
            InfluxApi::V2 => {
                q.append_pair("org", &cfg.org)
                    .append_pair("bucket", &cfg.bucket)
                    .append_pair("precision", "ns");
            }
            InfluxApi::V1 => {
                q.append_pair("db", &cfg.database);
                if let Some(rp) = cfg.retention_policy.as_deref().filter(|r| !r.is_empty()) {
                    q.append_pair("rp", rp);
                }
                q.append_pair("precision", "n");
            }
        }
    }
    Ok(url)
}

impl BatchWriter for InfluxWriter {
    async fn write(&self, body: String) -> Result<(), WriteFailure> {
        let mut req = self
            .client
            .post(self.endpoint.clone())
            .header(CONTENT_TYPE, "text/plain; charset=utf-8");
        // Cloned before the await: a reload may replace them meanwhile.
        let auth = self.auth.borrow().clone();
        match auth {
            InfluxAuth::None => {}
            InfluxAuth::Token(t) => {
                req = req.header(AUTHORIZATION, format!("Token {}", t.expose()))
            }
            InfluxAuth::Basic { username, password } => {
                req = req.basic_auth(username, Some(password.expose()));
            }
        }
        req = if self.gzip {
            req.header(CONTENT_ENCODING, "gzip").body(gzip(&body))
        } else {
            req.body(body)
        };
        let resp = req
            .send()
            .await
            .map_err(|e| WriteFailure::Retry(http::error_chain(&e)))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp.text().await.unwrap_or_default();
        Err(classify(status.as_u16(), &text))
    }
}

fn gzip(body: &str) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(body.as_bytes());
    enc.finish().unwrap_or_default()
}

/// Sorts an HTTP error answer (docs/influxdb.md §2): the server may
/// recover by itself from 5xx, 429 and 408; 413 asks for smaller bodies;
/// 400 and 422 refuse some points of the batch; anything else (401, 403,
/// 404, ...) refuses every write until an operator fixes the credentials
/// or the database.
pub fn classify(status: u16, text: &str) -> WriteFailure {
    let msg = format!("HTTP {status}: {}", text.trim());
    match status {
        408 | 429 | 500..=599 => WriteFailure::Retry(msg),
        413 => WriteFailure::TooLarge(msg),
        400 | 422 => WriteFailure::Reject(msg),
        _ => WriteFailure::Refused(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: serde_json::Value) -> InfluxConfig {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn bad_url_is_an_error_not_a_panic() {
        let cfg = config(serde_json::json!({"url": "htp:/nowhere", "bucket": "b"}));
        let (_tx, rx) = watch::channel(InfluxAuth::None);
        assert!(InfluxWriter::new(&cfg, rx).is_err());
    }

    #[test]
    fn endpoints_per_api() {
        let v2 = config(serde_json::json!({
            "url": "https://db.example:8086/", "org": "o p", "bucket": "b"
        }));
        assert_eq!(
            write_endpoint(&v2).unwrap().as_str(),
            "https://db.example:8086/api/v2/write?org=o+p&bucket=b&precision=ns"
        );
        let v1 = config(serde_json::json!({
            "url": "http://h:8086/influx", "api": "v1", "database": "plant",
            "retention_policy": "week"
        }));
        assert_eq!(
            write_endpoint(&v1).unwrap().as_str(),
            "http://h:8086/influx/write?db=plant&rp=week&precision=n"
        );
    }

    #[test]
    fn statuses_sort_into_what_the_runner_does() {
        use WriteFailure::*;
        for (status, want) in [
            (503, Retry(String::new())),
            (429, Retry(String::new())),
            (413, TooLarge(String::new())),
            (400, Reject(String::new())),
            (422, Reject(String::new())),
            (401, Refused(String::new())),
            (403, Refused(String::new())),
            (404, Refused(String::new())),
        ] {
            let got = classify(status, "x");
            assert_eq!(
                std::mem::discriminant(&got),
                std::mem::discriminant(&want),
                "{status}: {got:?}"
            );
        }
    }

    #[test]
    fn gzip_round_trips() {
        use std::io::Read as _;
        let body = "m,a=1 f=1 1\n".repeat(100);
        let mut out = String::new();
        flate2::read::GzDecoder::new(&gzip(&body)[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, body);
    }
}
