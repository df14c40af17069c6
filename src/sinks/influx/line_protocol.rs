//! InfluxDB line protocol for scores and alerts (docs/architecture.md §6):
//! measurement, tags and fields escaped as the protocol requires, numbers
//! written as `Display` writes them, timestamps in nanoseconds. Any
//! database that speaks line protocol reads what this writes.

use std::fmt::Write as _;

use crate::pipeline::{FrameRecord, Output, ScoreRecord};

/// Measurement names.
#[derive(Debug, Clone)]
pub struct Measurements {
    pub score: String,
    pub alert: String,
    /// The `host` tag on every point (the gateway's name), if any.
    pub host: Option<String>,
    /// `[record]`'s measurement of aligned frames.
    pub record: String,
}

/// Appends one output as a line of line protocol.
pub fn format_output(out: &Output, m: &Measurements, buf: &mut String) {
    match out {
        Output::Barrier(_) => {}
        Output::Score(r) => format_score(r, m, buf),
        Output::Frame(f) => format_frame(f, m, buf),
        Output::Alert { binding, event } => {
            escape_key(&m.alert, buf);
            buf.push_str(",asset=");
            escape_tag(&binding.asset, buf);
            push_host(m, buf);
            buf.push_str(",model=");
            escape_tag(&binding.model, buf);
            buf.push_str(",state=");
            buf.push_str(event.kind.as_str());
            if let Some((top, _)) = event.top_channels.first() {
                buf.push_str(",top_channel=");
                escape_tag(top, buf);
            }
            let _ = write!(
                buf,
                " score={},peak={},threshold={},duration_s={}",
                finite(event.score),
                finite(event.peak),
                finite(event.threshold),
                event.duration_s()
            );
            // The first channel is the `top_channel` tag; the errors of the
            // ranking are numbers so every compatible store keeps them.
            for (i, (_, err)) in event.top_channels.iter().enumerate() {
                let _ = write!(buf, ",top{}_error={}", i + 1, finite(*err));
            }
            let _ = writeln!(buf, " {}", event.ts);
        }
        Output::Quality(q) => {
            // Data-quality alarms share the alert measurement, told apart
            // by the `alarm` tag (docs/alerts.md §3).
            escape_key(&m.alert, buf);
            buf.push_str(",asset=");
            escape_tag(&q.binding.asset, buf);
            buf.push_str(",model=");
            escape_tag(&q.binding.model, buf);
            buf.push_str(",state=");
            buf.push_str(q.event.state.as_str());
            buf.push_str(",alarm=");
            buf.push_str(q.event.kind.as_str());
            if let Some(c) = &q.event.channel {
                buf.push_str(",channel=");
                escape_tag(c, buf);
            }
            let _ = write!(buf, " duration_s={}", q.event.duration_s());
            if let Some(v) = q.event.value.filter(|v| v.is_finite()) {
                buf.push_str(",value=");
                push_f64(buf, v);
            }
            let _ = writeln!(buf, " {}", q.event.ts);
        }
    }
}

/// One line per frame: each channel measured at the tick is a field;
/// values carried forward are left out (the trainer's aligner imputes
/// them again the same way); a frame with none is not written.
fn format_frame(f: &FrameRecord, m: &Measurements, buf: &mut String) {
    let start = buf.len();
    escape_key(&m.record, buf);
    buf.push_str(",asset=");
    escape_tag(&f.binding.asset, buf);
    push_host(m, buf);
    let mut sep = ' ';
    for ((ch, v), imputed) in f.binding.channels.iter().zip(&f.values).zip(&f.imputed) {
        if *imputed || !v.is_finite() {
            continue;
        }
        buf.push(sep);
        sep = ',';
        escape_key(ch, buf);
        buf.push('=');
        push_f32(buf, *v);
    }
    if sep == ' ' {
        buf.truncate(start);
        return;
    }
    let _ = writeln!(buf, " {}", f.ts);
}

/// Tags go in key order (asset, host, model, ...), the order the
/// database sorts them into anyway.
fn push_host(m: &Measurements, buf: &mut String) {
    if let Some(host) = &m.host {
        buf.push_str(",host=");
        escape_tag(host, buf);
    }
}

fn format_score(r: &ScoreRecord, m: &Measurements, buf: &mut String) {
    escape_key(&m.score, buf);
    buf.push_str(",asset=");
    escape_tag(&r.binding.asset, buf);
    push_host(m, buf);
    buf.push_str(",model=");
    escape_tag(&r.binding.model, buf);
    // One line per window, so this is the sink's hot path: numbers go
    // through `push_f32`/`push_f64` rather than `write!` (same text).
    buf.push_str(" score=");
    push_f32(buf, finite(r.score));
    buf.push_str(",threshold=");
    push_f32(buf, finite(r.threshold));
    buf.push_str(if r.anomalous {
        ",anomalous=true"
    } else {
        ",anomalous=false"
    });
    if r.probability.is_finite() {
        buf.push_str(",probability=");
        push_f64(buf, r.probability);
    }
    for (ch, e) in r.binding.channels.iter().zip(&r.channel_error) {
        if e.is_finite() {
            buf.push_str(",err_");
            escape_key(ch, buf);
            buf.push('=');
            push_f32(buf, *e);
        }
    }
    let _ = writeln!(buf, " {}", r.ts);
}

