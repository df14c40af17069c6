//! The publisher loop: paces rows, hands their messages to the connection
//! task, waits for the broker's acknowledgements and reports what was sent.

use crate::config::Qos;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use rumqttc::{AsyncClient, QoS};
use tokio::sync::watch;
use tokio::time::Instant;

use super::link::{LinkStatus, REQUEST_CAPACITY, SHUTDOWN_GRACE, drive, link_error, mqtt_options};
use super::options::check_options;
use super::rows::Rows;
use super::{MessageFormatter, Pace, SimulateError, SimulateOptions, asset_name};
use crate::core::timestamp::now_ns;

/// What a run published.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulateReport {
    /// Rows published per asset.
    pub rows: u64,
    pub assets: usize,
    /// MQTT messages published.
    pub messages: u64,
    /// Channel values published (NaN cells are not sent).
    pub readings: u64,
    /// Messages the broker acknowledged (QoS 1/2; 0 for QoS 0).
    pub acknowledged: u64,
    /// Times the connection was lost and made again.
    pub reconnects: u64,
    /// From the first publish until the last acknowledgement (QoS 1/2) or
    /// the last message written (QoS 0).
    pub elapsed: Duration,
    pub messages_per_sec: f64,
    pub readings_per_sec: f64,
    /// Stopped by the shutdown future before all rows were sent.
    pub interrupted: bool,
}

impl fmt::Display for SimulateReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "simulate: {} rows x {} assets = {} messages ({} readings) in {:.2} s: {:.0} msg/s, {:.0} readings/s",
            self.rows,
            self.assets,
            self.messages,
            self.readings,
            self.elapsed.as_secs_f64(),
            self.messages_per_sec,
            self.readings_per_sec
        )?;
        if self.acknowledged > 0 {
            write!(f, ", {} acknowledged", self.acknowledged)?;
        }
        if self.reconnects > 0 {
            write!(f, ", {} reconnect(s)", self.reconnects)?;
        }
        if self.interrupted {
            write!(f, " (interrupted)")?;
        }
        Ok(())
    }
}

/// When row `row` (event-time offset `row_offset_ms` from the first row) is
/// due, relative to the start of publishing; `None` means at once.
pub fn due_after(pace: Pace, row: usize, row_offset_ms: i64) -> Option<Duration> {
    match pace {
        Pace::Rate(per_sec) => Some(Duration::from_secs_f64(row as f64 / per_sec)),
        Pace::Speed(multiple) => Some(Duration::from_secs_f64(
            row_offset_ms.max(0) as f64 / 1000.0 / multiple,
        )),
        Pace::AsFastAsPossible => None,
    }
}

/// With `spread`, how long after its row is due asset `asset` of `assets`
/// publishes it: its share of one row interval (zero without a rate).
pub fn spread_offset(pace: Pace, asset: usize, assets: usize) -> Duration {
    match pace {
        Pace::Rate(per_sec) if assets > 0 => {
            Duration::from_secs_f64(asset as f64 / assets as f64 / per_sec)
        }
        _ => Duration::ZERO,
    }
}

