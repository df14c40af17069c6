//! Tests of the aligner: on-grid and jittered rows, lateness, imputation,
//! gaps, warm-up and the watermark clock.

use super::*;

const S: i64 = 1_000_000_000;
/// An on-grid start time (2020-03-09T10:14:33Z).
const T0: i64 = 1_583_748_873 * S;

fn aligner(channels: usize) -> Aligner {
    Aligner::new(channels, AlignerConfig::for_period(S))
}

fn ts_of(frames: &[Frame]) -> Vec<i64> {
    frames.iter().map(|f| (f.ts - T0) / S).collect()
}

#[test]
fn one_frame_per_on_grid_row() {
    let mut a = aligner(3);
    let mut out = Vec::new();
    for i in 0..100 {
        let v = i as f64;
        a.push_row(T0 + i * S, &[v, v * 2.0, -v], &mut out);
        // A row on the tick closes its own frame at once.
        assert_eq!(out.len() as i64, i + 1);
    }
    a.flush(&mut out);
    assert_eq!(out.len(), 100);
    for (i, f) in out.iter().enumerate() {
        assert_eq!(f.ts, T0 + i as i64 * S);
        let v = i as f32;
        assert_eq!(f.values, [v, v * 2.0, -v]);
        assert_eq!(f.imputed, [false; 3]);
        assert!(!f.gap_before);
    }
    let s = a.stats();
    assert_eq!(
        (
            s.readings,
            s.frames,
            s.late,
            s.imputed_values,
            s.warmup_frames,
            s.gaps
        ),
        (300, 100, 0, 0, 0, 0)
    );
    // Flushing again changes nothing.
    a.flush(&mut out);
    assert_eq!(out.len(), 100);
}

#[test]
fn off_grid_rows_land_on_the_next_tick() {
    let mut a = aligner(1);
    let mut out = Vec::new();
    for i in 0..4 {
        a.push_row(T0 + i * S + S / 2, &[i as f64], &mut out);
    }
    a.flush(&mut out);
    // Ticks 1, 2, 3 hold the rows at 0.5, 1.5, 2.5; the row at 3.5 has no
    // tick at or after it yet.
    assert_eq!(ts_of(&out), [1, 2, 3]);
    assert_eq!(
        out.iter().map(|f| f.values[0]).collect::<Vec<_>>(),
        [0.0, 1.0, 2.0]
    );
}

#[test]
fn skipped_tick_repeats_the_last_value_without_imputing() {
    // SKAB-like: rows 1 s apart with an occasional 2 s step.
    let mut a = aligner(1);
    let mut out = Vec::new();
    for (t, v) in [(0, 1.0), (1, 2.0), (3, 3.0), (4, 4.0)] {
        a.push_row(T0 + t * S, &[v], &mut out);
    }
    a.flush(&mut out);
    assert_eq!(ts_of(&out), [0, 1, 2, 3, 4]);
    assert_eq!(
        out.iter().map(|f| f.values[0]).collect::<Vec<_>>(),
        [1.0, 2.0, 2.0, 3.0, 4.0]
    );
    assert!(out.iter().all(|f| f.imputed == [false]));
}

#[test]
fn imputes_after_max_age_and_marks_it() {
    let mut a = aligner(2);
    let mut out = Vec::new();
    for t in 0..10 {
        a.push(0, T0 + t * S, t as f64, &mut out);
        if t <= 2 {
            a.push(1, T0 + t * S, 100.0 + t as f64, &mut out);
        }
    }
    a.flush(&mut out);
    assert_eq!(ts_of(&out), (0..10).collect::<Vec<_>>());
    for f in &out {
        let t = (f.ts - T0) / S;
        // Channel 1 stopped at t=2: ages 1..3 are fine, 4+ are imputed.
        assert_eq!(f.imputed, [false, t > 5], "t={t}");
        assert_eq!(f.values[1], 100.0 + t.min(2) as f32);
        assert_eq!(f.values[0], t as f32);
    }
    assert_eq!(a.stats().imputed_values, 4);
}

