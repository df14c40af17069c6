//! Running as a service: counters and their Prometheus rendering, the local
//! HTTP listener (`/metrics`, `/healthz`, the status page), and systemd
//! notifications.

pub mod http;
pub mod metrics;
pub mod notify;
pub mod status;
