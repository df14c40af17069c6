//! The daemon's configuration: TOML file plus `ANOMALYD__SECTION__KEY`
//! environment overrides, parsed into `deny_unknown_fields` structs and then
//! validated as a whole, so the operator sees every problem with its key path
//! at once, then turned into typed [`Settings`] (parsed topic filters, QoS,
//! durations) the way ripgrep turns raw arguments into high-level ones.
//!
//! - `schema.rs`: the structs the file deserialises into, with defaults.
//! - `validate.rs`: every rule, with its key path.
//! - `topics.rs`: topic filters with named segments, parsed once.
//! - `settings.rs`: the validated, typed value the daemon runs on.

mod alerts;
mod schema;
mod settings;
mod topics;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

pub use alerts::{ALARMS, AlarmRule, AlertOutputConfig, AlertOutputKind, AlertsConfig, STATES};
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
    /// The password file cannot be read.
    pub fn mqtt_password(&self) -> Result<Option<Secret>, ConfigError> {
        read_secret(
            self.mqtt.password.as_ref(),
            self.mqtt.password_file.as_deref(),
        )
    }

    /// The InfluxDB token, from the config or its file (empty when neither).
    ///
    /// # Errors
    /// The token file cannot be read.
    pub fn influx_token(&self) -> Result<Secret, ConfigError> {
        Ok(read_secret(
            self.influx.token.as_ref(),
            self.influx.token_file.as_deref(),
        )?
        .unwrap_or_default())
    }
}

fn read_secret(
    inline: Option<&Secret>,
    file: Option<&Path>,
) -> Result<Option<Secret>, ConfigError> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        return Ok(Some(Secret::new(text.trim_end_matches(['\r', '\n']))));
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