#[test]
fn late_readings_are_counted_and_dropped() {
    let mut a = aligner(1);
    let mut out = Vec::new();
    for t in 0..6 {
        a.push(0, T0 + t * S, 1.0, &mut out);
    }
    // Every channel reached tick 5: ticks up to 5 are out.
    assert_eq!(ts_of(&out), [0, 1, 2, 3, 4, 5]);
    assert_eq!(a.push(0, T0 + 5 * S, 9.0, &mut out), PushOutcome::Late);
    assert_eq!(a.push(0, T0 + 2 * S + 1, 9.0, &mut out), PushOutcome::Late);
    // Just after the last emitted tick is still on time.
    assert_eq!(
        a.push(0, T0 + 5 * S + 1, 7.0, &mut out),
        PushOutcome::Accepted
    );
    a.push_row(T0, &[1.0], &mut out);
    assert_eq!(a.stats().late, 3);
    assert_eq!(out.len(), 6);
    a.push(0, T0 + 6 * S + 1, 8.0, &mut out);
    // Tick 6 holds the reading at 5.000000001 s, the newest at or before it.
    assert_eq!(ts_of(&out), [0, 1, 2, 3, 4, 5, 6]);
    assert_eq!(out[5].values, [1.0]);
    assert_eq!(out[6].values, [7.0]);
}

#[test]
fn out_of_order_within_lateness_is_used() {
    let mut a = aligner(2);
    let mut out = Vec::new();
    a.push(0, T0, 0.0, &mut out);
    a.push(1, T0, 10.0, &mut out);
    a.push(0, T0 + S, 1.0, &mut out);
    a.push(0, T0 + 2 * S, 2.0, &mut out);
    assert_eq!(ts_of(&out), [0]);
    // Channel 1's reading for t=1 arrives after channel 0's t=2 and
    // closes tick 1 at once.
    assert_eq!(a.push(1, T0 + S, 11.0, &mut out), PushOutcome::Accepted);
    assert_eq!(ts_of(&out), [0, 1]);
    // Out of order within one channel between two ticks: both count,
    // the newer timestamp wins.
    assert_eq!(
        a.push(1, T0 + S * 7 / 4, 11.75, &mut out),
        PushOutcome::Accepted
    );
    assert_eq!(
        a.push(1, T0 + S * 3 / 2, 11.5, &mut out),
        PushOutcome::Accepted
    );
    assert_eq!(ts_of(&out), [0, 1]);
    a.flush(&mut out);
    assert_eq!(ts_of(&out), [0, 1, 2]);
    assert_eq!(out[1].values, [1.0, 11.0]);
    assert_eq!(out[2].values, [2.0, 11.75]);
    assert_eq!(a.stats().late, 0);
    // Before a closed tick it is late.
    assert_eq!(a.push(1, T0 + S / 2, 10.5, &mut out), PushOutcome::Late);
}

#[test]
fn long_silence_is_a_gap_short_one_is_bridged() {
    let mut a = aligner(1);
    let mut out = Vec::new();
    for t in (0..5).chain(30..35).chain(200..203) {
        a.push_row(T0 + t * S, &[t as f64], &mut out);
    }
    a.flush(&mut out);
    let ticks = ts_of(&out);
    // 25 s is bridged (frames 5..29 carry the value of t=4, imputed
    // after 3 s); 165 s is more than 60 frames: not filled in.
    let expected: Vec<i64> = (0..35).chain(200..203).collect();
    assert_eq!(ticks, expected);
    let f8 = &out[8];
    assert_eq!((f8.values[0], f8.imputed[0]), (4.0, true));
    assert!(!out[7].imputed[0]);
    assert_eq!(out.iter().filter(|f| f.gap_before).count(), 1);
    assert!(out[35].gap_before && out[35].ts == T0 + 200 * S);
    assert_eq!(a.stats().gaps, 1);
}

