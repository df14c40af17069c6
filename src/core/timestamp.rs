//! Timestamps: parsing the forms found in logs and payloads (RFC 3339, zone-less
//! `YYYY-MM-DD hh:mm:ss[.fff]`, epoch numbers in s/ms/µs/ns) into one
//! representation, `i64` nanoseconds since the Unix epoch (UTC), and
//! formatting it back as RFC 3339.
//!
//! Epoch numbers carry no unit, so the unit is taken from the magnitude:
//! today is ~1.7e9 s = 1.7e12 ms = 1.7e15 µs = 1.7e18 ns, and the cut-offs
//! below sit three decades apart between those, which keeps every date
//! between 1973 and 2286 unambiguous.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};

/// Nanoseconds per second.
pub const NANOS_PER_SEC: i64 = 1_000_000_000;

/// Below this magnitude an epoch number is in seconds.
const SECONDS_BELOW: f64 = 1e11;
/// Below this magnitude (and above [`SECONDS_BELOW`]) it is in milliseconds.
const MILLIS_BELOW: f64 = 1e14;
/// Below this magnitude (and above [`MILLIS_BELOW`]) it is in microseconds;
/// anything larger is nanoseconds.
const MICROS_BELOW: f64 = 1e17;

/// A string that is not a timestamp in any accepted form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{value:?} is not a timestamp ({reason}); expected RFC 3339, `YYYY-MM-DD hh:mm:ss[.fff]` (UTC) or an epoch number in s, ms, µs or ns"
)]
pub struct TimestampError {
    /// The text that failed, as given.
    pub value: String,
    /// What was wrong with it.
    pub reason: &'static str,
}

fn err(value: &str, reason: &'static str) -> TimestampError {
    TimestampError {
        value: value.to_string(),
        reason,
    }
}

/// Nanoseconds per unit of an epoch number of magnitude `abs`.
fn unit_nanos(abs: f64) -> i64 {
    if abs < SECONDS_BELOW {
        NANOS_PER_SEC
    } else if abs < MILLIS_BELOW {
        1_000_000
    } else if abs < MICROS_BELOW {
        1_000
    } else {
        1
    }
}

/// Converts an epoch number whose unit is detected by magnitude to nanoseconds:
/// |v| < 1e11 is seconds, < 1e14 milliseconds, < 1e17 microseconds, else
/// nanoseconds. Fractions below a nanosecond are truncated toward zero.
///
/// Returns `None` for NaN, infinities and values outside the `i64` nanosecond
/// range (years before 1677 or after 2262).
pub fn epoch_to_nanos(v: f64) -> Option<i64> {
    if !v.is_finite() {
        return None;
    }
    let ns = v * unit_nanos(v.abs()) as f64;
    // `as` saturates, so check the range explicitly (2^63 is exact in f64).
    if ns >= -(2f64.powi(63)) && ns < 2f64.powi(63) {
        Some(ns as i64)
    } else {
        None
    }
}

/// Exact integer variant of [`epoch_to_nanos`]: same magnitude rule, no
/// rounding. Results beyond the `i64` range saturate (seconds beyond
/// year 2262 are not a real use).
pub fn epoch_int_to_nanos(v: i64) -> i64 {
    v.saturating_mul(unit_nanos(v.unsigned_abs() as f64))
}

/// Parses a timestamp in any accepted form to nanoseconds since the epoch, UTC.
///
/// Accepted: RFC 3339 (`2020-03-09T10:14:33Z`, `…+01:00`, fractional seconds,
/// `T` or space between date and time); `YYYY-MM-DD hh:mm:ss[.fff]` or
/// `YYYY-MM-DDThh:mm:ss[.fff]` without a zone, taken as UTC; epoch numbers,
/// integer or decimal (exact to the nanosecond) or in exponent notation, with
/// the unit detected by magnitude as in [`epoch_to_nanos`]. Surrounding
/// whitespace is ignored.
///
/// # Errors
/// [`TimestampError`] naming the text when it matches none of these forms or
/// lies outside the representable range (years 1677 to 2262).
pub fn parse_timestamp(s: &str) -> Result<i64, TimestampError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(err(s, "empty"));
    }
    // A number has a '-' only as its sign or its exponent's sign; a date has
    // one after its year.
    let b = t.as_bytes();
    let looks_numeric = b.iter().enumerate().all(|(i, &c)| match c {
        b'0'..=b'9' | b'+' | b'.' | b'e' | b'E' => true,
        b'-' => i == 0 || matches!(b[i - 1], b'e' | b'E'),
        _ => false,
    });
    if looks_numeric {
        return parse_epoch(s, t);
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return dt
            .timestamp_nanos_opt()
            .ok_or_else(|| err(s, "outside the years 1677 to 2262"));
    }
    // chrono's RFC 3339 parser wants upper- or lower-case `Z` only; accept a
    // trailing ` UTC` too, which several historians write.
    let naive_text = t.strip_suffix(" UTC").unwrap_or(t);
    for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(ndt) = NaiveDateTime::parse_from_str(naive_text, fmt) {
            return ndt
                .and_utc()
                .timestamp_nanos_opt()
                .ok_or_else(|| err(s, "outside the years 1677 to 2262"));
        }
    }
    Err(err(s, "unrecognised form"))
}

