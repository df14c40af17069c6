use super::*;
use crate::core::log::{LoadOptions, parse_csv};
use std::path::Path;

const T0: i64 = 1_700_000_000_000_000_000;
const S: i64 = 1_000_000_000;

fn channel(log: &SyntheticLog, name: &str, rows: Range<usize>) -> Vec<f64> {
    let c = PUMP_CHANNELS.iter().position(|n| *n == name).unwrap();
    log.values[rows].iter().map(|r| r[c]).collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn std(v: &[f64]) -> f64 {
    let m = mean(v);
    (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
}

/// Standard deviation of first differences: high-frequency noise.
fn diff_std(v: &[f64]) -> f64 {
    let d: Vec<f64> = v.windows(2).map(|w| w[1] - w[0]).collect();
    std(&d)
}

/// `stat` of channel `name` over `rows` of the faulty log `f` against the
/// normal log `n`.
fn fault_vs_normal(
    stat: fn(&[f64]) -> f64,
    f: &SyntheticLog,
    n: &SyntheticLog,
    name: &str,
    rows: &Range<usize>,
) -> f64 {
    stat(&channel(f, name, rows.clone())) / stat(&channel(n, name, rows.clone()))
}

fn corr(a: &[f64], b: &[f64]) -> f64 {
    let (ma, mb) = (mean(a), mean(b));
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    cov / (a.len() as f64 * std(a) * std(b))
}

#[test]
fn deterministic_per_seed() {
    let a = generate(500, 7, T0, S, Some((FaultKind::Bearing, 100..200)));
    let b = generate(500, 7, T0, S, Some((FaultKind::Bearing, 100..200)));
    assert_eq!(a, b);
    let c = generate(500, 8, T0, S, None);
    assert_ne!(a.values, c.values);
    assert_eq!(a.timestamps[3], T0 + 3 * S);
    assert_eq!(a.labels.iter().filter(|&&l| l == 1).count(), 100);
    assert_eq!(
        (a.labels[99], a.labels[100], a.labels[199], a.labels[200]),
        (0, 1, 1, 0)
    );
}

#[test]
fn values_are_finite_and_plausible_under_every_fault() {
    for seed in 0..3 {
        for fault in [
            None,
            Some(FaultKind::Bearing),
            Some(FaultKind::Cavitation),
            Some(FaultKind::Blockage),
        ] {
            let log = generate(6_000, seed, T0, S, fault.map(|k| (k, 1_000..6_000)));
            for row in &log.values {
                assert!(row.iter().all(|v| v.is_finite()), "{row:?}");
                assert!(row[0] > 0.0 && row[1] > 0.0 && row[0] < 10.0, "{row:?}");
                assert!((1.0..15.0).contains(&row[2]), "current {row:?}");
                assert!((0.0..8.0).contains(&row[3]), "pressure {row:?}");
                assert!((30.0..120.0).contains(&row[4]), "motor temp {row:?}");
                assert!((15.0..40.0).contains(&row[5]), "fluid temp {row:?}");
                assert!((215.0..245.0).contains(&row[6]), "voltage {row:?}");
                assert!((0.0..60.0).contains(&row[7]), "flow {row:?}");
            }
        }
    }
}

#[test]
fn channels_are_correlated_and_load_varies() {
    let log = generate(7_200, 3, T0, S, None);
    let all = 0..7_200;
    let current = channel(&log, "current", all.clone());
    let flow = channel(&log, "flow_rate", all.clone());
    let pressure = channel(&log, "pressure", all.clone());
    let vib = channel(&log, "vibration_1", all.clone());
    let motor = channel(&log, "motor_temp", all.clone());
    assert!(corr(&current, &flow) > 0.8, "{}", corr(&current, &flow));
    assert!(corr(&current, &pressure) > 0.8);
    assert!(corr(&vib, &flow) > 0.5, "{}", corr(&vib, &flow));
    // Motor temperature follows current with a lag: it correlates better
    // with the current of a few minutes before than with the current now.
    let lag = 240;
    let lagged = corr(&motor[lag..], &current[..current.len() - lag]);
    assert!(lagged > corr(&motor, &current), "{lagged}");
    // Load changes over minutes: flow spans a real range.
    let (lo, hi) = flow
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    assert!(hi - lo > 8.0, "{lo}..{hi}");
    let voltage = channel(&log, "voltage", all);
    assert!((mean(&voltage) - 230.0).abs() < 3.0);
}

/// The same seed with and without a fault, compared after the ramp.
fn paired(kind: FaultKind) -> (SyntheticLog, SyntheticLog, Range<usize>) {
    let normal = generate(4_000, 11, T0, S, None);
    let faulty = generate(4_000, 11, T0, S, Some((kind, 2_000..4_000)));
    assert_eq!(normal.values[..2_000], faulty.values[..2_000]);
    (normal, faulty, 2_300..4_000)
}

#[test]
fn a_ramped_fault_grows_over_its_ramp() {
    // Blockage over 3,000 rows: a third of the way in, flow is down by
    // about a third of the full effect (35 %); after the ramp, by all of it.
    let normal = generate(8_000, 11, T0, S, None);
    let slow = generate_ramped(
        8_000,
        11,
        T0,
        S,
        Some((FaultKind::Blockage, 2_000..8_000)),
        3_000,
    );
    let drop = |r: Range<usize>| {
        1.0 - mean(&channel(&slow, "flow_rate", r.clone()))
            / mean(&channel(&normal, "flow_rate", r))
    };
    let (third, full) = (drop(2_900..3_100), drop(6_000..8_000));
    assert!(third > 0.08 && third < 0.16, "{third}");
    assert!(full > 0.3 && full < 0.4, "{full}");
    assert_eq!(slow.labels[1_999..2_001], [0, 1]);
}

#[test]
fn bearing_fault_raises_vibration_and_motor_temperature() {
    let (n, f, r) = paired(FaultKind::Bearing);
    let ratio = fault_vs_normal(mean, &f, &n, "vibration_1", &r);
    assert!(ratio > 1.4 && ratio < 2.5, "{ratio}");
    let ratio2 = fault_vs_normal(mean, &f, &n, "vibration_2", &r);
    assert!(ratio2 > 1.3, "{ratio2}");
    // The new component adds short-period variation.
    assert!(
        diff_std(&channel(&f, "vibration_1", r.clone()))
            > 1.5 * diff_std(&channel(&n, "vibration_1", r.clone()))
    );
    let dt =
        mean(&channel(&f, "motor_temp", r.clone())) - mean(&channel(&n, "motor_temp", r.clone()));
    assert!(dt > 3.0 && dt < 8.0, "{dt}");
    // Hydraulics are untouched.
    assert_eq!(
        channel(&f, "flow_rate", r.clone()),
        channel(&n, "flow_rate", r)
    );
}

#[test]
fn cavitation_drops_pressure_and_makes_flow_and_vibration_noisy() {
    let (n, f, r) = paired(FaultKind::Cavitation);
    let ratio = fault_vs_normal(mean, &f, &n, "pressure", &r);
    assert!(ratio < 0.85 && ratio > 0.7, "{ratio}");
    let noise = fault_vs_normal(diff_std, &f, &n, "flow_rate", &r);
    assert!(noise > 3.0, "{noise}");
    let vib = fault_vs_normal(diff_std, &f, &n, "vibration_2", &r);
    assert!(vib > 2.0, "{vib}");
    let flow = fault_vs_normal(mean, &f, &n, "flow_rate", &r);
    assert!(flow > 0.9 && flow < 1.0, "{flow}");
}

#[test]
fn blockage_lowers_flow_raises_pressure_and_shifts_current() {
    let (n, f, r) = paired(FaultKind::Blockage);
    let flow = fault_vs_normal(mean, &f, &n, "flow_rate", &r);
    assert!(flow > 0.6 && flow < 0.7, "{flow}");
    let pressure = fault_vs_normal(mean, &f, &n, "pressure", &r);
    assert!(pressure > 1.2 && pressure < 1.3, "{pressure}");
    let current = fault_vs_normal(mean, &f, &n, "current", &r);
    assert!(current < 0.95 && current > 0.75, "{current}");
    assert_eq!(channel(&f, "voltage", r.clone()), channel(&n, "voltage", r));
}

#[test]
fn csv_round_trips_through_the_loader() {
    let log = generate(300, 5, T0 + S / 2, S, Some((FaultKind::Blockage, 200..250)));
    let csv = log.to_csv();
    assert!(csv.starts_with(
        "timestamp,vibration_1,vibration_2,current,pressure,motor_temp,fluid_temp,voltage,flow_rate,anomaly\n2023-11-14T22:13:20.5Z,"
    ));
    let t = parse_csv(&csv, Path::new("synthetic.csv"), &LoadOptions::default()).unwrap();
    assert_eq!(t.timestamps, log.timestamps);
    assert_eq!(t.default_channels(), PUMP_CHANNELS);
    for (row, (want, label)) in t.values.iter().zip(log.values.iter().zip(&log.labels)) {
        assert_eq!(row[..8], want[..]);
        assert_eq!(row[8], f64::from(*label));
    }
}

#[test]
fn fault_names_parse_and_display() {
    for k in FaultKind::ALL {
        assert_eq!(k.to_string().parse::<FaultKind>().unwrap(), k);
    }
    assert_eq!(
        " Cavitation ".parse::<FaultKind>().unwrap(),
        FaultKind::Cavitation
    );
    let e = "leak".parse::<FaultKind>().unwrap_err();
    assert!(e.to_string().contains("\"leak\"") && e.to_string().contains("bearing"));
}

#[test]
fn simulator_fault_switching() {
    let mut sim = PumpSimulator::new(1);
    sim.set_fault(Some(FaultKind::Bearing));
    for _ in 0..10 {
        sim.next_row();
    }
    sim.set_fault(Some(FaultKind::Bearing));
    assert_eq!(sim.fault_age, 10);
    sim.set_fault(None);
    assert_eq!((sim.fault(), sim.fault_age), (None, 0));
}
