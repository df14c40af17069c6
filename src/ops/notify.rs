//! systemd service notification (`sd_notify`) for `Type=notify` units.
//!
//! Owns the datagram protocol to `$NOTIFY_SOCKET` (a path, or an abstract
//! socket when it starts with `@`) and the watchdog interval derived from
//! `$WATCHDOG_USEC`/`$WATCHDOG_PID`. Everything is a no-op outside systemd.
//! The `*_to`/`*_from` variants take the environment as arguments, because
//! changing the process environment is `unsafe` in edition 2024 (sound only
//! before a second thread starts, as `model::opt_out_of_telemetry` does):
//! tests pass an environment instead.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Sends `state` (newline-separated `KEY=VALUE` lines) to `$NOTIFY_SOCKET`.
///
/// Returns `Ok(false)` when the variable is unset or empty (not under systemd).
///
/// # Errors
/// When the socket address is invalid or the datagram cannot be sent.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(socket) if !socket.is_empty() => {
            notify_to(&socket.to_string_lossy(), state).map(|()| true)
        }
        _ => Ok(false),
    }
}

/// Sends `state` to the notification socket `socket` (`@name` = abstract).
///
/// # Errors
/// When the socket address is invalid or the datagram cannot be sent.
pub fn notify_to(socket: &str, state: &str) -> io::Result<()> {
    let addr = match socket.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
        None => SocketAddr::from_pathname(socket)?,
    };
    let sent = UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        return Err(io::Error::other(format!(
            "sd_notify: sent {sent} of {} bytes to {socket}",
            state.len()
        )));
    }
    Ok(())
}

/// `READY=1`: start-up finished (model loaded, broker answered).
///
/// # Errors
/// See [`notify`].
pub fn ready() -> io::Result<bool> {
    notify("READY=1")
}

/// `STOPPING=1`: shutdown has begun.
///
/// # Errors
/// See [`notify`].
pub fn stopping() -> io::Result<bool> {
    notify("STOPPING=1")
}

/// `WATCHDOG=1`: the pipeline is alive.
///
/// # Errors
/// See [`notify`].
pub fn watchdog() -> io::Result<bool> {
    notify("WATCHDOG=1")
}

/// `STATUS=msg`: one line shown by `systemctl status` (newlines become spaces).
///
/// # Errors
/// See [`notify`].
pub fn status(msg: &str) -> io::Result<bool> {
    notify(&format!("STATUS={}", msg.replace('\n', " ")))
}

/// How often to send [`watchdog`]: half of `$WATCHDOG_USEC`, or `None` when
/// the watchdog is off or `$WATCHDOG_PID` names another process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    watchdog_interval_from(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// [`watchdog_interval`] for given variable values and our own PID.
pub fn watchdog_interval_from(
    usec: Option<&str>,
    pid: Option<&str>,
    own_pid: u32,
) -> Option<Duration> {
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok()? != own_pid
    {
        return None;
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn recv(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 256];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_exact_datagram_to_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        notify_to(path.to_str().unwrap(), "READY=1").unwrap();
        assert_eq!(recv(&sock), "READY=1");
    }

    #[test]
    fn sends_to_abstract_socket() {
        let name = format!("anomalyd-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        notify_to(&format!("@{name}"), "WATCHDOG=1").unwrap();
        assert_eq!(recv(&sock), "WATCHDOG=1");
    }

    #[test]
    fn missing_socket_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.sock");
        assert!(notify_to(path.to_str().unwrap(), "READY=1").is_err());
    }

    #[test]
    fn watchdog_interval_is_half_and_honours_pid() {
        let half = Some(Duration::from_secs(5));
        assert_eq!(watchdog_interval_from(Some("10000000"), None, 42), half);
        assert_eq!(
            watchdog_interval_from(Some("10000000"), Some("42"), 42),
            half
        );
        assert_eq!(
            watchdog_interval_from(Some("10000000"), Some("7"), 42),
            None
        );
        assert_eq!(watchdog_interval_from(None, None, 42), None);
        assert_eq!(watchdog_interval_from(Some("0"), None, 42), None);
        assert_eq!(watchdog_interval_from(Some("ten"), None, 42), None);
    }

    /// Run by [`helpers_read_the_environment`] in a child process, where the
    /// environment can be set safely; does nothing in a normal test run.
    #[test]
    fn child_sends_from_environment() {
        if std::env::var_os("ANOMALYD_NOTIFY_CHILD").is_none() {
            return;
        }
        assert!(ready().unwrap());
        assert!(status("scoring\n3 assets").unwrap());
        assert!(stopping().unwrap());
        let interval = watchdog_interval().map(|d| d.as_millis());
        assert!(watchdog().unwrap());
        notify(&format!("X_INTERVAL_MS={interval:?}")).unwrap();
    }

    #[test]
    fn helpers_read_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "ops::notify::tests::child_sends_from_environment",
            ])
            .args(["--test-threads=1", "--nocapture"])
            .env("ANOMALYD_NOTIFY_CHILD", "1")
            .env("NOTIFY_SOCKET", &path)
            .env("WATCHDOG_USEC", "3000000")
            .env_remove("WATCHDOG_PID")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let got: Vec<String> = (0..5).map(|_| recv(&sock)).collect();
        assert_eq!(
            got,
            [
                "READY=1",
                "STATUS=scoring 3 assets",
                "STOPPING=1",
                "WATCHDOG=1",
                "X_INTERVAL_MS=Some(1500)"
            ]
        );
    }

    #[test]
    fn unset_socket_is_not_an_error() {
        // The test runner itself is not started by systemd.
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            assert!(!ready().unwrap());
        }
    }
}
