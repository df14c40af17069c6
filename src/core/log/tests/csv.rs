//! The CSV parser: delimiters, quoting, timestamps, row ranges, errors.

use super::*;

#[test]
fn csv_comma_rfc3339() {
    let t = csv("time,a,b\n2020-03-09T10:14:33Z,1.5,2\n2020-03-09T10:14:34Z,-3,4e2\n").unwrap();
    assert_eq!(t.timestamp_column, "time");
    assert_eq!(t.columns, ["a", "b"]);
    assert_eq!(t.timestamps, [T0, T0 + NANOS_PER_SEC]);
    assert_eq!(t.values, [vec![1.5, 2.0], vec![-3.0, 400.0]]);
    assert_eq!(t.first_row, 0);
    assert_eq!(t.len(), 2);
    assert!(!t.is_empty());
    assert!(t.skipped_columns.is_empty());
    assert_eq!(t.source, Path::new("log.csv"));
}

#[test]
fn csv_semicolon_crlf_and_skab_style_timestamps() {
    let text = "datetime;x;anomaly;changepoint\r\n2020-03-09 10:14:33;0,5;0.0;0.0\r\n\r\n2020-03-09 10:14:34;1.25;1.0;0.0\r\n";
    let t = csv(text).unwrap();
    assert_eq!(t.columns, ["x", "anomaly", "changepoint"]);
    assert_eq!(t.timestamps, [T0, T0 + NANOS_PER_SEC]);
    // Decimal comma with a `;` delimiter.
    assert_eq!(t.values[0], [0.5, 0.0, 0.0]);
    assert_eq!(t.values[1], [1.25, 1.0, 0.0]);
    assert_eq!(t.default_channels(), ["x"]);
}

#[test]
fn csv_tab_delimited_and_bom() {
    let t = csv("\u{feff}ts\tv\n1583748873\t7\n").unwrap();
    assert_eq!(t.columns, ["v"]);
    assert_eq!(t.timestamps, [T0]);
}

#[test]
fn csv_quoted_fields() {
    let text = "\"time\",\"flow, l/min\",status,\"note\"\n\"2020-03-09 10:14:33\",\"1.5\",\"ok, \"\"fine\"\"\",\"two\nlines\"\n2020-03-09 10:14:34,2.5,bad,x\n";
    let t = csv(text).unwrap();
    assert_eq!(t.columns, ["flow, l/min"]);
    assert_eq!(t.values, [vec![1.5], vec![2.5]]);
    assert_eq!(t.skipped_columns, ["status", "note"]);
}

#[test]
fn csv_epoch_units_detected_by_magnitude() {
    for (ts, unit) in [
        ("1583748873", "s"),
        ("1583748873000", "ms"),
        ("1583748873000000", "us"),
        ("1583748873000000000", "ns"),
        ("1583748873.0", "s decimal"),
    ] {
        let t = csv(&format!("t,v\n{ts},1\n")).unwrap();
        assert_eq!(t.timestamps, [T0], "{unit}");
    }
}

#[test]
fn csv_timestamp_column_by_name_or_first() {
    let text = "a,when,b\n1,2020-03-09 10:14:33,2\n";
    let t = csv_with(
        text,
        LoadOptions {
            timestamp_column: Some("when".into()),
            rows: None,
        },
    )
    .unwrap();
    assert_eq!(t.timestamp_column, "when");
    assert_eq!(t.columns, ["a", "b"]);
    assert_eq!(t.values, [vec![1.0, 2.0]]);
    assert_eq!(t.timestamps, [T0]);

    // Case-insensitive fallback.
    let t = csv_with(
        text,
        LoadOptions {
            timestamp_column: Some("WHEN".into()),
            rows: None,
        },
    )
    .unwrap();
    assert_eq!(t.timestamp_column, "when");

    // Without a name the first column is the time (`1` is epoch second
    // 1) and `when` is a text column.
    let t = csv(text).unwrap();
    assert_eq!(t.timestamp_column, "a");
    assert_eq!(t.timestamps, [NANOS_PER_SEC]);
    assert_eq!(t.columns, ["b"]);
    assert_eq!(t.skipped_columns, ["when"]);

    let e = csv_with(
        text,
        LoadOptions {
            timestamp_column: Some("zeit".into()),
            rows: None,
        },
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("log.csv") && msg.contains("\"zeit\"") && msg.contains("a, when, b"),
        "{msg}"
    );
}

