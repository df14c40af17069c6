//! Unit tests of the target-FAR calibration: the tail fit recovers known
//! tails, the alarm statistic bounds the detector, and the calibrated
//! threshold holds its rate on fresh data from the same process.

use super::*;

/// A deterministic uniform generator (SplitMix64), so the tests need no
/// random-number crate and give the same numbers everywhere.
struct Uniform(u64);

impl Uniform {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn defaults(raise: u32, clear: u32, ratio: f32, smoothing: f32) -> DetectorDefaults {
    DetectorDefaults {
        raise_after: raise,
        clear_after: clear,
        clear_ratio: ratio,
        smoothing,
    }
}

#[test]
fn tail_fit_recovers_exponential_and_pareto_tails() {
    let mut u = Uniform(7);
    // Exponential(1): shape 0, and P(X > z) = exp(-z).
    let exp = sorted((0..20_000).map(|_| -u.next().ln()).collect());
    let t = TailFit::fit(&exp, 0.8).unwrap();
    assert!(t.shape.abs() < 0.05, "{t:?}");
    assert!((t.scale - 1.0).abs() < 0.05, "{t:?}");
    let z = t.quantile_above(1e-3);
    assert!((z / 1e3f64.ln() - 1.0).abs() < 0.1, "{z}");
    assert!((t.exceedance(z) - 1e-3).abs() < 1e-9);
    // Pareto with tail index 4 (shape 0.25): P(X > z) = z^-4 for z >= 1.
    let par = sorted((0..20_000).map(|_| u.next().powf(-0.25)).collect());
    let t = TailFit::fit(&par, 0.8).unwrap();
    assert!((t.shape - 0.25).abs() < 0.05, "{t:?}");
    let z = t.quantile_above(1e-3);
    let truth = 1e-3f64.powf(-0.25);
    assert!((z / truth - 1.0).abs() < 0.1, "{z} vs {truth}");
    // Bounded (uniform, shape -1): the shape is clamped at -0.5, which
    // puts the tail's end a little beyond the true one (1.0): on the safe
    // side.
    let uni = sorted((0..20_000).map(|_| u.next()).collect());
    let t = TailFit::fit(&uni, 0.8).unwrap();
    assert_eq!(t.shape, -SHAPE_LIMIT, "{t:?}");
    let z = t.quantile_above(1e-4);
    assert!(z > 0.99 && z < 1.15, "{z}");
}

#[test]
fn tail_fit_needs_enough_spread_values() {
    assert!(TailFit::fit(&[1.0, 2.0, 3.0], 0.5).is_none());
    assert!(TailFit::fit(&[1.0; 50], 0.8).is_none());
}

#[test]
fn alarm_statistic_is_the_running_maximum_within_a_source() {
    let m = alarm_statistic(
        &[1.0, 3.0, 2.0, 0.0, 0.5, 4.0, 0.0],
        &[0, 0, 0, 0, 1, 1, 1],
        2,
    );
    assert_eq!(m, vec![1.0, 3.0, 3.0, 2.0, 0.5, 4.0, 4.0]);
    assert_eq!(alarm_statistic(&[1.0, 0.0], &[0, 0], 1), vec![1.0, 0.0]);
}

#[test]
fn simulated_far_is_the_detectors_time_in_alarm() {
    // No smoothing, raise after 2 above 1.0, clear after 2 below 0.5.
    let d = defaults(2, 2, 0.5, 1.0);
    let scores = [2.0, 2.0, 0.8, 0.4, 0.4, 0.0, 0.0, 0.0];
    // Raised at the 2nd window, still open at the 3rd (0.8 is not below
    // 0.5) and the 4th, cleared at the 5th: 3 of 8 windows in alarm.
    let far = simulate_far(&scores, &[0; 8], 1.0, &d);
    assert!((far - 3.0 / 8.0).abs() < 1e-12, "{far}");
    // A new source starts a new detector: one window above is not enough.
    let far = simulate_far(&[2.0, 2.0], &[0, 1], 1.0, &d);
    assert_eq!(far, 0.0);
}

/// AR(1) scores, as smooth and correlated as real window scores:
/// `x_t = 0.9 x_{t-1} + e_t`, scores `exp(x_t / 2)` (log-normal marginals).
fn correlated_scores(n: usize, seed: u64) -> Vec<f32> {
    let mut u = Uniform(seed);
    let mut x = 0.0f64;
    (0..n)
        .map(|_| {
            // Box-Muller.
            let e = (-2.0 * u.next().ln()).sqrt() * (std::f64::consts::TAU * u.next()).cos();
            x = 0.9 * x + 0.44 * e;
            (x / 2.0).exp() as f32
        })
        .collect()
}

fn smooth_max(scores: &[f32], alpha: f32) -> f32 {
    crate::calibrate::smooth(scores, &vec![0; scores.len()], alpha)
        .into_iter()
        .fold(f32::MIN, f32::max)
}

#[test]
fn threshold_holds_its_rate_with_many_windows_not_with_few() {
    let d = defaults(3, 5, 0.8, 0.1);
    // 2,000 held-out windows: the target is inside the data (conformal).
    let cal = correlated_scores(2_000, 11);
    let c = threshold_for_far(&cal, &vec![0; cal.len()], &d, 0.01).unwrap();
    assert_eq!(c.source, QuantileSource::Conformal);
    assert!(c.observed_far <= 0.01 + 1e-12, "{c:?}");
    // On 200,000 fresh windows of the same process the detector stays
    // near the target (the bound is conservative: below it, not far).
    let fresh = correlated_scores(200_000, 12);
    let far = simulate_far(&fresh, &vec![0; fresh.len()], c.threshold as f32, &d);
    assert!(far < 0.02 && far > 0.0005, "fresh FAR {far}, {c:?}");
    // 60 windows: the target is beyond the conformal rank, the tail fit
    // extrapolates.
    let few = correlated_scores(60, 13);
    let c = threshold_for_far(&few, &vec![0; few.len()], &d, 0.01).unwrap();
    assert!(
        matches!(c.source, QuantileSource::TailFit | QuantileSource::Largest),
        "{c:?}"
    );
    assert!(c.expected_far >= 0.01 - 1e-12);
    assert!(
        c.threshold * 0.8 > f64::from(smooth_max(&few, 0.1)),
        "{c:?}"
    );
    // What 60 correlated windows cannot promise: they are a handful of
    // independent looks, their tail is too short, and fresh data of the
    // same process alarms far more often than the target (about 17 %
    // here). This is why the trainer also scores its training windows out
    // of fold (docs/far-calibration.md §2-3).
    let far = simulate_far(&fresh, &vec![0; fresh.len()], c.threshold as f32, &d);
    assert!(far > 0.01, "fresh FAR {far}, {c:?}");
}

#[test]
fn a_lower_target_gives_a_higher_threshold_and_bad_targets_are_refused() {
    let d = defaults(3, 5, 0.8, 0.1);
    let s = correlated_scores(500, 3);
    let src = vec![0; s.len()];
    let t1 = threshold_for_far(&s, &src, &d, 0.05).unwrap().threshold;
    let t2 = threshold_for_far(&s, &src, &d, 0.01).unwrap().threshold;
    let t3 = threshold_for_far(&s, &src, &d, 0.001).unwrap().threshold;
    assert!(t1 < t2 && t2 < t3, "{t1} {t2} {t3}");
    for bad in [0.0, 1.0, -0.1, f64::NAN] {
        assert!(threshold_for_far(&s, &src, &d, bad).is_err(), "{bad}");
    }
    assert!(threshold_for_far(&[f32::NAN], &[0], &d, 0.01).is_err());
}
