//! Unit tests of the metrics, the replay reader and the table.

use std::path::Path;

use anomalyd::core::timestamp::parse_timestamp;

use super::*;

fn b(v: &[u8]) -> Vec<bool> {
    v.iter().map(|x| *x != 0).collect()
}

#[test]
fn confusion_and_metrics_match_hand_computed_values() {
    // y: 1 1 1 1 0 0 0 0 0 0
    // p: 1 1 1 0 1 1 0 0 0 0  -> TP 3, FN 1, FP 2, TN 4
    let c = Confusion::count(
        &b(&[1, 1, 1, 1, 0, 0, 0, 0, 0, 0]),
        &b(&[1, 1, 1, 0, 1, 1, 0, 0, 0, 0]),
    )
    .unwrap();
    assert_eq!(
        c,
        Confusion {
            tp: 3,
            fp: 2,
            fn_: 1,
            tn: 4
        }
    );
    // F1 = 3 / (3 + 3/2) = 2/3; FAR = 2/6; MAR = 1/4.
    assert!((c.f1().unwrap() - 2.0 / 3.0).abs() < 1e-12);
    assert!((c.far().unwrap() - 1.0 / 3.0).abs() < 1e-12);
    assert!((c.mar().unwrap() - 0.25).abs() < 1e-12);
    assert_eq!(c.rows(), 10);
}

#[test]
fn totals_sum_confusions_not_rates() {
    // File A: perfect on 4 anomalous rows. File B: 4 false alarms in 4 normal rows.
    let a = Confusion::count(&b(&[1, 1, 1, 1]), &b(&[1, 1, 1, 1])).unwrap();
    let bb = Confusion::count(&b(&[0, 0, 0, 0]), &b(&[1, 1, 1, 1])).unwrap();
    let t = a + bb;
    assert_eq!(
        t,
        Confusion {
            tp: 4,
            fp: 4,
            fn_: 0,
            tn: 0
        }
    );
    // F1 = 4 / (4 + 2) = 2/3 (the mean of the per-file F1s, 1 and
    // undefined, would say otherwise); FAR = 1; MAR = 0.
    assert!((t.f1().unwrap() - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(t.far(), Some(1.0));
    assert_eq!(t.mar(), Some(0.0));
    assert_eq!([a, bb].into_iter().sum::<Confusion>(), t);
}

#[test]
fn undefined_rates_are_none() {
    let c = Confusion::count(&b(&[0, 0]), &b(&[0, 0])).unwrap();
    assert_eq!((c.f1(), c.far(), c.mar()), (None, Some(0.0), None));
    assert!(Confusion::count(&b(&[0]), &b(&[0, 1])).is_err());
}

const REPLAY: &str = "timestamp,asset,score,threshold,probability,anomaly\n\
        2020-03-09T10:14:33Z,replay,,1.5,,0\n\
        2020-03-09T10:14:34Z,\"a,b\",0.5,1.5,0.1,0\n\
        2020-03-09T10:14:36Z,replay,2.5,1.5,0.999,1\n\
        2020-03-09T10:14:37Z,replay,2.5,1.5,0.999,1\n";

fn labels(ts: &[&str], y: &[u8]) -> LabelledLog {
    LabelledLog {
        path: PathBuf::from("x.csv"),
        timestamps: ts.iter().map(|t| parse_timestamp(t).unwrap()).collect(),
        anomalous: b(y),
    }
}

const TS: [&str; 4] = [
    "2020-03-09 10:14:33",
    "2020-03-09 10:14:34",
    "2020-03-09 10:14:36",
    "2020-03-09 10:14:37",
];

#[test]
fn replay_output_parses_and_scores_from_the_first_row() {
    let r = parse_replay(REPLAY, Path::new("r.csv")).unwrap();
    assert_eq!(r.anomalous, b(&[0, 0, 1, 1]));
    assert_eq!(r.score, vec![None, Some(0.5), Some(2.5), Some(2.5)]);
    assert_eq!(r.threshold, vec![1.5; 4]);
    let l = labels(&TS, &[1, 0, 0, 1]);
    // Rows 1..: y 0 0 1, p 0 1 1 -> TP 1, FP 1, TN 1.
    let c = score_rows(&l, &r, 1).unwrap();
    assert_eq!(
        c,
        Confusion {
            tp: 1,
            fp: 1,
            fn_: 0,
            tn: 1
        }
    );
    assert_eq!(score_rows(&l, &r, 9).unwrap().rows(), 0);
}

#[test]
fn mismatched_rows_are_refused_with_the_row() {
    let r = parse_replay(REPLAY, Path::new("r.csv")).unwrap();
    let mut ts = TS;
    ts[2] = "2020-03-09 10:14:35";
    let err = score_rows(&labels(&ts, &[0; 4]), &r, 0).unwrap_err();
    assert!(matches!(err, EvalError::Timestamp { row: 2, .. }), "{err}");
    let err = score_rows(&labels(&TS[..3], &[0; 3]), &r, 0).unwrap_err();
    assert!(err.to_string().contains("has 4 rows"), "{err}");
}

#[test]
fn bad_replay_files_name_the_line() {
    let err = parse_replay("a,b\n", Path::new("r.csv")).unwrap_err();
    assert!(err.to_string().contains("r.csv:1"), "{err}");
    let text = format!("{}2020-03-09T10:14:38Z,replay,x,1.5,,0\n", REPLAY);
    let err = parse_replay(&text, Path::new("r.csv")).unwrap_err();
    assert!(err.to_string().contains("r.csv:6: score"), "{err}");
    let text = format!("{}2020-03-09T10:14:38Z,replay,1,1.5,,2\n", REPLAY);
    assert!(parse_replay(&text, Path::new("r.csv")).is_err());
}

#[test]
fn table_lists_files_and_summed_totals() {
    let results = vec![
        FileResult {
            name: "valve1/0".into(),
            confusion: Confusion {
                tp: 3,
                fp: 1,
                fn_: 1,
                tn: 5,
            },
        },
        FileResult {
            name: "other/1".into(),
            confusion: Confusion {
                tp: 1,
                fp: 0,
                fn_: 1,
                tn: 2,
            },
        },
    ];
    let t = format_table(&results);
    let last = t.lines().last().unwrap();
    // TP 4, FP 1, FN 2, TN 7: F1 4/5.5, FAR 1/8, MAR 2/6.
    assert!(last.starts_with("total"), "{t}");
    assert!(
        last.contains(" 14 ") && last.contains("0.727") && last.contains("12.50"),
        "{t}"
    );
    assert!(last.contains("33.33"), "{t}");
    assert_eq!(t.lines().count(), 5);
}
