//! Unit tests of the alert state machine and its threshold adaptation.

use super::*;

fn detector(raise: u32, clear: u32, ratio: f32) -> Detector {
    Detector::new(
        DetectorSettings {
            threshold: 1.0,
            raise_after: raise,
            clear_after: clear,
            clear_ratio: ratio,
            adapt: Adaptation::OFF,
        },
        vec!["a".to_string(), "b".to_string(), "c".to_string()].into(),
    )
}

fn feed(d: &mut Detector, scores: &[f32]) -> Vec<(bool, Option<AlertKind>)> {
    scores
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let r = d.observe(i as i64 * 1_000_000_000, s, &[s, 0.1, 0.0]);
            (r.anomalous, r.alert.map(|a| a.kind))
        })
        .collect()
}

#[test]
fn raises_only_after_consecutive_windows_above() {
    let mut d = detector(3, 2, 0.8);
    let out = feed(&mut d, &[2.0, 2.0, 0.5, 2.0, 2.0, 2.0, 2.0]);
    let states: Vec<bool> = out.iter().map(|o| o.0).collect();
    assert_eq!(states, [false, false, false, false, false, true, true]);
    assert_eq!(out[5].1, Some(AlertKind::Raised));
    assert!(out.iter().filter(|o| o.1.is_some()).count() == 1);
}

#[test]
fn clears_with_hysteresis() {
    let mut d = detector(1, 2, 0.5);
    // 0.9 is below the threshold but above threshold*clear_ratio: stays raised.
    let out = feed(&mut d, &[2.0, 0.9, 0.9, 0.4, 0.9, 0.4, 0.4]);
    let states: Vec<bool> = out.iter().map(|o| o.0).collect();
    assert_eq!(states, [true, true, true, true, true, true, false]);
    assert_eq!(out[6].1, Some(AlertKind::Cleared));
}

#[test]
fn alert_carries_episode_start_peak_and_top_channels() {
    let mut d = detector(2, 1, 0.8);
    d.observe(10, 0.2, &[0.0, 0.0, 0.0]);
    assert!(d.observe(20, 3.0, &[0.1, 5.0, 1.0]).alert.is_none());
    let raised = d.observe(30, 2.0, &[0.1, 3.0, 2.0]).alert.unwrap();
    assert_eq!(raised.kind, AlertKind::Raised);
    assert_eq!(raised.start_ts, 20);
    assert_eq!(raised.peak, 3.0);
    assert_eq!(raised.top_channels[0].0, "b");
    assert_eq!(raised.top_channels[1].0, "c");
    assert!((raised.top_channels[0].1 - 4.0).abs() < 1e-6);
    let cleared = d.observe(1_000_000_040, 0.1, &[0.0; 3]).alert.unwrap();
    assert_eq!(cleared.kind, AlertKind::Cleared);
    assert_eq!(cleared.start_ts, 20);
    assert!((cleared.duration_s() - 1.0).abs() < 1e-6);
}

#[test]
fn smoothing_averages_scores_before_the_threshold() {
    let mut d = detector(2, 1, 0.8);
    d.set_smoothing(0.5);
    // One spike does not raise: 0 -> 1.5 -> 0.75 -> 0.375.
    let s: Vec<f32> = [0.0, 3.0, 0.0, 0.0]
        .iter()
        .enumerate()
        .map(|(i, &x)| d.observe(i as i64, x, &[x, 0.0, 0.0]).score)
        .collect();
    assert_eq!(s, vec![0.0, 1.5, 0.75, 0.375]);
    assert!(!d.is_anomalous());
    // A sustained level does: 1.6875, 2.34 (second above 1.0) -> raised.
    let r1 = d.observe(10, 3.0, &[3.0, 0.0, 0.0]);
    let r2 = d.observe(11, 3.0, &[3.0, 0.0, 0.0]);
    assert!(!r1.anomalous && r2.anomalous);
    assert_eq!(r2.alert.map(|a| a.kind), Some(AlertKind::Raised));
    d.set_smoothing(7.0);
    assert_eq!(d.smoothing(), 1.0);
}

#[test]
fn non_finite_scores_are_counted_not_used() {
    let mut d = detector(1, 1, 0.8);
    let r = d.observe(0, f32::NAN, &[0.0; 3]);
    assert!(!r.anomalous && r.alert.is_none());
    assert_eq!(d.skipped_non_finite(), 1);
}

#[test]
fn restored_alert_is_not_raised_again() {
    let mut d = detector(1, 2, 0.8);
    d.restore_open_alert(5, 4.0);
    let out = feed(&mut d, &[2.0, 2.0, 0.1, 0.1]);
    assert_eq!(out[0].1, None);
    assert_eq!(out[3].1, Some(AlertKind::Cleared));
}

const HOUR_NS: i64 = 3_600_000_000_000;

/// A detector with threshold 1, reference score 0.5, the given half-life
/// (hours) and cap, fed one window a second.
fn adaptive(half_life_h: f64, max_factor: f32, raise: u32) -> Detector {
    let mut d = detector(raise, 3, 0.8);
    let mut s = *d.settings();
    s.adapt = Adaptation {
        half_life_s: half_life_h * 3600.0,
        max_factor,
        reference: 0.5,
    };
    d.set_settings(s);
    d
}

