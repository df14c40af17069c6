//! The daemon's configuration: TOML file plus `ANOMALYD__SECTION__KEY`
//! environment overrides, parsed into `deny_unknown_fields` structs and then
//! validated as a whole, so the operator sees every problem with its key path
//! at once, then turned into typed [`Settings`] (parsed topic filters, QoS,
//! durations) the way ripgrep turns raw arguments into high-level ones.
//!
//! - `schema/`: the structs the file deserialises into, with defaults
//!   (`mqtt.rs`, `influx.rs`, `state.rs`, the rest in `mod.rs`).
//! - `validate.rs`: every rule, with its key path.
//! - `topics.rs`: topic filters with named segments, parsed once.
//! - `settings.rs`: the validated, typed value the daemon runs on.

mod alerts;
mod detector;
mod partitions;
mod schema;
mod settings;
mod topics;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

pub use alerts::{ALARMS, AlarmRule, AlertOutputConfig, AlertOutputKind, AlertsConfig, STATES};
pub use detector::DetectorConfig;
pub use partitions::{PARTITION_SEGMENT, PartitionsConfig, filter_for, parse_host};
pub use schema::*;
pub use settings::{Qos, Settings};
pub use topics::{TopicError, TopicMapping, TopicPattern};

/// One problem found in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `mqtt.port` or `topics[1].filter`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("config {origin} has {} problem(s):\n  {}", problems.len(), problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    Invalid {
        origin: String,
        problems: Vec<Problem>,
    },
}

impl Config {
    /// Loads `path`, applies `ANOMALYD__SECTION__KEY` environment overrides,
    /// and validates the result.
    ///
    /// # Errors
    /// Unreadable file, TOML syntax, unknown or mistyped keys (with their
    /// path), and every failed validation rule.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("ANOMALYD__"))
            .collect();
        let mut settings = Self::from_toml_with_env(&text, &path.display().to_string(), &env)?;
        settings
            .config
            .resolve_relative_paths(path.parent().unwrap_or(Path::new(".")));
        Ok(settings)
    }

    /// Parses TOML text plus explicit environment overrides (pure; tests
    /// call it directly).
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn from_toml_with_env(
        text: &str,
        origin: &str,
        env: &[(String, String)],
    ) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml));
        for (k, v) in env {
            let Some(rest) = k.strip_prefix("ANOMALYD__") else {
                continue;
            };
            let key = rest.to_ascii_lowercase().replace("__", ".");
            builder = builder
                .set_override(key.clone(), typed_env_value(v))
                .map_err(|e| ConfigError::Parse {
                    origin: format!("{origin} (environment {k})"),
                    message: e.to_string(),
                })?;
        }
        let merged: serde_json::Value =
            builder
                .build()
                .and_then(|c| c.try_deserialize())
                .map_err(|e| ConfigError::Parse {
                    origin: origin.to_string(),
                    message: e.to_string(),
                })?;
        let cfg: Config = serde_path_to_error::deserialize(&merged).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::Invalid {
                origin: origin.to_string(),
                problems: vec![Problem {
                    key: if path == "." {
                        "(top level)".into()
                    } else {
                        path
                    },
                    message: e.into_inner().to_string(),
                }],
            }
        })?;
        let (topics, problems) = cfg.check();
        if problems.is_empty() {
            Ok(Settings::new(cfg, topics))
        } else {
            Err(ConfigError::Invalid {
                origin: origin.to_string(),
                problems,
            })
        }
    }

    fn resolve_relative_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        };
        for m in &mut self.models {
            fix(&mut m.path);
        }
        for p in [
            &mut self.mqtt.password_file,
            &mut self.mqtt.tls.ca_file,
            &mut self.mqtt.tls.client_cert,
            &mut self.mqtt.tls.client_key,
            &mut self.influx.token_file,
            &mut self.influx.ca_file,
            &mut self.runtime.library_path,
            &mut self.spool.directory,
            &mut self.state.directory,
        ]
        .into_iter()
        .flatten()
        {
            fix(p);
        }
        self.alerts.resolve_relative_paths(base);
    }

    /// The MQTT password, from the config or its file.
    ///
    /// # Errors
    /// The password file cannot be read, or is empty.
    pub fn mqtt_password(&self) -> Result<Option<Secret>, ConfigError> {
        read_secret(
            self.mqtt.password.as_ref(),
            self.mqtt.password_file.as_deref(),
            "mqtt.password_file",
        )
    }

    /// How the InfluxDB sink authenticates: a token (config or file), a
    /// username and password (v1), or nothing.
    ///
    /// # Errors
    /// A token or password file cannot be read, or is empty.
    pub fn influx_auth(&self) -> Result<InfluxAuth, ConfigError> {
        let ix = &self.influx;
        if let Some(username) = &ix.username {
            let password = read_secret(
                ix.password.as_ref(),
                ix.password_file.as_deref(),
                "influx.password_file",
            )?
            .unwrap_or_default();
            return Ok(InfluxAuth::Basic {
                username: username.clone(),
                password,
            });
        }
        Ok(
            match read_secret(
                ix.token.as_ref(),
                ix.token_file.as_deref(),
                "influx.token_file",
            )? {
                Some(t) if !t.is_empty() => InfluxAuth::Token(t),
                _ => InfluxAuth::None,
            },
        )
    }

    /// The secret files this configuration reads, with their key and the
    /// path actually read (see [`credential_path`]).
    pub fn credential_files(&self) -> Vec<(&'static str, PathBuf, CredentialSource)> {
        [
            ("mqtt.password_file", &self.mqtt.password_file),
            ("influx.token_file", &self.influx.token_file),
            ("influx.password_file", &self.influx.password_file),
        ]
        .into_iter()
        .filter_map(|(key, p)| {
            let (path, source) = credential_path(p.as_deref()?);
            Some((key, path, source))
        })
        .collect()
    }
}

