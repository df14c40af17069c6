//! Running as a service: counters and their Prometheus rendering, the local
//! HTTP listener (`/metrics`, `/healthz`, `/readyz`, the status page),
//! readiness, systemd notifications, and log output (journald's form
//! under systemd).

pub(crate) mod http;
pub(crate) mod logging;
pub(crate) mod metrics;
pub(crate) mod notify;
pub(crate) mod readiness;
pub(crate) mod status;

pub use logging::{Journald, init_logging, stderr_is_journal};
pub use metrics::{Histogram, Metrics};
pub use readiness::{degraded, status_line};
pub use status::{AlertStatus, AssetStatus, ModelStatus, StatusBoard, StatusDoc};
