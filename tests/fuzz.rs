//! Property-based fuzzing of everything that parses outside input: MQTT
//! topics and payloads, CSV and line-protocol logs, the config file, and
//! model metadata. Each target must return a value or an error for any
//! input, never panic. `PROPTEST_CASES` raises the number of cases (the
//! default here is 2,000 per target).

use std::path::Path;

use anomalyd::config::{Config, PayloadKind};
use anomalyd::config::{TopicMapping, TopicPattern};
use anomalyd::core::log::{LoadOptions, parse_csv, parse_line_protocol};
use anomalyd::sources::mqtt::Decoder;
use proptest::prelude::*;

fn cases() -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn decoder() -> Decoder {
    let m = |f: &str, p| TopicMapping {
        pattern: TopicPattern::parse(f, p).unwrap(),
        value_field: "value".into(),
        timestamp_field: "ts".into(),
    };
    Decoder::new(vec![
        m("plant/{asset}/{channel}", PayloadKind::Number),
        m("j/{asset}/{channel}", PayloadKind::Json),
        m("sensors/{asset}", PayloadKind::JsonObject),
    ])
}

/// Bytes that look like what sensors send, with corruption mixed in.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        any::<Vec<u8>>(),
        "[-+0-9.eE naNinf]{0,24}".prop_map(String::into_bytes),
        (any::<f64>(), any::<i64>(), "[a-z_]{1,8}").prop_map(|(v, ts, k)| {
            format!("{{\"ts\": {ts}, \"{k}\": {v}, \"value\": {v}}}").into_bytes()
        }),
        "\\{[\"a-z0-9:,. \\[\\]{}-]{0,60}".prop_map(String::into_bytes),
    ]
}