/// How the InfluxDB sink authenticates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum InfluxAuth {
    #[default]
    None,
    /// `Authorization: Token ...` (v2; v1 on InfluxDB 1.8+).
    Token(Secret),
    /// HTTP basic auth (InfluxDB 1.x users).
    Basic { username: String, password: Secret },
}

/// The systemd unit's `LoadCredential=` sources (`systemd/anomalyd.service`).
pub const UNIT_CREDENTIALS_DIR: &str = "/etc/anomalyd/credentials";

/// Where a secret file is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialSource {
    /// The configured path itself.
    Configured,
    /// `$CREDENTIALS_DIRECTORY` (systemd sets it for the service).
    CredentialsDirectory,
    /// The file the unit loads the credential from ([`UNIT_CREDENTIALS_DIR`]),
    /// for a `/run/credentials/...` path read outside the service.
    UnitSource,
}

impl fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Configured => "as configured",
            Self::CredentialsDirectory => "from $CREDENTIALS_DIRECTORY",
            Self::UnitSource => {
                "from the unit's LoadCredential source, as the service is not running"
            }
        })
    }
}

/// The file to read for a configured secret path. A path under
/// `/run/credentials/<unit>/` exists only while the service runs: it is
/// read from `$CREDENTIALS_DIRECTORY` when set, else from the file the
/// unit loads it from in [`UNIT_CREDENTIALS_DIR`], so `check-config` and a
/// daemon started by hand read the same secret the service will.
pub fn credential_path(configured: &Path) -> (PathBuf, CredentialSource) {
    let name = configured
        .strip_prefix("/run/credentials")
        .ok()
        .and_then(|rest| {
            let mut parts = rest.components();
            parts.next()?;
            let name = parts.as_path();
            (!name.as_os_str().is_empty()).then(|| name.to_path_buf())
        });
    let Some(name) = name else {
        return (configured.to_path_buf(), CredentialSource::Configured);
    };
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty()) {
        return (
            PathBuf::from(dir).join(name),
            CredentialSource::CredentialsDirectory,
        );
    }
    if configured.exists() {
        return (configured.to_path_buf(), CredentialSource::Configured);
    }
    (
        Path::new(UNIT_CREDENTIALS_DIR).join(name),
        CredentialSource::UnitSource,
    )
}

fn read_secret(
    inline: Option<&Secret>,
    file: Option<&Path>,
    key: &str,
) -> Result<Option<Secret>, ConfigError> {
    if let Some(configured) = file {
        let (path, _) = credential_path(configured);
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let secret = text.trim_end_matches(['\r', '\n']);
        if secret.trim().is_empty() {
            return Err(ConfigError::Invalid {
                origin: path.display().to_string(),
                problems: vec![Problem {
                    key: key.to_string(),
                    message: format!("{} is empty: write the secret into it", path.display()),
                }],
            });
        }
        return Ok(Some(Secret::new(secret)));
    }
    Ok(inline.cloned())
}

/// Environment values are strings; numbers and booleans are typed so that
/// `ANOMALYD__MQTT__PORT=1884` overrides an integer field.
fn typed_env_value(v: &str) -> config::Value {
    if let Ok(i) = v.parse::<i64>() {
        return i.into();
    }
    if let Ok(f) = v.parse::<f64>()
        && v.contains('.')
    {
        return f.into();
    }
    match v {
        "true" => true.into(),
        "false" => false.into(),
        _ => v.into(),
    }
}

#[cfg(test)]
pub(crate) mod tests;