/// Publishes the rows described by `opts` until they are all sent (and, for
/// QoS 1/2, acknowledged) or `shutdown` resolves.
///
/// # Errors
/// Invalid options, a log that cannot be loaded, TLS files that cannot be
/// read, the first connection failing (e.g. refused credentials), or the
/// broker staying unreachable for longer than [`RECONNECT_GIVE_UP`](super::RECONNECT_GIVE_UP).
pub async fn simulate(
    opts: SimulateOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<SimulateReport, SimulateError> {
    check_options(&opts)?;
    let (mut rows, channels) = Rows::new(&opts)?;
    let assets: Vec<String> = (0..opts.assets)
        .map(|a| asset_name(&opts.asset_prefix, a))
        .collect();
    let formatter = MessageFormatter::new(&opts.topic_template, opts.layout, &assets, &channels)?;
    let row_limit = match (opts.rows, rows.rows_available()) {
        (Some(n), Some(available)) => Some(n.min(available)),
        (n, available) => n.or(available),
    };
    let start_ts = match (opts.start_ts_ms, opts.pace, rows.first_ts_ms()) {
        (Some(ts), _, _) => ts,
        (None, Pace::AsFastAsPossible, Some(own)) => own,
        _ => now_ns().div_euclid(1_000_000),
    };
    // Options were validated: the level is 0, 1 or 2.
    let qos = crate::sources::mqtt::qos(Qos::from_level(opts.qos).unwrap_or(Qos::AtLeastOnce));
    let broker = format!("{}:{}", opts.broker_host, opts.broker_port);

    let (client, eventloop) = AsyncClient::new(mqtt_options(&opts)?, REQUEST_CAPACITY);
    let (status_tx, mut status) = watch::channel(LinkStatus::default());
    let mut link = tokio::spawn(drive(eventloop, status_tx, broker.clone()));

    let mut report = SimulateReport {
        rows: 0,
        assets: opts.assets,
        messages: 0,
        readings: 0,
        acknowledged: 0,
        reconnects: 0,
        elapsed: Duration::ZERO,
        messages_per_sec: 0.0,
        readings_per_sec: 0.0,
        interrupted: false,
    };
    tokio::pin!(shutdown);
    let connected = tokio::select! {
        () = &mut shutdown => None,
        r = status.wait_for(|s| s.connected) => Some(r.is_ok()),
    };
    match connected {
        None => {
            link.abort();
            report.interrupted = true;
            return Ok(report);
        }
        Some(false) => return Err(link_error(link).await),
        Some(true) => {}
    }
    tracing::info!(%broker, assets = opts.assets, rows = ?row_limit, "simulate: publishing");

    let started = Instant::now();
    let mut batch = Vec::new();
    'rows: for i in 0.. {
        if row_limit.is_some_and(|n| i >= n) {
            break;
        }
        let Some(offset) = rows.offset_ms(i) else {
            break;
        };
        if let Some(due) = due_after(opts.pace, i, offset) {
            let at = started + due;
            if at > Instant::now() {
                tokio::select! {
                    () = &mut shutdown => {
                        report.interrupted = true;
                        break 'rows;
                    }
                    () = tokio::time::sleep_until(at) => {}
                }
            }
        }
        let ts = start_ts.saturating_add(offset);
        let row_due = due_after(opts.pace, i, offset).map(|d| started + d);
        for asset in 0..opts.assets {
            if let Some(row_at) = row_due.filter(|_| opts.spread) {
                let at = row_at + spread_offset(opts.pace, asset, opts.assets);
                if at > Instant::now() {
                    tokio::select! {
                        () = &mut shutdown => {
                            report.interrupted = true;
                            break 'rows;
                        }
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
            }
            let values = rows.values(asset, i);
            report.readings += formatter.format_row(asset, ts, values, &mut batch) as u64;
            for (topic, payload) in batch.drain(..) {
                tokio::select! {
                    biased;
                    () = &mut shutdown => {
                        report.interrupted = true;
                        break 'rows;
                    }
                    sent = client.publish(topic, qos, false, payload) => {
                        if sent.is_err() {
                            return Err(link_error(link).await);
                        }
                        report.messages += 1;
                    }
                }
            }
        }
        report.rows += 1;
    }

    // With QoS 1/2 the run is done when the broker has everything.
    if qos != QoS::AtMostOnce {
        let expected = report.messages;
        let all_acked = |s: &LinkStatus| s.acked >= expected;
        let mut waited = Ok(Ok(()));
        if !report.interrupted {
            tokio::select! {
                () = &mut shutdown => report.interrupted = true,
                r = status.wait_for(all_acked) => waited = Ok(r.map(|_| ())),
            }
        }
        if report.interrupted {
            waited = tokio::time::timeout(SHUTDOWN_GRACE, status.wait_for(all_acked))
                .await
                .map(|r| r.map(|_| ()));
        }
        if let Ok(Err(_)) = waited {
            return Err(link_error(link).await);
        }
        report.acknowledged = status.borrow().acked;
    }
    report.reconnects = status.borrow().connects.saturating_sub(1);

    // Requests are handled in order: the disconnect goes out after every
    // queued publish, so QoS 0 messages are written before we return.
    if client.disconnect().await.is_ok() {
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut link).await {
            Ok(Ok(Err(e))) if !report.interrupted => return Err(e),
            Ok(_) => {}
            Err(_) => link.abort(),
        }
    } else if !report.interrupted {
        return Err(link_error(link).await);
    }

    // For QoS 0 this includes writing out the queue, so the rate is honest.
    report.elapsed = started.elapsed();
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    report.messages_per_sec = report.messages as f64 / secs;
    report.readings_per_sec = report.readings as f64 / secs;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing() {
        let ms = Duration::from_millis;
        assert_eq!(due_after(Pace::Rate(10.0), 5, 999), Some(ms(500)));
        assert_eq!(due_after(Pace::Rate(0.5), 3, 0), Some(ms(6000)));
        assert_eq!(due_after(Pace::Speed(2.0), 4, 4000), Some(ms(2000)));
        assert_eq!(due_after(Pace::Speed(1.0), 1, -10), Some(ms(0)));
        assert_eq!(due_after(Pace::AsFastAsPossible, 1_000_000, 5), None);
        assert_eq!(spread_offset(Pace::Rate(1.0), 50, 200), ms(250));
        assert_eq!(spread_offset(Pace::Rate(10.0), 0, 200), ms(0));
        assert_eq!(spread_offset(Pace::AsFastAsPossible, 5, 10), ms(0));
    }
}