#[test]
fn warmup_frames_are_dropped_until_every_channel_spoke() {
    let mut a = aligner(2);
    let mut out = Vec::new();
    for t in 0..6 {
        a.push(0, T0 + t * S, t as f64, &mut out);
        if t >= 2 {
            a.push(1, T0 + t * S, 50.0, &mut out);
        }
    }
    a.flush(&mut out);
    assert_eq!(ts_of(&out), [2, 3, 4, 5]);
    assert_eq!(a.stats().warmup_frames, 2);
    assert!(out.iter().all(|f| !f.gap_before));
}

#[test]
fn a_reading_in_a_warmup_tick_still_counts_as_last_value() {
    let mut a = aligner(2);
    let mut out = Vec::new();
    for t in 0..5 {
        a.push(0, T0 + t * S, t as f64, &mut out);
    }
    assert_eq!(a.stats().warmup_frames, 3); // ticks 0..=2 passed the watermark
    // Channel 1 reports a value measured at t=0.5, before the first emitted frame.
    assert_eq!(a.push(1, T0 + S / 2, 5.0, &mut out), PushOutcome::Accepted);
    a.flush(&mut out);
    assert_eq!(ts_of(&out), [3, 4]);
    assert_eq!(out[0].values, [3.0, 5.0]);
    assert_eq!(out[0].imputed, [false, false]);
    assert_eq!(out[1].imputed, [false, true]);
}

#[test]
fn watermark_from_a_clock_closes_frames_of_silent_channels() {
    let mut a = aligner(2);
    let mut out = Vec::new();
    a.push_row(T0, &[1.0, 2.0], &mut out);
    assert_eq!(ts_of(&out), [0]);
    a.advance_to(T0 + 5 * S, &mut out);
    // tick + 2 s lateness <= 5 s
    assert_eq!(ts_of(&out), [0, 1, 2, 3]);
    assert_eq!(out[3].imputed, [false, false]);
    a.advance_to(T0 + 7 * S, &mut out);
    assert_eq!(ts_of(&out), [0, 1, 2, 3, 4, 5]);
    assert_eq!(out[4].imputed, [true, true]);
    // A clock far ahead: frames stop 60 ticks after the data, one gap.
    a.advance_to(T0 + 10_000 * S, &mut out);
    assert_eq!(out.last().map(|f| f.ts), Some(T0 + 60 * S));
    assert_eq!(a.stats().gaps, 1);
    // Data resumes: the first frame says there was a gap.
    let n = out.len();
    a.push_row(T0 + 10_001 * S, &[3.0, 4.0], &mut out);
    a.flush(&mut out);
    assert_eq!(out.len(), n + 1);
    assert!(out[n].gap_before);
    assert_eq!(out[n].values, [3.0, 4.0]);
    assert_eq!(a.stats().gaps, 1);
    // Before any reading a clock does nothing.
    let mut b = aligner(1);
    b.advance_to(T0, &mut out);
    assert_eq!(b.stats().frames, 0);
}

#[test]
fn non_finite_values_are_counted_not_stored() {
    let mut a = aligner(2);
    let mut out = Vec::new();
    assert_eq!(a.push(0, T0, f64::NAN, &mut out), PushOutcome::NonFinite);
    assert_eq!(
        a.push(0, T0, f64::INFINITY, &mut out),
        PushOutcome::NonFinite
    );
    assert_eq!(a.push(5, T0, 1.0, &mut out), PushOutcome::UnknownChannel);
    a.push_row(T0, &[1.0, 2.0], &mut out);
    a.push_row(T0 + S, &[f64::NAN, 3.0], &mut out);
    a.push_row(T0 + 2 * S, &[f64::NAN, f64::NAN], &mut out);
    a.push_row(T0 + 3 * S, &[4.0, 5.0], &mut out);
    a.flush(&mut out);
    assert_eq!(ts_of(&out), [0, 1, 2, 3]);
    assert_eq!(out[1].values, [1.0, 3.0]);
    assert_eq!(out[2].values, [1.0, 3.0]);
    let s = a.stats();
    assert_eq!(s.non_finite, 5);
    assert_eq!(s.readings, 10);
}