/// Appends a finite `v` exactly as `format!("{v}")` would, about twice as
/// fast: serde_json's shortest-digits writer (ryu) gives the same digits,
/// and the exponent form it uses for very small or large values is
/// written out in full as `Display` does.
fn push_f32(buf: &mut String, v: f32) {
    push_float(buf, |w| {
        serde_json::ser::Formatter::write_f32(&mut serde_json::ser::CompactFormatter, w, v)
    });
}

/// [`push_f32`] for `f64`.
fn push_f64(buf: &mut String, v: f64) {
    push_float(buf, |w| {
        serde_json::ser::Formatter::write_f64(&mut serde_json::ser::CompactFormatter, w, v)
    });
}

fn push_float(buf: &mut String, write: impl FnOnce(&mut &mut [u8]) -> std::io::Result<()>) {
    // The longest shortest-digits float is 24 bytes ("-1.7976931348623157e308").
    let mut tmp = [0u8; 32];
    let mut w = &mut tmp[..];
    if write(&mut w).is_err() {
        return;
    }
    let n = 32 - w.len();
    let Ok(text) = std::str::from_utf8(&tmp[..n]) else {
        return;
    };
    let (sign, text) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text),
    };
    buf.push_str(sign);
    let Some((mantissa, exp)) = text.split_once('e') else {
        // `Display` leaves out the fraction of a whole number.
        buf.push_str(text.strip_suffix(".0").unwrap_or(text));
        return;
    };
    let exp: i64 = exp.parse().unwrap_or(0);
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = int.len() + frac.len();
    // Position of the decimal point counted in digits from the left.
    let point = int.len() as i64 + exp;
    let zeros = |buf: &mut String, n: i64| buf.extend(std::iter::repeat_n('0', n as usize));
    if point <= 0 {
        buf.push_str("0.");
        zeros(buf, -point);
        buf.push_str(int);
        buf.push_str(frac);
    } else if point >= digits as i64 {
        buf.push_str(int);
        buf.push_str(frac);
        zeros(buf, point - digits as i64);
    } else {
        let all: String = [int, frac].concat();
        let (a, b) = all.split_at(point as usize);
        buf.push_str(a);
        buf.push('.');
        buf.push_str(b);
    }
}

/// Line protocol cannot carry NaN/inf; they are written as 0 only where a
/// field is mandatory (score fields are finite by construction).
fn finite(v: f32) -> f32 {
    if v.is_finite() { v } else { 0.0 }
}

fn escape_key(s: &str, buf: &mut String) {
    // Asset, model and channel names rarely need escaping: copy them whole.
    if !s
        .bytes()
        .any(|b| matches!(b, b',' | b' ' | b'=' | b'\\' | b'\n'))
    {
        buf.push_str(s);
        return;
    }
    for c in s.chars() {
        if matches!(c, ',' | ' ' | '=' | '\\') {
            buf.push('\\');
        }
        if c == '\n' {
            buf.push_str("\\n");
            continue;
        }
        buf.push(c);
    }
}

