//! The InfluxDB sink (docs/architecture.md §6, docs/influxdb.md): scores
//! and alerts become line protocol ([`line_protocol`]) and go through the
//! shared [`runner`](crate::sinks::runner) to the v2 or v1 write API
//! ([`writer`]). Connection errors, 5xx and 429 are retried with capped
//! exponential backoff while the bounded channel in front of the sink
//! holds the pipeline back (or the spool takes the batches); refused
//! credentials or a missing database keep every batch and mark the sink
//! unhealthy; points the database refuses one by one go to the
//! dead-letter file.

pub mod line_protocol;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::InfluxConfig;
use crate::ops::metrics::Metrics;
use crate::pipeline::SinkItem;
use crate::sinks::runner::{BatchSettings, BatchWriter, Runner, SinkReceiver, SinkStore};

pub use crate::sinks::runner::WriteFailure;
pub use line_protocol::{Measurements, format_output};
pub use writer::classify;
pub use writer::{InfluxWriter, SinkError};

/// Settings of the InfluxDB writer loop: when to send, and the measurement
/// names the lines carry.
#[derive(Debug, Clone)]
pub struct SinkSettings {
    pub batch: BatchSettings,
    pub measurements: Measurements,
}

impl SinkSettings {
    /// Batching, backoff and measurement names as `[influx]` sets them.
    pub fn from_config(c: &InfluxConfig) -> Self {
        Self {
            batch: BatchSettings {
                batch_size: c.batch_size,
                flush_interval: Duration::from_millis(c.flush_interval_ms),
                retry_min: Duration::from_millis(c.retry_min_ms),
                retry_max: Duration::from_millis(c.retry_max_ms),
            },
            measurements: Measurements {
                score: c.score_measurement.clone(),
                alert: c.alert_measurement.clone(),
                host: c.host_tag_value(),
                record: String::new(),
            },
        }
    }
}

/// Receives outputs until the channel closes, writing them as line
/// protocol through `writer` (see [`Runner::run`] for batching, the spool
/// the dead-letter file and barriers). On `stop` (the shutdown deadline) a batch still being
/// retried in memory is dropped and counted.
pub async fn run_sink<I: SinkItem>(
    writer: impl BatchWriter,
    settings: SinkSettings,
    rx: impl Into<SinkReceiver<I>>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    store: SinkStore,
) {
    let SinkSettings {
        batch,
        measurements,
    } = settings;
    Runner::new(writer, batch, metrics, stop, store)
        .run(rx, |out, buf| format_output(out, &measurements, buf))
        .await;
}