#[test]
fn csv_rows_range() {
    let mut text = String::from("t,v\n");
    for i in 0..10 {
        text.push_str(&format!("{},{i}\n", 1_583_748_873 + i));
    }
    let t = csv_with(
        &text,
        LoadOptions {
            timestamp_column: None,
            rows: Some(2..5),
        },
    )
    .unwrap();
    assert_eq!(t.first_row, 2);
    assert_eq!(t.values, [vec![2.0], vec![3.0], vec![4.0]]);
    assert_eq!(t.timestamps[0], T0 + 2 * NANOS_PER_SEC);

    // A range running past the end keeps what there is.
    let t = csv_with(
        &text,
        LoadOptions {
            timestamp_column: None,
            rows: Some(8..100),
        },
    )
    .unwrap();
    assert_eq!(t.len(), 2);

    // Rows outside the range are not checked.
    let broken = format!("{text}oops,not,even,the,right,width\n");
    assert_eq!(
        csv_with(
            &broken,
            LoadOptions {
                timestamp_column: None,
                rows: Some(0..10),
            },
        )
        .unwrap()
        .len(),
        10
    );

    let e = csv_with(
        &text,
        LoadOptions {
            timestamp_column: None,
            rows: Some(10..20),
        },
    )
    .unwrap_err();
    assert!(matches!(e, LoadError::NoRows { .. }), "{e}");
    assert!(e.to_string().contains("10 data rows"), "{e}");
}

#[test]
fn csv_empty_cells_nan_and_inf_kept() {
    let t = csv("t,a,b,c\n1,,nan,inf\n2,1,,-inf\n").unwrap();
    assert_eq!(t.columns, ["a", "b", "c"]);
    assert!(t.values[0][0].is_nan() && t.values[0][1].is_nan());
    assert_eq!(t.values[0][2], f64::INFINITY);
    assert_eq!(t.values[1][0], 1.0);
    assert!(t.values[1][1].is_nan());
    assert_eq!(t.values[1][2], f64::NEG_INFINITY);
}

#[test]
fn csv_all_empty_column_is_skipped_and_trailing_delimiter_tolerated() {
    let t = csv("t;a;b;\n1;1;;\n2;2;;\n").unwrap();
    assert_eq!(t.columns, ["a"]);
    assert_eq!(t.skipped_columns, ["b"]);
}

#[test]
fn csv_label_columns_loaded_but_not_default() {
    let t = csv("t,Anomaly,x,LABEL,changepoint\n1,0,1,0,0\n").unwrap();
    assert_eq!(t.columns, ["Anomaly", "x", "LABEL", "changepoint"]);
    assert_eq!(t.default_channels(), ["x"]);
    assert_eq!(t.select(&["x".into(), "Anomaly".into()]).unwrap(), [1, 0]);
    let e = t.select(&["y".into()]).unwrap_err();
    assert!(
        e.to_string().contains("\"y\"") && e.to_string().contains("Anomaly, x, LABEL, changepoint"),
        "{e}"
    );
    assert_eq!(t.column_index("x"), Some(1));
    assert_eq!(t.column_index("X"), None);
}

