//! Unit tests of the score, the weights, smoothing and both threshold rules.
use super::*;

#[test]
fn channel_errors_and_scores_follow_the_score_definition() {
    // 1 window, 2 channels, T = 2.
    let x = [0.0, 0.0, 1.0, 1.0];
    let r = [1.0, 1.0, 1.0, 3.0];
    let e = channel_errors(&x, &r, 2, ChannelError::Mse);
    assert_eq!(e, vec![1.0, 2.0]);
    assert_eq!(scores(&e, &[1.0, 1.0], Aggregation::Mean), vec![1.5]);
    assert_eq!(scores(&e, &[3.0, 1.0], Aggregation::Mean), vec![1.25]);
    assert_eq!(scores(&e, &[3.0, 1.0], Aggregation::Max), vec![3.0]);
    assert_eq!(scores(&e, &[1.0, 1.0], Aggregation::Max), vec![2.0]);
}

#[test]
fn recent_bias_is_the_squared_mean_residual_of_the_last_frames() {
    // 1 window, 2 channels, T = 4, residuals x - r:
    // channel 0: 5, -1, 1, 3 -> last 2 mean 2 -> 4;
    // channel 1: 0, 0, -1, -1 -> last 2 mean -1 -> 1.
    let x = [5.0, -1.0, 1.0, 3.0, 0.0, 0.0, -1.0, -1.0];
    let r = [0.0; 8];
    let e = channel_errors(&x, &r, 4, ChannelError::RecentBias { frames: 2 });
    assert_eq!(e, vec![4.0, 1.0]);
    // All frames: channel 0 mean 2 -> 4, channel 1 mean -0.5 -> 0.25.
    let e = channel_errors(&x, &r, 4, ChannelError::RecentBias { frames: 4 });
    assert_eq!(e, vec![4.0, 0.25]);
    // Recent MSE, last 2 frames: channel 0 (1 + 9) / 2 = 5 (bias 4 plus
    // spread 1); channel 1 (1 + 1) / 2 = 1 (all bias).
    let e = channel_errors(&x, &r, 4, ChannelError::RecentMse { frames: 2 });
    assert_eq!(e, vec![5.0, 1.0]);
}

#[test]
fn smoothing_restarts_at_each_source() {
    let s = smooth(&[2.0, 0.0, 0.0, 4.0, 0.0], &[0, 0, 0, 1, 1], 0.5);
    assert_eq!(s, vec![2.0, 1.0, 0.5, 4.0, 2.0]);
    assert_eq!(smooth(&[2.0, 0.0], &[0, 0], 1.0), vec![2.0, 0.0]);
}

#[test]
fn inverse_error_weights_have_mean_one() {
    let e = [1.0, 0.5, 1.0, 0.5];
    let w = channel_weights(ChannelWeighting::InverseValidationError, &e, 2);
    assert!((w[0] + w[1] - 2.0).abs() < 1e-6);
    assert!((w[1] / w[0] - 2.0).abs() < 1e-5, "{w:?}");
    assert_eq!(
        channel_weights(ChannelWeighting::Uniform, &e, 2),
        vec![1.0; 2]
    );
}

#[test]
fn quantile_interpolates() {
    let s = [0.0, 1.0, 2.0, 3.0, 4.0];
    assert_eq!(quantile(&s, 0.5), 2.0);
    assert!((quantile(&s, 0.99) - 3.96).abs() < 1e-12);
    assert_eq!(quantile(&s, 1.0), 4.0);
}

fn quantile_factor(scores: &[f32], q: f64, factor: f64) -> Calibration {
    let (spec, _) = quantile_factor_threshold(scores, q, factor).unwrap();
    calibrate(scores, spec, None).unwrap()
}

#[test]
fn threshold_is_quantile_times_factor_and_a_distribution_is_fitted() {
    // Gamma-ish scores.
    let scores: Vec<f32> = (1..=200)
        .map(|i| (i as f32 / 100.0).powi(2) + 0.01)
        .collect();
    let c = quantile_factor(&scores, 0.99, 1.5);
    let mut s: Vec<f64> = scores.iter().map(|v| f64::from(*v)).collect();
    s.sort_by(f64::total_cmp);
    let expected = (quantile(&s, 0.99) * 1.5) as f32;
    assert_eq!(c.threshold.value, expected);
    assert_eq!(c.threshold.method, "quantile*factor");
    assert_eq!(c.threshold.target_far, None);
    assert_eq!(c.candidates.len(), 2);
    assert!(c.warnings.is_empty());
    let p = c.distribution.probability(f64::from(c.threshold.value));
    assert!(p > 0.9, "{p}");
}

#[test]
fn target_far_threshold_is_stored_with_its_target() {
    let scores: Vec<f32> = (1..=300).map(|i| ((i * 37) % 101) as f32 / 100.0).collect();
    let d = detector_defaults(3, 5, 0.8, 0.1).unwrap();
    let sources = vec![0; scores.len()];
    let (spec, far) = target_far_threshold(&scores, &sources, &d, 0.01).unwrap();
    assert_eq!(spec.method, "target-far");
    assert_eq!(spec.target_far, Some(0.01));
    assert!((spec.quantile - 0.99).abs() < 1e-12);
    assert!((spec.factor - 1.25).abs() < 1e-6);
    assert_eq!(spec.value, far.threshold as f32);
    let smoothed = smooth(&scores, &sources, 0.1);
    let c = calibrate(&smoothed, spec, Some(far)).unwrap();
    // 1 / clear_ratio lifts the threshold above every smoothed score.
    assert_eq!(c.above_threshold, 0.0);
    assert!(c.far.unwrap().observed_far <= 0.01);
}

#[test]
fn tiny_validation_sets_warn_but_calibrate() {
    let c = quantile_factor(&[0.1, 0.2, 0.3], 0.99, 1.5);
    assert!(c.warnings[0].contains("only 3 validation windows"));
    assert!(c.threshold.value > 0.3);
    let c = quantile_factor(&[0.2], 0.99, 1.5);
    assert!(matches!(
        c.distribution,
        ErrorDistribution::Gamma { shape, .. } if shape == 1.0
    ));
    assert!(quantile_factor_threshold(&[], 0.99, 1.5).is_err());
    assert!(quantile_factor_threshold(&[0.1], 1.5, 1.5).is_err());
    let (spec, warning) = quantile_factor_threshold(&[0.0, 0.0], 0.99, 1.5).unwrap();
    assert_eq!(spec.value, 1e-9);
    assert!(warning.unwrap().contains("every validation score is 0"));
}

#[test]
fn detector_defaults_are_checked() {
    assert!(detector_defaults(3, 5, 0.8, 0.1).is_ok());
    assert!(detector_defaults(0, 5, 0.8, 1.0).is_err());
    assert!(detector_defaults(3, 5, 1.2, 1.0).is_err());
    assert!(detector_defaults(3, 5, 0.8, 0.0).is_err());
}