fn escape_tag(s: &str, buf: &mut String) {
    if s.is_empty() {
        // An empty tag value is invalid line protocol.
        buf.push('_');
        return;
    }
    escape_key(s, buf);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::core::detect::{AlertEvent, AlertKind, DetectorSettings};
    use crate::pipeline::AssetBinding;

    fn binding() -> Arc<AssetBinding> {
        Arc::new(AssetBinding {
            asset: "pump 1".into(),
            model: "pump".into(),
            detector: DetectorSettings {
                threshold: 0.5,
                raise_after: 1,
                clear_after: 1,
                clear_ratio: 0.8,
                adapt: Default::default(),
            },
            channels: vec!["flow rate".to_string(), "p,1".to_string()].into(),
        })
    }

    fn m() -> Measurements {
        Measurements {
            score: "anomaly_score".into(),
            alert: "anomaly_alert".into(),
            host: None,
            record: "anomalyd_frames".into(),
        }
    }

    #[test]
    fn a_frame_is_one_line_of_its_measured_channels() {
        let frame = |imputed: Vec<bool>| {
            let mut buf = String::new();
            format_output(
                &Output::Frame(FrameRecord {
                    binding: binding(),
                    ts: 7,
                    values: vec![1.5, 2.0],
                    imputed,
                }),
                &m(),
                &mut buf,
            );
            buf
        };
        assert_eq!(
            frame(vec![false, false]),
            "anomalyd_frames,asset=pump\\ 1 flow\\ rate=1.5,p\\,1=2 7\n"
        );
        assert_eq!(
            frame(vec![true, false]),
            "anomalyd_frames,asset=pump\\ 1 p\\,1=2 7\n"
        );
        assert_eq!(frame(vec![true, true]), "");
    }

    #[test]
    fn the_host_tag_goes_on_every_point_in_key_order() {
        let mut buf = String::new();
        let m = Measurements {
            host: Some("gw 7".into()),
            ..m()
        };
        format_output(
            &Output::Score(ScoreRecord {
                binding: binding(),
                ts: 1,
                score: 0.25,
                threshold: 0.5,
                anomalous: false,
                probability: f64::NAN,
                channel_error: vec![],
            }),
            &m,
            &mut buf,
        );
        assert!(
            buf.starts_with("anomaly_score,asset=pump\\ 1,host=gw\\ 7,model=pump score="),
            "{buf}"
        );
    }

    #[test]
    fn score_line_escapes_and_carries_all_fields() {
        let mut buf = String::new();
        format_output(
            &Output::Score(ScoreRecord {
                binding: binding(),
                ts: 1_700_000_000_000_000_000,
                score: 0.25,
                threshold: 0.5,
                anomalous: false,
                probability: 0.9,
                channel_error: vec![0.1, 0.4],
            }),
            &m(),
            &mut buf,
        );
        assert_eq!(
            buf,
            "anomaly_score,asset=pump\\ 1,model=pump score=0.25,threshold=0.5,anomalous=false,probability=0.9,err_flow\\ rate=0.1,err_p\\,1=0.4 1700000000000000000\n"
        );
    }

    #[test]
    fn numbers_are_written_as_display_writes_them() {
        // The same text as `format!("{v}")`: plain notation, shortest digits
        // that read back as `v`. Where two candidates are equally short and
        // equally close (a tie in the last digit, e.g. 312985.125f32 as
        // ...12 or ...13), ryu rounds to even and `Display` up: both read
        // back as the same number.
        let check32 = |v: f32| {
            let mut buf = String::new();
            push_f32(&mut buf, v);
            let display = format!("{v}");
            if buf != display {
                assert_eq!(buf.parse::<f32>(), Ok(v), "{buf} vs {display}");
                assert_eq!(buf.len(), display.len(), "{buf} vs {display}");
            }
        };
        let check64 = |v: f64| {
            let mut buf = String::new();
            push_f64(&mut buf, v);
            let display = format!("{v}");
            if buf != display {
                assert_eq!(buf.parse::<f64>(), Ok(v), "{buf} vs {display}");
                assert_eq!(buf.len(), display.len(), "{buf} vs {display}");
            }
        };
        let mut same = 0;
        for v in [0.0f32, -0.0, 1.0, 0.1, 1e-7, 1e20, 312_985.12] {
            let mut buf = String::new();
            push_f32(&mut buf, v);
            same += usize::from(buf == format!("{v}"));
        }
        assert_eq!(same, 6, "exact text except for the tie");
        for v in [
            0.0,
            -0.0,
            1.0,
            -2.0,
            0.1,
            0.25,
            1e-5,
            1.5e-7,
            123_456_790.0,
            1e16,
            3.4e38,
            f32::MAX,
            f32::MIN_POSITIVE,
            1e-45,
            0.102_339_51,
        ] {
            check32(v);
            check64(f64::from(v));
        }
        for v in [0.9, 1e-10, 1e300, f64::MAX, f64::MIN_POSITIVE, 5e-324, 0.3] {
            check64(v);
        }
        // Random bit patterns: every finite float class, both signs.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v32 = f32::from_bits(x as u32);
            if v32.is_finite() {
                check32(v32);
            }
            let v64 = f64::from_bits(x);
            if v64.is_finite() {
                check64(v64);
            }
        }
    }

    #[test]
    fn nan_probability_is_left_out() {
        let mut buf = String::new();
        format_output(
            &Output::Score(ScoreRecord {
                binding: binding(),
                ts: 5,
                score: 1.0,
                threshold: 0.5,
                anomalous: true,
                probability: f64::NAN,
                channel_error: vec![f32::NAN, 1.0],
            }),
            &m(),
            &mut buf,
        );
        assert!(
            !buf.contains("probability") && !buf.contains("NaN"),
            "{buf}"
        );
        assert!(buf.contains("anomalous=true"));
    }

    #[test]
    fn alert_line_has_state_and_top_channel_tags() {
        let mut buf = String::new();
        format_output(
            &Output::Alert {
                binding: binding(),
                event: AlertEvent {
                    kind: AlertKind::Raised,
                    start_ts: 1_000_000_000,
                    ts: 4_000_000_000,
                    score: 2.0,
                    peak: 3.0,
                    threshold: 0.5,
                    top_channels: vec![("p,1".into(), 1.5), ("flow rate".into(), 0.5)],
                },
            },
            &m(),
            &mut buf,
        );
        assert_eq!(
            buf,
            "anomaly_alert,asset=pump\\ 1,model=pump,state=raised,top_channel=p\\,1 score=2,peak=3,threshold=0.5,duration_s=3,top1_error=1.5,top2_error=0.5 4000000000\n"
        );
    }
}
