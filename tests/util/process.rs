//! Free ports, polling with a deadline, and child processes: stopping them
//! by PID, their logs, and running a command to completion.

use std::fs::{self, File, OpenOptions};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output};
use std::thread;
use std::time::{Duration, Instant};

/// How long a service may take to become ready on a loaded 2-core machine.
pub(super) const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long a service may take to exit after SIGTERM before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(15);

/// A loopback TCP port that was free a moment ago (bind port 0, read it back).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Polls `f` until it returns true; panics with `what` after `deadline`.
///
/// Polls often at first (1 ms) and backs off to 100 ms, so fast conditions
/// cost little and slow ones do not spin.
pub fn wait_until(deadline: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        if f() {
            return;
        }
        if start.elapsed() >= deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        thread::sleep(pause.min(deadline.saturating_sub(start.elapsed())));
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Whether something accepts TCP connections on `127.0.0.1:port`.
pub fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// Sends SIGTERM to `child` (only that PID), waits up to `deadline`, then
/// SIGKILLs it if it is still running.
fn terminate(child: &mut Child, deadline: Duration) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let start = Instant::now();
    while start.elapsed() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// SIGKILLs `child` and reaps it.
fn kill_now(child: &mut Child) {
    if child.try_wait().ok().flatten().is_none() {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// Polls `ready` every `pause` until it holds, for a service just spawned
/// into `child`. Panics with `exited(status)` when the service exits first
/// (and forgets it), or with `timed_out()` after the start deadline.
pub(super) fn wait_ready(
    child: &mut Option<Child>,
    pause: Duration,
    mut ready: impl FnMut() -> bool,
    exited: impl FnOnce(ExitStatus) -> String,
    timed_out: impl FnOnce() -> String,
) {
    let start = Instant::now();
    loop {
        if ready() {
            return;
        }
        if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            *child = None;
            panic!("{}", exited(status));
        }
        if start.elapsed() > START_DEADLINE {
            panic!("{}", timed_out());
        }
        thread::sleep(pause);
    }
}

/// SIGTERMs a service (SIGKILL after the stop deadline) and waits until
/// `port` is closed, so clients see connection errors from then on.
pub(super) fn stop_service(child: &mut Option<Child>, port: u16, name: &str) {
    if let Some(mut c) = child.take() {
        terminate(&mut c, STOP_DEADLINE);
    }
    wait_until(STOP_DEADLINE, &format!("{name} port to close"), || {
        !port_open(port)
    });
}

/// SIGKILLs a service if it runs: a crash, or a guard's drop.
pub(super) fn kill_service(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        kill_now(&mut c);
    }
}

/// The last `max` bytes of a log file, for panic messages.
pub(super) fn log_tail(path: &Path, max: usize) -> String {
    let text = fs::read(path).unwrap_or_default();
    let start = text.len().saturating_sub(max);
    String::from_utf8_lossy(&text[start..]).into_owned()
}

/// `path` opened for appending, so a restarted service adds to its log.
pub(super) fn append_log(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open log {}: {e}", path.display()))
}

/// Starts `bin` with `args`, stdin closed and stdout and stderr appended
/// to `log_path`.
pub(super) fn spawn_logged(bin: &str, args: &[&std::ffi::OsStr], log_path: &Path) -> Child {
    let log = append_log(log_path);
    Command::new(bin)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("dup log fd"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"))
}

/// Panics, naming the Debian package, when a service binary is missing.
pub(super) fn require_binary(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} not found: install Debian package `{package}` (bash scripts/setup.sh)"
    );
}

/// Runs `cmd` to completion; panics when it fails.
pub fn run_checked(cmd: &mut Command) {
    let out = run_output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `cmd` to completion and returns its output whatever the exit status.
pub fn run_output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Stdout then stderr of `out`, for assertions and panic messages.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
