//! A real InfluxDB 1.x (`influxd`, Debian package `influxdb`, 1.6.7 here)
//! on free loopback ports in a temporary directory: the database behind
//! the v1 write API (`/write`) and InfluxQL (`/query`). It can run with
//! authentication and a small request-body limit to make it refuse
//! writes, and be stopped and started again on the same port and data to
//! play an outage. Killed by PID when dropped.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::process::{
    START_DEADLINE, append_log, kill_service, log_tail, require_binary, stop_service, wait_ready,
};
use super::{free_port, http_get, http_post, url_encode};

/// Debian's InfluxDB 1.x server (package `influxdb`).
pub const INFLUXD_BIN: &str = "/usr/bin/influxd";

/// The admin user [`Influxd::start_with`] creates when auth is on.
pub const ADMIN_USER: &str = "admin";
/// Its password.
pub const ADMIN_PASSWORD: &str = "admin-secret";

/// How the server is set up.
#[derive(Debug, Clone, Default)]
pub struct InfluxdOptions {
    /// `[http] auth-enabled`: an admin user is created right after start.
    pub auth: bool,
    /// `[http] max-body-size` in bytes (InfluxDB's default: 25 MB).
    pub max_body_size: Option<u64>,
}

/// One `influxd` on `127.0.0.1:port()`, killed when dropped.
pub struct Influxd {
    port: u16,
    options: InfluxdOptions,
    child: Option<Child>,
    config_path: PathBuf,
    log_path: PathBuf,
    // Last, so the directory outlives the process on drop.
    dir: TempDir,
}

impl Influxd {
    /// Starts it without auth and with database `db` created.
    pub fn start(db: &str) -> Influxd {
        let s = Self::start_with(InfluxdOptions::default());
        s.create_database(db);
        s
    }

    /// Starts it with `options` and no database; returns once `/ping`
    /// answers (and the admin user exists when auth is on).
    pub fn start_with(options: InfluxdOptions) -> Influxd {
        require_binary(INFLUXD_BIN, "influxdb");
        let dir = tempfile::Builder::new()
            .prefix("anomalyd-influxd-")
            .tempdir()
            .expect("tempdir");
        let mut s = Influxd {
            port: free_port(),
            options,
            child: None,
            config_path: dir.path().join("influxdb.conf"),
            log_path: dir.path().join("influxd.log"),
            dir,
        };
        s.write_config();
        s.spawn();
        if s.options.auth {
            // With no user yet, InfluxDB 1.x takes this one statement unauthenticated.
            let q = format!(
                "CREATE USER {ADMIN_USER} WITH PASSWORD '{ADMIN_PASSWORD}' WITH ALL PRIVILEGES"
            );
            s.query_as(None, &q, None);
        }
        s
    }

    fn write_config(&self) {
        let d = self.dir.path();
        let max_body = self.options.max_body_size.unwrap_or(25_000_000);
        // The RPC (backup) service binds a port of its own: a free one too.
        let text = format!(
            r#"reporting-disabled = true
bind-address = "127.0.0.1:{rpc}"
[meta]
  dir = "{meta}"
[data]
  dir = "{data}"
  wal-dir = "{wal}"
  query-log-enabled = false
  wal-fsync-delay = "0s"
[http]
  enabled = true
  bind-address = "127.0.0.1:{port}"
  auth-enabled = {auth}
  log-enabled = false
  max-body-size = {max_body}
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[subscriber]
  enabled = false
"#,
            rpc = free_port(),
            meta = d.join("meta").display(),
            data = d.join("data").display(),
            wal = d.join("wal").display(),
            port = self.port,
            auth = self.options.auth,
        );
        fs::write(&self.config_path, text).expect("write influxdb.conf");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Everything it logged so far (all runs).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGTERM and wait; the port is closed when this returns.
    pub fn stop(&mut self) {
        stop_service(&mut self.child, self.port, "influxd");
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        kill_service(&mut self.child);
    }

    /// Starts again after [`stop`](Self::stop)/[`kill`](Self::kill), on the
    /// same port with the same data.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "influxd is already running");
        self.spawn();
    }

