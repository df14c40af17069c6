//! The line-protocol parser: tags, field types, escapes, merging, errors.

use super::*;

#[test]
fn line_protocol_tags_types_escapes_and_merge() {
    let text = "\
# exported from InfluxDB
pump,site=a\\ b,asset=p1 current=9.5,rpm=1450i,running=true,state=\"ok, \\\"fine\\\"\" 1583748873000000000
pump,asset=p1,site=a\\ b pressure=4.25,count=7u 1583748873000000000

pump,site=a\\ b,asset=p1 current=9.75,running=F 1583748874000000000
pump,site=a\\ b,asset=p1 fl\\,ow\\=x\\ y=1 1583748872000000000
";
    let t = lp(text).unwrap();
    assert_eq!(t.timestamp_column, "time");
    assert_eq!(
        t.columns,
        [
            "current",
            "rpm",
            "running",
            "pressure",
            "count",
            "fl,ow=x y"
        ]
    );
    assert_eq!(t.skipped_columns, ["state"]);
    // Sorted by time; the two lines at T0 (tags in another order) merged.
    assert_eq!(t.timestamps, [T0 - NANOS_PER_SEC, T0, T0 + NANOS_PER_SEC]);
    let nan = f64::NAN;
    let expect = [
        [nan, nan, nan, nan, nan, 1.0],
        [9.5, 1450.0, 1.0, 4.25, 7.0, nan],
        [9.75, nan, 0.0, nan, nan, nan],
    ];
    for (row, want) in t.values.iter().zip(expect) {
        for (got, want) in row.iter().zip(want) {
            assert!(got == &want || (got.is_nan() && want.is_nan()), "{row:?}");
        }
    }
}

#[test]
fn line_protocol_units_measurements_tag_sets_and_rows() {
    // Seconds timestamps, the same key in two measurements.
    let text = "m1 v=1 1583748873\nm2 v=2,w=3 1583748873\nm1 v=4 1583748874\n";
    let t = lp(text).unwrap();
    assert_eq!(t.columns, ["m1.v", "m2.v", "w"]);
    assert_eq!(t.timestamps, [T0, T0 + NANOS_PER_SEC]);
    assert_eq!(t.values[0], [1.0, 2.0, 3.0]);

    // Different tag sets at the same time are different rows.
    let t = lp("m,a=1 v=1 1583748873000\nm,a=2 v=2 1583748873000\n").unwrap();
    assert_eq!(t.len(), 2);

    let t = parse_line_protocol(
        "m v=1 1\nm v=2 2\nm v=3 3\nm v=4 4\n",
        Path::new("x.lp"),
        &LoadOptions {
            timestamp_column: None,
            rows: Some(1..3),
        },
    )
    .unwrap();
    assert_eq!(t.first_row, 1);
    assert_eq!(t.values, [vec![2.0], vec![3.0]]);
}

#[test]
fn line_protocol_errors_name_line() {
    let e = lp("m v=1 1\nm v=2\n").unwrap_err();
    assert!(matches!(e, LoadError::BadLine { line: 2, .. }), "{e}");
    assert!(
        e.to_string().starts_with("log.lp:2: ") && e.to_string().contains("timestamp"),
        "{e}"
    );
    let e = lp("m v=abc 1\n").unwrap_err();
    assert!(
        e.to_string().contains("\"v\"") && e.to_string().contains("\"abc\""),
        "{e}"
    );
    let e = lp("m v=1 yesterday\n").unwrap_err();
    assert!(matches!(e, LoadError::BadTimestamp { line: 1, .. }), "{e}");
    let e = lp("m v=1 1\nm v=\"x\" 2\n").unwrap_err();
    assert!(
        e.to_string()
            .contains("a string here but a number on line 1"),
        "{e}"
    );
    let e = lp("m,tag v=1 1\n").unwrap_err();
    assert!(matches!(e, LoadError::BadLine { line: 1, .. }), "{e}");
    let e = lp("m v=\"open 1\n").unwrap_err();
    assert!(matches!(e, LoadError::BadLine { line: 1, .. }), "{e}");
    let e = lp("m v=1 1 extra\n").unwrap_err();
    assert!(matches!(e, LoadError::BadLine { line: 1, .. }), "{e}");
    assert!(matches!(
        lp("# only a comment\n").unwrap_err(),
        LoadError::Empty { .. }
    ));
    assert!(matches!(
        lp("m s=\"x\" 1\n").unwrap_err(),
        LoadError::NoColumns { .. }
    ));
    // A time with only string fields makes no row.
    let t = lp("m v=1 1\nm s=\"x\" 2\nm v=3 3\n").unwrap();
    assert_eq!(t.timestamps, [NANOS_PER_SEC, 3 * NANOS_PER_SEC]);
    assert_eq!(t.skipped_columns, ["s"]);
    let e = parse_line_protocol(
        "m v=1 1\n",
        Path::new("x.lp"),
        &LoadOptions {
            timestamp_column: None,
            rows: Some(5..9),
        },
    )
    .unwrap_err();
    assert!(matches!(e, LoadError::NoRows { .. }), "{e}");
}
