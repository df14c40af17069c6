//! The daemon under test: `anomalyd run` as a child process with its config
//! in a temporary directory, an `sd_notify` socket to see READY, WATCHDOG
//! and STOPPING, its log and its `/metrics`. Killed by PID when dropped,
//! printing its log and non-zero metrics when a test panics.

use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{anomalyd_bin, http_get, ort_dylib};

/// A running `anomalyd run` with a config written for the given services.
pub struct Daemon {
    pub child: Child,
    pub dir: TempDir,
    pub metrics_port: u16,
    pub notify: UnixDatagram,
    pub notes: Vec<String>,
}

impl Daemon {
    /// Writes `config_text` and starts `anomalyd run` on it, with
    /// `/metrics` expected on `metrics_port` and `env` on top of the
    /// test's environment.
    pub fn start(config_text: &str, metrics_port: u16, env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("anomalyd.toml");
        std::fs::write(&config, config_text).unwrap();
        let sock_path = dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&sock_path).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
        let mut cmd = Command::new(anomalyd_bin());
        cmd.arg("run")
            .arg("--config")
            .arg(&config)
            .env("ORT_DYLIB_PATH", ort_dylib())
            .env("NOTIFY_SOCKET", &sock_path)
            .env_remove("WATCHDOG_USEC")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn anomalyd");
        Daemon {
            child,
            dir,
            metrics_port,
            notify,
            notes: Vec::new(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Collects sd_notify datagrams until one equals `what` (or contains it).
    pub fn wait_note(&mut self, what: &str, deadline: Duration) {
        let start = Instant::now();
        let mut buf = [0u8; 512];
        loop {
            if self.notes.iter().any(|n| n.lines().any(|l| l == what)) {
                return;
            }
            if let Ok(n) = self.notify.recv(&mut buf) {
                self.notes
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                continue;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "anomalyd exited ({status}) before {what}; log:\n{}",
                    self.log()
                );
            }
            assert!(
                start.elapsed() < deadline,
                "no {what} within {deadline:?}; got {:?}; log:\n{}",
                self.notes,
                self.log()
            );
        }
    }

    pub fn metrics(&self) -> String {
        http_get(&format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .map(|r| r.body)
            .unwrap_or_default()
    }

    /// Value of a metric line (exact name with labels).
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics().lines().find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    /// SIGTERM and wait for the exit.
    pub fn terminate(&mut self, deadline: Duration) -> ExitStatus {
        self.signal("TERM");
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                start.elapsed() < deadline,
                "anomalyd did not stop within {deadline:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let m = self.metrics();
            let interesting: Vec<&str> = m
                .lines()
                .filter(|l| !l.starts_with('#') && !l.ends_with(" 0") && !l.contains("_bucket"))
                .collect();
            eprintln!(
                "--- anomalyd log ---\n{}\n--- metrics ---\n{}",
                self.log(),
                interesting.join("\n")
            );
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
