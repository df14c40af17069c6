//! Alert outputs (docs/alerts.md §4-§5): each configured output delivers
//! the alert messages of the outbox, in order, through its own
//! [`AlertSender`] (an MQTT topic, a webhook), skipping those its filter
//! leaves out, retrying failures with capped exponential backoff and
//! recording in the outbox how far it got. At least once: an alert leaves
//! the outbox for an output only once that output confirmed it.

pub mod mqtt;
pub mod payload;
pub mod webhook;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::AlertOutputConfig;
use crate::ops::metrics::AlertOutputCounters;
use crate::pipeline::glob_match;
use crate::sinks::runner::WriteFailure;
use crate::state::Outbox;
pub use payload::{ActiveAlarms, AlertMessage, ChannelError};

/// Delivers one alert message somewhere.
pub trait AlertSender: Send {
    /// Sends `json` (the serialised `msg`) and returns once the receiver
    /// confirmed it.
    ///
    /// # Errors
    /// [`WriteFailure`] says whether retrying can help.
    fn send(
        &mut self,
        json: &str,
        msg: &AlertMessage,
    ) -> impl Future<Output = Result<(), WriteFailure>> + Send;

    /// Keeps the connection alive between alerts; resolves when there is
    /// nothing left to do for it (never, for a connectionless sender).
    fn idle(&mut self) -> impl Future<Output = ()> + Send;
}

/// Which alerts an output takes.
#[derive(Debug, Clone)]
pub struct AlertFilter {
    assets: String,
    alarms: Vec<String>,
    states: Vec<String>,
}

impl AlertFilter {
    pub fn from_config(c: &AlertOutputConfig) -> Self {
        Self {
            assets: c.assets.clone(),
            alarms: c.alarms.clone(),
            states: c.states.clone(),
        }
    }

    /// True when the output takes `m`.
    pub fn accepts(&self, m: &AlertMessage) -> bool {
        glob_match(&self.assets, &m.asset)
            && (self.alarms.is_empty() || self.alarms.contains(&m.alarm))
            && (self.states.is_empty() || self.states.contains(&m.state))
    }
}