#[test]
fn frames_come_in_tick_order_exactly_once_and_memory_stays_bounded() {
    let mut a = aligner(3);
    let mut out = Vec::new();
    // A deterministic shuffle within 1.5 s of jitter; channel 2 goes
    // silent for good after a while.
    let mut x: u64 = 7;
    for i in 0..20_000i64 {
        for c in 0..3 {
            if c == 2 && i > 100 {
                continue;
            }
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let jitter = ((x >> 33) % 1_500) as i64 * 1_000_000;
            a.push(c, T0 + i * S - jitter, 1.0, &mut out);
            assert!(a.pending_ticks() <= 4, "{}", a.pending_ticks());
        }
    }
    a.flush(&mut out);
    assert!(out.windows(2).all(|w| w[1].ts == w[0].ts + S));
    assert!(out.len() > 19_990, "{}", out.len());
}

#[test]
fn a_timestamp_far_ahead_does_not_stall() {
    let mut a = aligner(1);
    let mut out = Vec::new();
    a.push_row(T0, &[1.0], &mut out);
    a.push_row(i64::MAX - 5, &[2.0], &mut out);
    a.push_row(i64::MAX, &[2.0], &mut out);
    a.flush(&mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(a.stats().gaps, 1);
    let mut b = aligner(1);
    b.push_row(i64::MIN, &[1.0], &mut out);
    b.push_row(i64::MIN + 1, &[1.0], &mut out);
    b.push(0, -5, 1.0, &mut out);
    b.flush(&mut out);
}

#[test]
fn duplicate_timestamps_keep_the_later_value() {
    let mut a = aligner(2);
    let mut out = Vec::new();
    a.push(0, T0, 1.0, &mut out);
    a.push(0, T0, 2.0, &mut out);
    a.push(1, T0, 5.0, &mut out);
    assert_eq!(out[0].values, [2.0, 5.0]);
    // Once the tick is closed, the same timestamp again (a redelivery) is
    // late: counted, not a second frame.
    assert_eq!(a.push(1, T0, 6.0, &mut out), PushOutcome::Late);
    a.flush(&mut out);
    assert_eq!(out.len(), 1);
}

#[test]
fn reset_forgets_readings_but_keeps_counters() {
    let mut a = aligner(1);
    let mut out = Vec::new();
    for t in 0..5 {
        a.push_row(T0 + t * S, &[1.0], &mut out);
    }
    a.reset();
    // An earlier time is no longer late after a reset.
    a.push_row(T0, &[3.0], &mut out);
    a.flush(&mut out);
    assert_eq!(out.last().map(|f| (f.ts, f.values[0])), Some((T0, 3.0)));
    assert_eq!(a.stats().readings, 6);
    assert_eq!(a.stats().late, 0);
}

#[test]
fn odd_configs_do_not_panic() {
    let cfg = AlignerConfig {
        period_ns: 0,
        max_age_ns: -1,
        allowed_lateness_ns: i64::MAX,
        max_gap_frames: usize::MAX,
    };
    let mut a = Aligner::new(2, cfg);
    assert_eq!(a.config().period_ns, 1);
    let mut out = Vec::new();
    a.push_row(0, &[1.0, 2.0], &mut out);
    a.push_row(10, &[1.0, 2.0], &mut out);
    a.flush(&mut out);
    assert_eq!(out.len(), 11);
    let mut z = Aligner::new(0, AlignerConfig::for_period(S));
    z.push_row(0, &[1.0], &mut out);
    z.flush(&mut out);
}
