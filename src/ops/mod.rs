//! Running as a service: counters and their Prometheus rendering, the local
//! HTTP listener (`/metrics`, `/healthz`, `/readyz`, the status page),
//! readiness, and systemd notifications.

pub(crate) mod http;
pub(crate) mod metrics;
pub(crate) mod notify;
pub(crate) mod readiness;
pub(crate) mod status;

pub use metrics::{Histogram, Metrics};
pub use readiness::{degraded, status_line};
pub use status::{AlertStatus, AssetStatus, ModelStatus, StatusBoard, StatusDoc};