/// Parses an epoch number, exactly when it is a plain decimal.
fn parse_epoch(original: &str, t: &str) -> Result<i64, TimestampError> {
    if let Ok(v) = t.parse::<i64>() {
        return Ok(epoch_int_to_nanos(v));
    }
    if let Some(ns) = parse_decimal_epoch(t) {
        return ns.ok_or_else(|| err(original, "outside the years 1677 to 2262"));
    }
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() => {
            epoch_to_nanos(v).ok_or_else(|| err(original, "outside the years 1677 to 2262"))
        }
        Ok(_) => Err(err(original, "not a finite number")),
        Err(_) => Err(err(original, "not a number")),
    }
}

/// `[+-]digits.digits` computed without going through `f64`, so
/// `1583748873.123456789` keeps its nanoseconds. `None` when `t` is not of
/// that shape; `Some(None)` when it is but overflows.
fn parse_decimal_epoch(t: &str) -> Option<Option<i64>> {
    let (negative, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (int_part, frac_part) = body.split_once('.')?;
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let int: i64 = if int_part.is_empty() {
        0
    } else {
        match int_part.parse() {
            Ok(v) => v,
            Err(_) => return Some(None),
        }
    };
    let unit = unit_nanos(int as f64);
    // The fraction of one unit, in nanoseconds: only as many digits as the
    // unit has below it matter (9 for seconds, 6 for ms, 3 for µs).
    let digits = unit.ilog10() as usize;
    let mut frac: i64 = 0;
    for i in 0..digits {
        let d = frac_part
            .as_bytes()
            .get(i)
            .map_or(0, |b| i64::from(b - b'0'));
        frac = frac * 10 + d;
    }
    let magnitude = int.checked_mul(unit).and_then(|v| v.checked_add(frac));
    Some(magnitude.map(|m| if negative { -m } else { m }))
}

/// Formats nanoseconds since the epoch as RFC 3339 in UTC with a `Z`, e.g.
/// `2020-03-09T10:14:33Z`; fractional seconds appear only when non-zero, with
/// trailing zeros dropped (`…:33.5Z`, `…:33.000123Z`).
pub fn format_rfc3339(ns: i64) -> String {
    let dt: DateTime<Utc> = DateTime::from_timestamp_nanos(ns);
    let mut s = dt.to_rfc3339_opts(SecondsFormat::Nanos, true);
    // `…:SS.nnnnnnnnnZ`: drop trailing zeros, and the dot if nothing is left.
    if let Some(dot) = s.rfind('.') {
        let mut end = s.len() - 1; // index of 'Z'
        while end > dot + 1 && s.as_bytes()[end - 1] == b'0' {
            end -= 1;
        }
        if end == dot + 1 {
            end = dot;
        }
        s.replace_range(end..s.len() - 1, "");
    }
    s
}

/// The wall clock in the representation used everywhere here: nanoseconds
/// since the Unix epoch. A clock set before 1970 reads as 0 rather than
/// failing: callers use it to stamp receive times and ages, never to order
/// events that carry their own timestamps.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2020-03-09T10:14:33Z, the first row of SKAB valve1/0.csv.
    const SKAB_FIRST: i64 = 1_583_748_873 * NANOS_PER_SEC;

    #[test]
    fn parses_rfc3339_with_zone_offset_and_fraction() {
        assert_eq!(parse_timestamp("2020-03-09T10:14:33Z").unwrap(), SKAB_FIRST);
        assert_eq!(parse_timestamp("2020-03-09t10:14:33z").unwrap(), SKAB_FIRST);
        assert_eq!(
            parse_timestamp("2020-03-09T11:14:33+01:00").unwrap(),
            SKAB_FIRST
        );
        assert_eq!(
            parse_timestamp("2020-03-09T10:14:33.123456789Z").unwrap(),
            SKAB_FIRST + 123_456_789
        );
        assert_eq!(
            parse_timestamp("  2020-03-09T10:14:33.5-00:30 ").unwrap(),
            SKAB_FIRST + 1_800 * NANOS_PER_SEC + 500_000_000
        );
    }

    #[test]
    fn parses_zoneless_date_time_as_utc() {
        assert_eq!(parse_timestamp("2020-03-09 10:14:33").unwrap(), SKAB_FIRST);
        assert_eq!(parse_timestamp("2020-03-09T10:14:33").unwrap(), SKAB_FIRST);
        assert_eq!(
            parse_timestamp("2020-03-09 10:14:33.25").unwrap(),
            SKAB_FIRST + 250_000_000
        );
        assert_eq!(
            parse_timestamp("2020-03-09 10:14:33 UTC").unwrap(),
            SKAB_FIRST
        );
    }

    #[test]
    fn parses_epoch_numbers_by_magnitude() {
        assert_eq!(parse_timestamp("1583748873").unwrap(), SKAB_FIRST);
        assert_eq!(parse_timestamp("1583748873000").unwrap(), SKAB_FIRST);
        assert_eq!(parse_timestamp("1583748873000000").unwrap(), SKAB_FIRST);
        assert_eq!(parse_timestamp("1583748873000000000").unwrap(), SKAB_FIRST);
        // Decimals are exact to the nanosecond.
        assert_eq!(
            parse_timestamp("1583748873.123456789").unwrap(),
            SKAB_FIRST + 123_456_789
        );
        assert_eq!(
            parse_timestamp("1583748873123.5").unwrap(),
            SKAB_FIRST + 123_500_000
        );
        assert_eq!(parse_timestamp("1.583748873e9").unwrap(), SKAB_FIRST);
        assert_eq!(parse_timestamp("-1.5").unwrap(), -1_500_000_000);
        assert_eq!(parse_timestamp("0").unwrap(), 0);
    }

    #[test]
    fn epoch_conversions() {
        assert_eq!(epoch_to_nanos(1.5), Some(1_500_000_000));
        assert_eq!(epoch_to_nanos(1.583_748_873e12), Some(SKAB_FIRST));
        assert_eq!(epoch_to_nanos(1.583_748_873e15), Some(SKAB_FIRST));
        assert_eq!(epoch_to_nanos(1.583_748_873e18), Some(SKAB_FIRST));
        assert_eq!(epoch_to_nanos(f64::NAN), None);
        assert_eq!(epoch_to_nanos(f64::INFINITY), None);
        assert_eq!(epoch_to_nanos(1e30), None);
        assert_eq!(epoch_int_to_nanos(1_583_748_873), SKAB_FIRST);
        assert_eq!(epoch_int_to_nanos(1_583_748_873_000), SKAB_FIRST);
        assert_eq!(epoch_int_to_nanos(1_583_748_873_000_000), SKAB_FIRST);
        assert_eq!(epoch_int_to_nanos(SKAB_FIRST), SKAB_FIRST);
        assert_eq!(epoch_int_to_nanos(-5), -5 * NANOS_PER_SEC);
        assert_eq!(epoch_int_to_nanos(i64::MIN), i64::MIN);
        assert_eq!(epoch_int_to_nanos(99_999_999_999), i64::MAX);
    }

    #[test]
    fn errors_name_the_text() {
        for bad in [
            "",
            "  ",
            "yesterday",
            "2020-13-09 10:14:33",
            "2020-03-09",
            "1.2.3",
            "nan",
            "inf",
            "9999-01-01T00:00:00Z",
            "-",
            ".",
        ] {
            let e = parse_timestamp(bad).unwrap_err();
            assert_eq!(e.value, bad);
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn formats_rfc3339_with_fraction_only_when_needed() {
        assert_eq!(format_rfc3339(SKAB_FIRST), "2020-03-09T10:14:33Z");
        assert_eq!(
            format_rfc3339(SKAB_FIRST + 500_000_000),
            "2020-03-09T10:14:33.5Z"
        );
        assert_eq!(
            format_rfc3339(SKAB_FIRST + 123_000),
            "2020-03-09T10:14:33.000123Z"
        );
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59.999999999Z");
        for ns in [SKAB_FIRST, SKAB_FIRST + 1, -1, 0, i64::MAX, i64::MIN] {
            assert_eq!(parse_timestamp(&format_rfc3339(ns)).unwrap(), ns);
        }
    }
}