/// One output's delivery loop, until `stop`.
#[derive(Debug, Clone)]
pub struct OutputLoop {
    pub name: String,
    pub filter: AlertFilter,
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl OutputLoop {
    /// Delivers the outbox's alerts through `sender` until `stop`; what is
    /// not delivered by then stays in the outbox for the next start.
    pub async fn run(
        self,
        mut sender: impl AlertSender,
        outbox: Arc<Outbox>,
        counters: Arc<AlertOutputCounters>,
        stop: CancellationToken,
    ) {
        let mut wake = outbox.subscribe();
        let mut delay = self.retry_min;
        let mut last_error: Option<std::time::Instant> = None;
        loop {
            counters.pending.store(outbox.pending(&self.name), Relaxed);
            let Some((seq, json)) = outbox.next_after(outbox.cursor(&self.name)) else {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    r = wake.changed() => {
                        if r.is_err() {
                            return;
                        }
                    }
                    () = sender.idle() => {}
                }
                continue;
            };
            let msg = match serde_json::from_str::<AlertMessage>(&json) {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(output = %self.name, seq, error = %e, "unreadable alert in the outbox; skipped");
                    counters.rejected.fetch_add(1, Relaxed);
                    self.done(&outbox, seq);
                    continue;
                }
            };
            if !self.filter.accepts(&msg) {
                counters.filtered.fetch_add(1, Relaxed);
                self.done(&outbox, seq);
                continue;
            }
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                r = sender.send(&json, &msg) => r,
            };
            match result {
                Ok(()) => {
                    counters.delivered.fetch_add(1, Relaxed);
                    delay = self.retry_min;
                    if last_error.take().is_some() {
                        tracing::info!(output = %self.name, "alert output delivers again");
                    }
                    self.done(&outbox, seq);
                }
                Err(WriteFailure::Reject(why) | WriteFailure::TooLarge(why)) => {
                    counters.rejected.fetch_add(1, Relaxed);
                    tracing::error!(output = %self.name, asset = %msg.asset, alarm = %msg.alarm, error = %why, "alert refused by the endpoint; skipped");
                    self.done(&outbox, seq);
                }
                Err(WriteFailure::Retry(why) | WriteFailure::Refused(why)) => {
                    counters.failed.fetch_add(1, Relaxed);
                    // One line per 10 s while the endpoint stays away.
                    if last_error.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                        last_error = Some(std::time::Instant::now());
                        tracing::warn!(output = %self.name, error = %why, retry_in_ms = delay.as_millis() as u64, "alert delivery failed; retrying");
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(self.retry_max);
                }
            }
        }
    }

    fn done(&self, outbox: &Outbox, seq: u64) {
        if let Err(e) = outbox.delivered(&self.name, seq) {
            tracing::error!(output = %self.name, error = %e, "cannot record an alert as delivered; it may be sent again after a restart");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(asset: &str, alarm: &str, state: &str) -> AlertMessage {
        AlertMessage {
            asset: asset.into(),
            model: "pump".into(),
            alarm: alarm.into(),
            state: state.into(),
            channel: None,
            time: String::new(),
            time_ns: 0,
            episode_start: String::new(),
            episode_start_ns: 0,
            duration_s: 0.0,
            score: None,
            peak: None,
            threshold: None,
            probability: None,
            top_channels: vec![],
            value: None,
            active: vec![],
            decided_ns: 0,
        }
    }

    #[test]
    fn filters_by_asset_alarm_and_state() {
        let f = AlertFilter {
            assets: "pump-*".into(),
            alarms: vec!["stale".into()],
            states: vec!["raised".into()],
        };
        assert!(f.accepts(&msg("pump-1", "stale", "raised")));
        assert!(!f.accepts(&msg("fan-1", "stale", "raised")));
        assert!(!f.accepts(&msg("pump-1", "anomaly", "raised")));
        assert!(!f.accepts(&msg("pump-1", "stale", "cleared")));
        let all = AlertFilter {
            assets: "*".into(),
            alarms: vec![],
            states: vec![],
        };
        assert!(all.accepts(&msg("x", "stuck", "cleared")));
    }

    /// Fails the first `fail` sends, then records.
    struct Flaky {
        fail: usize,
        sent: Arc<std::sync::Mutex<Vec<String>>>,
    }

    impl AlertSender for Flaky {
        async fn send(&mut self, _json: &str, msg: &AlertMessage) -> Result<(), WriteFailure> {
            if self.fail > 0 {
                self.fail -= 1;
                return Err(WriteFailure::Retry("down".into()));
            }
            self.sent.lock().unwrap().push(msg.asset.clone());
            Ok(())
        }
        async fn idle(&mut self) {
            std::future::pending::<()>().await
        }
    }

    #[tokio::test]
    async fn delivers_in_order_through_failures_and_records_the_cursor() {
        let (outbox, _) = Outbox::open(None, &["o".to_string()], 100).unwrap();
        for a in ["a", "b", "c"] {
            let json = serde_json::to_string(&msg(a, "anomaly", "raised")).unwrap();
            outbox.append(&json).unwrap();
        }
        let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
        let counters = Arc::new(AlertOutputCounters::default());
        let stop = CancellationToken::new();
        let out = OutputLoop {
            name: "o".into(),
            filter: AlertFilter {
                assets: "*".into(),
                alarms: vec![],
                states: vec![],
            },
            retry_min: Duration::from_millis(1),
            retry_max: Duration::from_millis(4),
        };
        let task = tokio::spawn(out.run(
            Flaky {
                fail: 3,
                sent: sent.clone(),
            },
            outbox.clone(),
            counters.clone(),
            stop.clone(),
        ));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while outbox.cursor("o") < 3 {
            assert!(std::time::Instant::now() < deadline, "not delivered");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        stop.cancel();
        task.await.unwrap();
        assert_eq!(*sent.lock().unwrap(), ["a", "b", "c"]);
        assert_eq!(counters.delivered.load(Relaxed), 3);
        assert_eq!(counters.failed.load(Relaxed), 3);
    }
}
