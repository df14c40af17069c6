//! Unit tests of the data-quality watches: stale, stuck, out of range.

use super::*;

const S: i64 = 1_000_000_000;

fn names() -> Vec<String> {
    vec!["a".into(), "b".into()]
}

#[test]
fn a_silent_asset_raises_once_and_clears_when_data_returns() {
    let mut w = StaleWatch::new(2, 0);
    let mut out = Vec::new();
    w.seen(0, S);
    w.seen(1, S);
    w.check(5 * S, 0, 10 * S, &names(), &mut out);
    assert!(out.is_empty());
    w.check(11 * S, 0, 10 * S, &names(), &mut out);
    w.check(12 * S, 0, 10 * S, &names(), &mut out);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].state, AlertKind::Raised);
    assert_eq!(out[0].channel, None);
    assert_eq!(out[0].start_ts, S);
    w.seen(0, 13 * S);
    w.seen(1, 13 * S);
    out.clear();
    w.check(13 * S, 0, 10 * S, &names(), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].state, AlertKind::Cleared);
    assert_eq!(out[0].duration_s(), 12.0);
}

#[test]
fn one_silent_channel_is_named_and_a_reconnect_restarts_the_count() {
    let mut w = StaleWatch::new(2, 0);
    let mut out = Vec::new();
    for t in 0..20 {
        w.seen(0, t * S);
    }
    // Channel b never spoke: silent since the asset was first seen.
    w.check(20 * S, 0, 10 * S, &names(), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].channel.as_deref(), Some("b"));
    // A reconnect does not clear an open alarm: only a reading does.
    let mut w2 = StaleWatch::new(2, 0);
    w2.seen(0, S);
    w2.seen(1, S);
    out.clear();
    w2.check(20 * S, 0, 10 * S, &names(), &mut out);
    w2.check(30 * S, 25 * S, 10 * S, &names(), &mut out);
    assert_eq!(out.len(), 1, "raised once, not cleared: {out:?}");
    // After a reconnect at 100 s the asset is not silent before 110 s.
    let mut w = StaleWatch::new(2, 0);
    w.seen(0, S);
    w.seen(1, S);
    out.clear();
    w.check(105 * S, 100 * S, 10 * S, &names(), &mut out);
    assert!(out.is_empty());
    assert_eq!(w.silent_for(105 * S, 100 * S), 5 * S);
}

#[test]
fn out_of_range_needs_three_readings_and_uses_the_recorded_range() {
    let n = NormaliserParams {
        mean: vec![5.0, 0.0],
        std: vec![1.0, 1.0],
        constant_channels: vec![],
        min: vec![0.0, -1.0],
        max: vec![10.0, 1.0],
    };
    // Allowed: [0 - 5, 10 + 5] for a; [-2, 2] for b.
    let mut w = RangeWatch::new(&n, &names(), 0.5);
    let mut out = Vec::new();
    w.push(0, 0, 14.0, "a", &mut out);
    w.push(0, S, 16.0, "a", &mut out);
    w.push(0, 2 * S, 5.0, "a", &mut out); // one wild reading, then back
    assert!(out.is_empty());
    for t in 3..6 {
        w.push(0, t * S, 40.0, "a", &mut out);
    }
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].kind, QualityKind::OutOfRange);
    assert_eq!((out[0].start_ts, out[0].ts), (3 * S, 5 * S));
    for t in 6..9 {
        w.push(0, t * S, 5.0, "a", &mut out);
    }
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].state, AlertKind::Cleared);
    // Margin 0 turns it off.
    let mut off = RangeWatch::new(&n, &names(), 0.0);
    for t in 0..5 {
        off.push(1, t, 1e9, "b", &mut out);
    }
    assert_eq!(out.len(), 2);
}

#[test]
fn off_raises_nothing() {
    let mut w = StaleWatch::new(2, 0);
    let mut out = Vec::new();
    w.check(1000 * S, 0, 0, &names(), &mut out);
    assert!(out.is_empty());
}

#[test]
fn a_frozen_channel_raises_stuck_only_if_it_varied_in_training() {
    let set = QualitySettings {
        stuck_after_ns: 10 * S,
        stuck_tolerance: 0.01,
        ..QualitySettings::OFF
    };
    let mut w = StuckWatch::new(vec![true, false]);
    let mut out = Vec::new();
    for t in 0..30 {
        w.push(0, t * S, 5.0 + (t % 2) as f64 * 0.005, &set, "a", &mut out);
        w.push(1, t * S, 1.0, &set, "b", &mut out);
    }
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].kind, QualityKind::Stuck);
    assert_eq!(out[0].channel.as_deref(), Some("a"));
    assert_eq!((out[0].start_ts, out[0].ts), (0, 10 * S));
    w.push(0, 30 * S, 6.0, &set, "a", &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].state, AlertKind::Cleared);
    assert_eq!(out[1].value, Some(6.0));
    // Restored after a restart: still stuck stays quiet, a change clears
    // the alarm with its original start.
    let mut w = StuckWatch::new(vec![true]);
    w.restore(0, -7 * S);
    out.clear();
    w.push(0, 0, 5.0, &set, "a", &mut out);
    w.push(0, S, 5.0, &set, "a", &mut out);
    assert!(out.is_empty());
    w.push(0, 2 * S, 6.0, &set, "a", &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].state, out[0].start_ts),
        (AlertKind::Cleared, -7 * S)
    );
}
