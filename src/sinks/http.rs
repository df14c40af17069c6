//! The HTTP client of the daemon's two HTTP outputs, the InfluxDB writer
//! and the webhook alert output: reqwest 0.12 on the process's one rustls
//! 0.23, the one MQTT also uses (docs/influxdb.md §8). Certificates are
//! verified against the webpki roots plus an optional CA file. Failures
//! are reported with their causes ([`error_chain`]).

use std::path::Path;
use std::time::Duration;

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{key} {path}: not a PEM CA certificate: {message}")]
    Ca {
        key: String,
        path: String,
        message: String,
    },
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

/// What a client is built with.
#[derive(Debug, Clone, Copy)]
pub struct ClientOptions<'a> {
    /// Bounds establishing a connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// Bounds a whole request, answer included.
    pub timeout: Duration,
    /// Idle pooled connections are closed after this long.
    pub pool_idle_timeout: Option<Duration>,
    /// Extra CAs to trust.
    pub ca: Option<CaFile<'a>>,
}

/// A CA file's contents: one PEM certificate or several.
#[derive(Debug, Clone, Copy)]
pub struct CaFile<'a> {
    /// The config key that named it, for errors (`influx.ca_file`).
    pub key: &'a str,
    pub path: &'a Path,
    pub pem: &'a [u8],
}

/// A client with the timeouts and CA of `opts`.
///
/// reqwest is built without a crypto provider of its own: it takes the
/// process's, and panics when there is none. aws-lc-rs, the provider the
/// MQTT client names (`sources::mqtt::install_tls_provider`), is installed
/// first unless one already is.
///
/// # Errors
/// A CA file that is not PEM, or a client that cannot be built.
pub fn client(opts: &ClientOptions<'_>) -> Result<reqwest::Client, ClientError> {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err: another thread installed one meanwhile, which serves as well.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
    let mut builder = reqwest::Client::builder()
        .connect_timeout(opts.connect_timeout)
        .timeout(opts.timeout);
    if let Some(idle) = opts.pool_idle_timeout {
        builder = builder.pool_idle_timeout(idle);
    }
    if let Some(CaFile { key, path, pem }) = opts.ca {
        let bad = |message: String| ClientError::Ca {
            key: key.into(),
            path: path.display().to_string(),
            message,
        };
        // Parsed here, not when the client is built, so that a file with
        // no certificate in it is an error rather than no extra root.
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no certificate in it".into()));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| ClientError::Build(e.to_string()))
}

/// The error and its causes on one line ("error sending request for url
/// (...): client error (Connect): tcp connect error: Connection refused"):
/// reqwest's own message names neither the cause nor the errno.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(ca: Option<CaFile<'_>>) -> ClientOptions<'_> {
        ClientOptions {
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            pool_idle_timeout: None,
            ca,
        }
    }

    #[test]
    fn builds_whether_or_not_a_provider_was_installed() {
        // Nothing here went through MQTT's TLS set-up: the client installs
        // the provider itself instead of panicking inside reqwest.
        assert!(client(&opts(None)).is_ok());
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }

    #[test]
    fn a_ca_file_that_is_not_pem_is_an_error_naming_it() {
        for pem in [
            &b"not a certificate"[..],
            b"-----BEGIN CERTIFICATE-----\nAAAA\n",
        ] {
            let ca = CaFile {
                key: "influx.ca_file",
                path: Path::new("/etc/ca.pem"),
                pem,
            };
            let err = client(&opts(Some(ca))).err().map(|e| e.to_string());
            let err = err.unwrap_or_default();
            assert!(err.starts_with("influx.ca_file /etc/ca.pem: "), "{err}");
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_reported_with_its_cause() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        // The listener is dropped: nothing listens on the port any more.
        let err = client(&opts(None))
            .unwrap()
            .post(format!("http://127.0.0.1:{port}/write"))
            .send()
            .await
            .unwrap_err();
        let chain = error_chain(&err);
        assert!(chain.contains("Connection refused"), "{chain}");
    }
}