    fn spawn(&mut self) {
        let log = append_log(&self.log_path);
        let child = Command::new(INFLUXD_BIN)
            .arg("-config")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {INFLUXD_BIN}: {e}"));
        self.child = Some(child);
        let ping = format!("{}/ping", self.url());
        wait_ready(
            &mut self.child,
            Duration::from_millis(20),
            || http_get(&ping).is_ok_and(|r| r.status == 204),
            |status| {
                format!(
                    "influxd exited at start ({status}); log:\n{}",
                    log_tail(&self.log_path, 4000)
                )
            },
            || {
                format!(
                    "influxd /ping not 204 after {START_DEADLINE:?}; log:\n{}",
                    log_tail(&self.log_path, 4000)
                )
            },
        );
    }

    /// Runs InfluxQL `q` (on database `db`, if any) as the admin when auth
    /// is on; panics unless the server answers 200 without an error.
    pub fn query(&self, db: Option<&str>, q: &str) -> serde_json::Value {
        let auth = self.options.auth.then_some((ADMIN_USER, ADMIN_PASSWORD));
        self.query_as(db, q, auth)
    }

    fn query_as(&self, db: Option<&str>, q: &str, auth: Option<(&str, &str)>) -> serde_json::Value {
        let mut body = format!("q={}&epoch=ns", url_encode(q));
        if let Some(db) = db {
            body.push_str(&format!("&db={}", url_encode(db)));
        }
        // Credentials go in the URL: influxd does not read them from a form body.
        let url = match auth {
            Some((u, p)) => format!(
                "{}/query?u={}&p={}",
                self.url(),
                url_encode(u),
                url_encode(p)
            ),
            None => format!("{}/query", self.url()),
        };
        let r = http_post(&url, "application/x-www-form-urlencoded", body.as_bytes())
            .unwrap_or_else(|e| panic!("POST {url} {q}: {e}"));
        assert_eq!(r.status, 200, "{q}: {}", r.body);
        let doc: serde_json::Value = serde_json::from_str(&r.body)
            .unwrap_or_else(|e| panic!("{q}: answer is not JSON ({e}): {}", r.body));
        if let Some(err) = doc["results"][0]["error"].as_str() {
            panic!("{q}: {err}");
        }
        doc
    }

    pub fn create_database(&self, db: &str) {
        self.query(None, &format!("CREATE DATABASE \"{db}\""));
    }

    /// Creates a user with write and read access to `db`.
    pub fn create_user(&self, db: &str, user: &str, password: &str) {
        self.query(
            None,
            &format!("CREATE USER \"{user}\" WITH PASSWORD '{password}'"),
        );
        self.query(None, &format!("GRANT ALL ON \"{db}\" TO \"{user}\""));
    }

    /// The rows of a `SELECT`: each as its `time` (ns) and the other
    /// columns as JSON values, series after series (all series' tags
    /// folded into the rows with `GROUP BY *` are not reported).
    pub fn select(&self, db: &str, q: &str) -> Vec<(i64, Vec<serde_json::Value>)> {
        let doc = self.query(Some(db), q);
        let mut rows = Vec::new();
        for series in doc["results"][0]["series"].as_array().into_iter().flatten() {
            for v in series["values"].as_array().into_iter().flatten() {
                let v = v.as_array().expect("a row is an array");
                let t = v[0].as_i64().expect("time in ns");
                rows.push((t, v[1..].to_vec()));
            }
        }
        rows
    }

    /// Polls [`select`](Self::select) until it returns at least `n` rows;
    /// panics after `deadline` with how many it saw.
    pub fn wait_for_rows(
        &self,
        db: &str,
        q: &str,
        n: usize,
        deadline: Duration,
    ) -> Vec<(i64, Vec<serde_json::Value>)> {
        let start = Instant::now();
        loop {
            let rows = self.select(db, q);
            if rows.len() >= n {
                return rows;
            }
            if start.elapsed() >= deadline {
                panic!(
                    "timed out after {deadline:?} waiting for {n} rows of {q}: got {}",
                    rows.len()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Writes line protocol straight to `/write?db=` (as the admin when auth
    /// is on); returns the status and body.
    pub fn write_lines(&self, db: &str, lines: &str) -> (u16, String) {
        let mut url = format!("{}/write?db={}&precision=n", self.url(), url_encode(db));
        if self.options.auth {
            url.push_str(&format!("&u={ADMIN_USER}&p={ADMIN_PASSWORD}"));
        }
        let r = http_post(&url, "text/plain", lines.as_bytes())
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        (r.status, r.body)
    }
}

impl Drop for Influxd {
    fn drop(&mut self) {
        kill_service(&mut self.child);
    }
}