/// Feeds `n` windows of `score`, one per second from `t0`; returns the
/// decisions.
fn run(d: &mut Detector, t0: i64, n: usize, score: f32) -> Vec<Decision> {
    (0..n)
        .map(|i| d.observe(t0 + i as i64 * 1_000_000_000, score, &[score, 0.0, 0.0]))
        .collect()
}

#[test]
fn adaptation_off_is_the_calibrated_threshold_exactly() {
    // Pseudo-random scores around the threshold: the detector with
    // adaptation configured but off (half-life 0, or a cap of 1) takes
    // exactly the decisions of one without it.
    let mut x = 12345u32;
    let scores: Vec<f32> = (0..5000)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 8) as f32 / (1 << 24) as f32 * 1.6
        })
        .collect();
    let plain = detector(3, 3, 0.8);
    for adapt in [
        Adaptation::OFF,
        Adaptation {
            half_life_s: 0.0,
            max_factor: 3.0,
            reference: 0.5,
        },
        Adaptation {
            half_life_s: 60.0,
            max_factor: 1.0,
            reference: 0.5,
        },
    ] {
        let (mut a, mut b) = (plain.clone(), plain.clone());
        let mut s = *b.settings();
        s.adapt = adapt;
        b.set_settings(s);
        let mut alerts = 0;
        for (i, &v) in scores.iter().enumerate() {
            let ts = i as i64 * 1_000_000_000;
            let (da, db) = (a.observe(ts, v, &[v; 3]), b.observe(ts, v, &[v; 3]));
            assert_eq!(da, db, "window {i}, {adapt:?}");
            assert_eq!(db.threshold, 1.0);
            alerts += usize::from(da.alert.is_some());
        }
        assert!(alerts > 10, "the sequence must exercise the state machine");
    }
}

#[test]
fn adapted_threshold_follows_normal_scores_within_its_bound() {
    // Never raises (raise_after huge): normal scores at 0.9 move the
    // threshold from 1 towards 0.9 / 0.5 = 1.8 with a 1 h half-life.
    let mut d = adaptive(1.0, 1.5, u32::MAX);
    assert_eq!(d.threshold(), 1.0);
    let out = run(&mut d, 0, 3600, 0.9);
    // After one half-life the average is halfway: 0.7 -> threshold 1.4.
    let h = out.last().unwrap().threshold;
    assert!((d.threshold() - 1.4).abs() < 0.01, "{}", d.threshold());
    assert!(h > 1.39 && h <= d.threshold());
    // Far more data at a higher level: capped at 1.5 x the calibrated.
    let out = run(&mut d, HOUR_NS, 36_000, 1.2);
    assert!(out.iter().all(|o| o.threshold <= 1.5));
    assert_eq!(d.threshold(), 1.5);
    // Scores below the reference bring it back, never under the calibrated.
    let out = run(&mut d, 11 * HOUR_NS, 36_000, 0.01);
    assert!(out.iter().all(|o| o.threshold >= 1.0));
    assert_eq!(d.threshold(), 1.0);
}

#[test]
fn adapted_threshold_is_frozen_while_an_alert_is_open() {
    let mut d = adaptive(0.1, 3.0, 3);
    run(&mut d, 0, 1800, 0.75);
    let before = d.threshold();
    assert!(before > 1.4 && before < 1.5, "{before}");
    // A fault far above it: raised, and hours of it move nothing (nor do
    // the windows above the threshold before the alert is raised).
    let out = run(&mut d, HOUR_NS, 7200, 5.0);
    assert_eq!(
        out[2].alert.as_ref().map(|a| a.kind),
        Some(AlertKind::Raised)
    );
    assert_eq!(out[2].alert.as_ref().unwrap().threshold, before);
    assert!(out.iter().all(|o| o.threshold == before));
    assert_eq!(d.threshold(), before);
    // It clears; the hours it was open do not count as one long step.
    let out = run(&mut d, 3 * HOUR_NS, 4, 0.5);
    assert_eq!(
        out[2].alert.as_ref().map(|a| a.kind),
        Some(AlertKind::Cleared)
    );
    assert!((d.threshold() - before).abs() < 0.01);
}

#[test]
fn a_slow_ramp_is_learned_only_up_to_the_bound() {
    // A fault that grows from 0.5 to 10 over 10 h while the baseline
    // half-life is 1 h: the threshold follows but stops at 2 x, so the
    // alert is raised, later than without adaptation.
    let first_alert = |adapt: bool| {
        let mut d = if adapt {
            adaptive(1.0, 2.0, 3)
        } else {
            detector(3, 3, 0.8)
        };
        (0..36_000i64)
            .find(|&i| {
                let v = 0.5 + 9.5 * i as f32 / 36_000.0;
                d.observe(i * 1_000_000_000, v, &[v; 3]).alert.is_some()
            })
            .expect("the ramp is raised")
    };
    let (plain, adapted) = (first_alert(false), first_alert(true));
    assert!(adapted > plain, "{adapted} vs {plain}");
    // Without the bound the baseline would keep up; with it the score must
    // only pass 2 x the calibrated threshold (about 1.6 h into the ramp).
    assert!(adapted < 2 * 3600, "{adapted}");
}
