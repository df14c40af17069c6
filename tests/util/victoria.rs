//! A real single-node VictoriaMetrics on a free loopback port, taking the
//! daemon's InfluxDB line protocol; it can be stopped and started again on
//! the same port and data to play a database outage. Killed by PID when
//! dropped.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::process::{
    START_DEADLINE, append_log, kill_service, log_tail, require_binary, stop_service, wait_ready,
};
use super::{Series, free_port, http_get, http_post, point_count, url_encode};

/// Debian's single-node VictoriaMetrics (package `victoria-metrics`).
pub const VICTORIA_METRICS_BIN: &str = "/usr/bin/victoria-metrics";

/// A single-node VictoriaMetrics on `127.0.0.1:port()`, killed when dropped.
/// It serves the InfluxDB write API at `url()/api/v2/write`.
pub struct VictoriaMetrics {
    port: u16,
    child: Option<Child>,
    data_dir: PathBuf,
    log_path: PathBuf,
    // Last, so the directory outlives the process on drop.
    dir: TempDir,
}

impl VictoriaMetrics {
    /// Starts it on a free port with a fresh data directory; returns once
    /// `/health` answers.
    pub fn start() -> VictoriaMetrics {
        require_binary(VICTORIA_METRICS_BIN, "victoria-metrics");
        let dir = tempfile::Builder::new()
            .prefix("anomalyd-victoria-")
            .tempdir()
            .expect("tempdir");
        let mut vm = VictoriaMetrics {
            port: free_port(),
            child: None,
            data_dir: dir.path().join("data"),
            log_path: dir.path().join("victoria-metrics.log"),
            dir,
        };
        vm.spawn();
        vm
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Everything it logged so far (all runs).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM and wait (it flushes its data on the way out); the port is
    /// closed when this returns, so writers see connection errors.
    pub fn stop(&mut self) {
        stop_service(&mut self.child, self.port, "VictoriaMetrics");
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        kill_service(&mut self.child);
    }

    /// Starts again after [`stop`](Self::stop)/[`kill`](Self::kill), on the
    /// same port with the same data directory.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "VictoriaMetrics is already running");
        self.spawn();
    }

    fn spawn(&mut self) {
        let log = append_log(&self.log_path);
        let child = Command::new(VICTORIA_METRICS_BIN)
            .arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
            .arg(format!("-storageDataPath={}", self.data_dir.display()))
            .arg("-retentionPeriod=100y")
            // Make points visible to queries as soon as they are flushed.
            .arg("-search.latencyOffset=0s")
            .arg("-search.disableCache")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {VICTORIA_METRICS_BIN}: {e}"));
        self.child = Some(child);
        let health = format!("{}/health", self.url());
        wait_ready(
            &mut self.child,
            Duration::from_millis(10),
            || http_get(&health).is_ok_and(|r| r.status == 200),
            |status| {
                format!(
                    "VictoriaMetrics exited at start ({status}); log:\n{}",
                    log_tail(&self.log_path, 4000)
                )
            },
            || {
                format!(
                    "VictoriaMetrics /health not OK after {START_DEADLINE:?}; log:\n{}",
                    log_tail(&self.log_path, 4000)
                )
            },
        );
    }

    /// Makes freshly ingested points searchable (`/internal/force_flush`).
    pub fn flush(&self) {
        let r = http_get(&format!("{}/internal/force_flush", self.url()))
            .expect("VictoriaMetrics force_flush");
        assert_eq!(r.status, 200, "force_flush: {}", r.body);
    }

    /// Writes InfluxDB line protocol directly (`/write`); panics unless 204.
    /// VictoriaMetrics accepts garbage with 204 too: read it back.
    pub fn write_lines(&self, lines: &str) {
        let r = http_post(
            &format!("{}/write", self.url()),
            "text/plain",
            lines.as_bytes(),
        )
        .expect("VictoriaMetrics write");
        assert_eq!(r.status, 204, "write: {}", r.body);
    }

    /// Every series matching `selector` (e.g. `{__name__=~"anomaly_score_.*"}`
    /// or `anomaly_score_score{asset="pump-001"}`), all time, after a flush.
    pub fn export(&self, selector: &str) -> Vec<Series> {
        self.flush();
        let url = format!(
            "{}/api/v1/export?match[]={}&start=0",
            self.url(),
            url_encode(selector)
        );
        let r = http_get(&url).unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(r.status, 200, "export {selector}: {}", r.body);
        let mut series: Vec<Series> = r
            .body
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(Series::from_json_line)
            .collect();
        series.sort_by(|a, b| a.metric.cmp(&b.metric));
        series
    }

    /// Polls [`export`](Self::export) until the matching series hold at
    /// least `n` points in total; panics after `deadline` with what it saw.
    pub fn wait_for_points(&self, selector: &str, n: usize, deadline: Duration) -> Vec<Series> {
        let start = Instant::now();
        loop {
            let last = self.export(selector);
            if point_count(&last) >= n {
                return last;
            }
            if start.elapsed() >= deadline {
                let names: Vec<String> = last
                    .iter()
                    .map(|s| format!("{:?}: {} points", s.metric, s.values.len()))
                    .collect();
                panic!(
                    "timed out after {deadline:?} waiting for {n} points of {selector}: got {} in {names:#?}",
                    point_count(&last)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for VictoriaMetrics {
    fn drop(&mut self) {
        kill_service(&mut self.child);
    }
}
