//! The webhook alert output (docs/alerts.md §4): each alert message is
//! POSTed as JSON, with an optional bearer token read from a file, TLS
//! certificates verified (an extra CA may be given). 2xx is delivered;
//! connection errors, timeouts, 408, 429 and 5xx are retried; any other
//! answer refuses the alert for good.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{AlertMessage, AlertSender};
use crate::sinks::http::{self, CaFile, ClientOptions};
use crate::sinks::runner::WriteFailure;

/// Why a webhook output could not be built.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("alert output {name:?}: url {url:?}: {message}")]
    Url {
        name: String,
        url: String,
        message: String,
    },
    #[error("alert output {name:?}: cannot read {path}: {source}")]
    File {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("alert output {name:?}: {message}")]
    Client { name: String, message: String },
}

/// POSTs alert messages to one URL.
#[derive(Debug, Clone)]
pub struct WebhookSender {
    client: reqwest::Client,
    url: reqwest::Url,
    token: Option<String>,
}

impl WebhookSender {
    /// A sender for `url`, with the bearer token in `token_file` and an
    /// extra CA in `ca_file`; `timeout` bounds each attempt.
    ///
    /// # Errors
    /// A bad URL, an unreadable token or CA file, or a client that cannot
    /// be built.
    pub fn new(
        name: &str,
        url: &str,
        token_file: Option<&Path>,
        ca_file: Option<&Path>,
        timeout: Duration,
    ) -> Result<Self, WebhookError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| WebhookError::Url {
            name: name.into(),
            url: url.into(),
            message: e.to_string(),
        })?;
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| WebhookError::File {
                name: name.into(),
                path: path.to_path_buf(),
                source,
            })
        };
        let token = match token_file {
            Some(p) => Some(
                String::from_utf8_lossy(&read(p)?)
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
            ),
            None => None,
        };
        let ca = match ca_file {
            Some(p) => Some((p, read(p)?)),
            None => None,
        };
        let client = http::client(&ClientOptions {
            connect_timeout: timeout,
            timeout,
            pool_idle_timeout: None,
            ca: ca.as_ref().map(|(path, pem)| CaFile {
                key: "ca_file",
                path,
                pem,
            }),
        })
        .map_err(|e| WebhookError::Client {
            name: name.into(),
            message: e.to_string(),
        })?;
        Ok(Self {
            client,
            url: parsed,
            token,
        })
    }
}

impl AlertSender for WebhookSender {
    async fn send(&mut self, json: &str, _msg: &AlertMessage) -> Result<(), WriteFailure> {
        let mut req = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(json.to_string());
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| WriteFailure::Retry(http::error_chain(&e)))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        let why = format!(
            "HTTP {status}: {}",
            body.chars().take(200).collect::<String>()
        );
        if status.is_server_error() || matches!(status.as_u16(), 408 | 429) {
            Err(WriteFailure::Retry(why))
        } else {
            Err(WriteFailure::Reject(why))
        }
    }

    async fn idle(&mut self) {
        std::future::pending().await
    }
}