#[test]
fn csv_errors_name_file_line_and_column() {
    let e = csv("t,a\n1,1\n2,1,3\n").unwrap_err();
    assert!(matches!(e, LoadError::BadLine { line: 3, .. }), "{e}");
    assert!(e.to_string().starts_with("log.csv:3: "), "{e}");
    assert!(
        e.to_string().contains("3 cells") && e.to_string().contains("2 columns"),
        "{e}"
    );

    let e = csv("t,a\n1,1\n2,1\n3,oops\n").unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(
            e,
            LoadError::BadCell {
                line: 4,
                row: 2,
                ..
            }
        ),
        "{msg}"
    );
    assert_eq!(
        msg,
        "log.csv:4: data row 2, column \"a\": \"oops\" is not a number"
    );

    let e = csv("t,a\n\n2020-03-09 10:14:33,1\n2020-02-30 10:00:00,1\n").unwrap_err();
    assert!(matches!(e, LoadError::BadTimestamp { line: 4, .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.starts_with("log.csv:4: column \"t\": \"2020-02-30 10:00:00\""),
        "{msg}"
    );

    let e = csv("t,a\n,1\n").unwrap_err();
    assert!(matches!(e, LoadError::BadTimestamp { line: 2, .. }), "{e}");

    let e = csv("t,a\n1,\"unterminated\n").unwrap_err();
    assert!(matches!(e, LoadError::BadLine { line: 2, .. }), "{e}");

    let e = csv("t,a\n1,\"x\"y\n").unwrap_err();
    assert!(matches!(e, LoadError::BadLine { line: 2, .. }), "{e}");

    assert!(matches!(csv("").unwrap_err(), LoadError::Empty { .. }));
    assert!(matches!(
        csv(" \r\n\n").unwrap_err(),
        LoadError::Empty { .. }
    ));
    let e = csv("t,a\n").unwrap_err();
    assert!(matches!(e, LoadError::NoRows { .. }), "{e}");
    assert!(e.to_string().contains("header but no data rows"), "{e}");

    let e = csv("2020-03-09 10:14:33;0.02;0.04\n2020-03-09 10:14:34;0.02;0.04\n").unwrap_err();
    assert!(matches!(e, LoadError::NoHeader { line: 1, .. }), "{e}");
    let e = csv("t,,b\n1,2,3\n").unwrap_err();
    assert!(e.to_string().contains("column 2 has no name"), "{e}");
    let e = csv("t,a,a\n1,2,3\n").unwrap_err();
    assert!(matches!(e, LoadError::DuplicateColumn { .. }), "{e}");
    let e = csv("t,status\n1,ok\n").unwrap_err();
    assert!(matches!(e, LoadError::NoColumns { .. }), "{e}");
    assert!(e.to_string().contains("status"), "{e}");
    let e = csv("t\n1\n").unwrap_err();
    assert!(
        matches!(e, LoadError::NoHeader { .. } | LoadError::NoColumns { .. }),
        "{e}"
    );
}

#[test]
fn csv_never_panics_on_odd_input() {
    for text in [
        "\"",
        "\"\"",
        ",",
        ";;;",
        "\n\n\r\n",
        "a\n\"",
        "t,a\n1,\"",
        "t,a\r",
        "t,a\n1,2\r",
        "é,ü\n1,2\n",
        "t,a\n1,2\n\"\n",
        "\u{feff}",
        "t,\"a\"\"\n",
    ] {
        let _ = csv(text);
        let _ = lp(text);
        let _ = looks_like_line_protocol(text);
    }
}

#[test]
fn csv_pandas_index_is_the_timestamp_or_left_out() {
    // DatetimeIndex: the unnamed first column is the time.
    let t = csv(",a,b\n2020-03-09 10:14:33,1,2\n2020-03-09 10:14:34,3,4\n").unwrap();
    assert_eq!(t.timestamp_column, PANDAS_INDEX);
    assert_eq!(t.columns, ["a", "b"]);
    assert_eq!(t.timestamps, [T0, T0 + NANOS_PER_SEC]);
    // RangeIndex beside a time column: the index is not a channel.
    let t = csv(",datetime,a\n0,2020-03-09 10:14:33,1\n1,2020-03-09 10:14:34,3\n").unwrap();
    assert_eq!(t.timestamp_column, "datetime");
    assert_eq!(t.columns, ["a"]);
    assert_eq!(t.values, [vec![1.0], vec![3.0]]);
}