/// A journal in `dir` that never rotates, trims or syncs.
fn journal_settings(dir: &Path) -> anomalyd::state::JournalSettings {
    anomalyd::state::JournalSettings {
        dir: dir.to_path_buf(),
        max_bytes: 1 << 20,
        segment_bytes: 1 << 20,
        segment_age: std::time::Duration::from_secs(60),
        retention_ns: 0,
        fsync: false,
    }
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn decoding_never_panics(topic in "[a-z/+#{}]{0,20}|plant/[a-z]{0,3}/[a-z]{0,3}|sensors/[a-z0-9-]{0,6}|j/[a-z]{1,3}/[a-z]{1,3}", body in payload()) {
        let d = decoder();
        match d.decode(&topic, &body) {
            Ok(m) => {
                prop_assert!(!m.asset.is_empty());
                prop_assert!(m.values.iter().all(|(_, v)| v.is_finite()));
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn topic_filters_parse_or_say_why(filter in "[a-z{}+#/]{0,24}|[a-z]{1,4}/\\{asset\\}(/\\{channel\\})?") {
        for kind in [PayloadKind::Number, PayloadKind::Json, PayloadKind::JsonObject] {
            if let Ok(p) = TopicPattern::parse(&filter, kind) {
                let sub = p.subscription();
                prop_assert!(!sub.contains('{'), "subscription {} keeps a named segment", sub);
            }
        }
    }

    #[test]
    fn csv_loading_never_panics(text in "([a-z0-9;,\".: -]{0,30}(\r?\n)){0,8}", first in 0usize..5, len in 0usize..5) {
        let opts = LoadOptions { timestamp_column: None, rows: Some(first..first + len) };
        let _ = parse_csv(&text, Path::new("fuzz.csv"), &opts);
        let _ = parse_csv(&text, Path::new("fuzz.csv"), &LoadOptions::default());
    }

    #[test]
    fn line_protocol_loading_never_panics(text in "([a-z,=\\\\ \"0-9.iutf#-]{0,40}\n){0,6}") {
        let _ = parse_line_protocol(&text, Path::new("fuzz.lp"), &LoadOptions::default());
    }

    #[test]
    fn config_parsing_never_panics(text in "(\\[[a-z.\\[\\]]{0,12}\\]\n|[a-z_]{1,12} = (\"[a-z:/0-9.{}]{0,16}\"|[0-9.-]{1,6}|true|false)\n){0,10}",
                                   key in "ANOMALYD__[A-Z_]{1,20}", val in "[a-z0-9.]{0,8}") {
        let env = vec![(key, val)];
        if let Err(e) = Config::from_toml_with_env(&text, "fuzz.toml", &env) {
            prop_assert!(e.to_string().contains("fuzz.toml"));
        }
    }

    #[test]
    fn model_metadata_parsing_never_panics(text in "\\{[\"a-z_0-9:,. \\[\\]{}-]{0,80}") {
        let _ = anomalyd::core::contract::ModelMetadata::from_json(&text);
    }

    /// A journal segment damaged anywhere (torn write, bit rot) replays
    /// its intact records and counts the rest.
    #[test]
    fn journal_replay_never_panics(
        records in proptest::collection::vec(("[a-z/]{0,12}", proptest::collection::vec(any::<u8>(), 0..40)), 0..6),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        cut in any::<usize>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let settings = journal_settings(dir.path());
        let (mut j, _) = anomalyd::state::Journal::open(settings.clone()).unwrap();
        for (i, (topic, payload)) in records.iter().enumerate() {
            j.append(i as i64, topic, payload).unwrap();
        }
        j.commit().unwrap();
        drop(j);
        let (_, paths) = anomalyd::state::Journal::open(settings).unwrap();
        for path in paths {
            let mut bytes = std::fs::read(&path).unwrap();
            let intact = flips.is_empty() && cut % (bytes.len() + 1) == bytes.len();
            if !bytes.is_empty() {
                for (at, x) in &flips {
                    let n = bytes.len();
                    bytes[at % n] ^= x;
                }
                bytes.truncate(cut % (bytes.len() + 1));
            }
            std::fs::write(&path, &bytes).unwrap();
            let mut seen = 0u64;
            let report = anomalyd::state::Journal::replay_segment(&path, |_| seen += 1).unwrap();
            prop_assert_eq!(report.records, seen);
            prop_assert!(seen <= records.len() as u64);
            if intact {
                prop_assert_eq!(seen, records.len() as u64);
                prop_assert_eq!(report.damaged, 0);
            }
        }
    }

    /// A record torn anywhere inside a segment (a write cut short when the
    /// disk filled, later records behind it): every record after the tear
    /// replays, and the damage is counted once.
    #[test]
    fn journal_replay_resynchronises_after_a_torn_record(
        records in proptest::collection::vec(("[a-z/]{0,12}", proptest::collection::vec(any::<u8>(), 0..40)), 2..12),
        torn in any::<usize>(),
        keep in any::<usize>(),
        garbage in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let settings = journal_settings(dir.path());
        let (mut j, _) = anomalyd::state::Journal::open(settings.clone()).unwrap();
        // Record offsets, learnt from the file length after each commit.
        let path = dir.path().join("journal-0000000000000000.log");
        let mut ends = Vec::new();
        for (i, (topic, payload)) in records.iter().enumerate() {
            j.append(i as i64, topic, payload).unwrap();
            j.commit().unwrap();
            ends.push(std::fs::metadata(&path).unwrap().len() as usize);
        }
        drop(j);
        let bytes = std::fs::read(&path).unwrap();
        let t = torn % (records.len() - 1);
        let start = if t == 0 { 0 } else { ends[t - 1] };
        let cut = start + 1 + keep % (ends[t] - start - 1);
        // The torn record: its first `cut - start` bytes, then garbage,
        // then every later record whole.
        let mut damaged = bytes[..cut].to_vec();
        damaged.extend_from_slice(&garbage);
        damaged.extend_from_slice(&bytes[ends[t]..]);
        // Garbage that happens to restore the cut-off bytes leaves the
        // record whole: not a tear.
        prop_assume!(damaged.get(start..ends[t]) != Some(&bytes[start..ends[t]]));
        std::fs::write(&path, &damaged).unwrap();
        let mut seen = Vec::new();
        let report = anomalyd::state::Journal::replay_segment(&path, |r| seen.push(r.recv_ns)).unwrap();
        let want: Vec<i64> = (0..records.len() as i64).filter(|&i| i != t as i64).collect();
        prop_assert_eq!(seen, want);
        prop_assert_eq!(report.damaged, 1);
    }
}
