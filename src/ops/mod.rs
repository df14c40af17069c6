//! Running as a service: counters and their Prometheus rendering, the local
//! HTTP listener (`/metrics`, `/healthz`, the status page), and systemd
//! notifications.

pub(crate) mod http;
pub(crate) mod metrics;
pub(crate) mod notify;
pub(crate) mod status;

pub use metrics::{Histogram, Metrics};
pub use status::{AlertStatus, AssetStatus, ModelStatus, StatusBoard, StatusDoc};
