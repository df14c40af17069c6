//! The execution provider a configuration asks ONNX Runtime for. A plain
//! value read by the daemon's config, the trainer's command line and the
//! model loader alike, so it lives in the core, apart from ONNX Runtime.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Which execution provider the configuration asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProvider {
    /// CPU only.
    Cpu,
    /// CUDA, or fail to load.
    Cuda,
    /// CUDA when it can be registered, else CPU (with a warning).
    #[default]
    Auto,
}

impl FromStr for ExecutionProvider {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda),
            "auto" => Ok(Self::Auto),
            other => Err(format!(
                "unknown execution provider {other:?} (expected cpu, cuda or auto)"
            )),
        }
    }
}

impl fmt::Display for ExecutionProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
            Self::Auto => "auto",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_names_parse_and_print() {
        for (s, p) in [
            ("cpu", ExecutionProvider::Cpu),
            ("CUDA", ExecutionProvider::Cuda),
            (" auto ", ExecutionProvider::Auto),
        ] {
            assert_eq!(s.parse::<ExecutionProvider>().unwrap(), p);
            assert_eq!(p.to_string(), s.trim().to_lowercase());
        }
        assert!(
            "tpu"
                .parse::<ExecutionProvider>()
                .unwrap_err()
                .contains("tpu")
        );
        #[derive(Deserialize)]
        struct C {
            ep: ExecutionProvider,
        }
        let c: C = serde_json::from_str(r#"{"ep":"cuda"}"#).unwrap();
        assert_eq!(c.ep, ExecutionProvider::Cuda);
        assert!(serde_json::from_str::<C>(r#"{"ep":"Cuda"}"#).is_err());
    }
}
