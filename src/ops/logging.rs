//! Log output of the binaries: `tracing` to stderr, plain or JSON.
//!
//! Under systemd, stderr is a stream to journald (`$JOURNAL_STREAM` names
//! its device and inode). journald stamps every line itself and reads a
//! leading `<N>` as the line's syslog priority, so plain lines there carry
//! no timestamp of ours and start with `<3>` (error), `<4>` (warning),
//! `<6>` (info) or `<7>` (debug, trace): `journalctl -p warning` then
//! filters by severity (docs/distribution.md §3). JSON lines are the same
//! everywhere: a log shipper parses them, so they keep their timestamp and
//! `level` field and get no prefix.

use std::fmt;
use std::io::IsTerminal as _;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::LogFormat;

/// Installs the global subscriber: `level` (a `tracing` filter; `RUST_LOG`
/// wins) with ONNX Runtime held to warnings, in `format`, to stderr; plain
/// lines are in journald's form when stderr is the journal. A second call
/// leaves the first subscriber in place.
pub fn init_logging(format: LogFormat, level: &str) {
    // ONNX Runtime logs ~100 lines per model load at info level.
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|f| tracing_subscriber::EnvFilter::try_new(f).is_ok())
        .unwrap_or_else(|| format!("{level},ort=warn"));
    let journal = stderr_is_journal();
    let ansi = !journal && std::io::stderr().is_terminal();
    let _ = subscriber(format, &filter, journal, ansi, std::io::stderr).try_init();
}

/// The subscriber [`init_logging`] installs, writing to `writer`: `journal` selects
/// journald's plain form; JSON is the same either way.
fn subscriber<W>(
    format: LogFormat,
    filter: &str,
    journal: bool,
    ansi: bool,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Json => Box::new(builder.json().finish()),
        LogFormat::Plain if journal => Box::new(builder.event_format(Journald::new()).finish()),
        LogFormat::Plain => Box::new(builder.finish()),
    }
}

/// Whether stderr is the stream `$JOURNAL_STREAM` names (`DEVICE:INODE`).
/// A child that inherited the variable but writes elsewhere (a pipe, a
/// terminal) is not the journal.
pub fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let Some(var) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    // /proc/self/fd/2 resolves to the socket itself, so its metadata is
    // that of the stream stderr writes to.
    match std::fs::metadata("/proc/self/fd/2") {
        Ok(m) => names_stream(&var.to_string_lossy(), m.dev(), m.ino()),
        Err(_) => false,
    }
}

/// `$JOURNAL_STREAM`'s `DEVICE:INODE` (decimal) against a file's.
fn names_stream(var: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = var.trim().split_once(':') else {
        return false;
    };
    d.parse() == Ok(dev) && i.parse() == Ok(ino)
}

/// syslog priority of a `tracing` level (sd-daemon(3) prefixes).
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// The plain format without a timestamp, each line led by `<N>`.
pub struct Journald {
    inner: format::Format<format::Full, ()>,
}

impl Journald {
    /// The plain format as journald wants it.
    pub fn new() -> Self {
        Self {
            inner: format::Format::default().without_time().with_ansi(false),
        }
    }
}

impl Default for Journald {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Journald {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Journald")
    }
}

impl<S, N> FormatEvent<S, N> for Journald
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.inner.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    impl Buf {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect()
        }
    }

    fn emit_three() {
        tracing::error!(asset = "pump-001", "sink failed");
        tracing::warn!("reload refused");
        tracing::info!(version = 2, "ready");
    }

    fn lines_of(format: LogFormat, journal: bool) -> Vec<String> {
        let buf = Buf::default();
        let sub = subscriber(format, "info", journal, false, buf.clone());
        tracing::subscriber::with_default(sub, emit_three);
        buf.lines()
    }

    /// An RFC 3339 time as our plain and JSON formats write it.
    fn has_timestamp(line: &str) -> bool {
        line.as_bytes().windows(11).any(|w| {
            w[..4].iter().all(u8::is_ascii_digit) && w[4] == b'-' && w[7] == b'-' && w[10] == b'T'
        })
    }

    #[test]
    fn journald_lines_carry_a_priority_and_no_timestamp() {
        let lines = lines_of(LogFormat::Plain, true);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].starts_with("<3>ERROR "), "{}", lines[0]);
        assert!(
            lines[0].ends_with("sink failed asset=\"pump-001\""),
            "{}",
            lines[0]
        );
        assert!(lines[1].starts_with("<4> WARN "), "{}", lines[1]);
        assert!(lines[2].starts_with("<6> INFO "), "{}", lines[2]);
        assert!(lines[2].ends_with("ready version=2"), "{}", lines[2]);
        for line in &lines {
            assert!(!has_timestamp(line), "timestamp in {line}");
            assert!(!line.contains('\u{1b}'), "ANSI escape in {line}");
        }
    }

    #[test]
    fn plain_lines_off_the_journal_keep_their_timestamp() {
        let lines = lines_of(LogFormat::Plain, false);
        assert_eq!(lines.len(), 3, "{lines:?}");
        for line in &lines {
            assert!(has_timestamp(line), "no timestamp in {line}");
            assert!(!line.starts_with('<'), "{line}");
        }
    }

    #[test]
    fn json_lines_are_the_same_on_and_off_the_journal() {
        let strip = |lines: Vec<String>| -> Vec<serde_json::Value> {
            lines
                .iter()
                .map(|l| {
                    assert!(l.starts_with('{'), "{l}");
                    let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                    assert!(v["timestamp"].is_string(), "{l}");
                    v["timestamp"] = serde_json::Value::Null;
                    v
                })
                .collect()
        };
        let journal = strip(lines_of(LogFormat::Json, true));
        let elsewhere = strip(lines_of(LogFormat::Json, false));
        assert_eq!(journal.len(), 3);
        assert_eq!(journal, elsewhere);
        assert_eq!(journal[1]["level"], "WARN");
        assert_eq!(journal[0]["fields"]["asset"], "pump-001");
    }

    #[test]
    fn journal_stream_must_name_this_stream() {
        assert!(names_stream("27:1234567", 27, 1_234_567));
        assert!(names_stream("27:1234567\n", 27, 1_234_567));
        assert!(!names_stream("27:1234568", 27, 1_234_567));
        assert!(!names_stream("28:1234567", 27, 1_234_567));
        assert!(!names_stream("", 27, 1_234_567));
        assert!(!names_stream("27", 27, 1_234_567));
        assert!(!names_stream("x:y", 27, 1_234_567));
    }

    #[test]
    fn priorities_are_syslog_levels() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
        assert_eq!(priority(&Level::TRACE), 7);
    }
}
