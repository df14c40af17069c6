//! Tests of loading and validating the configuration.

use std::path::Path;

use super::*;

pub(crate) const MINIMAL: &str = r#"
    [mqtt]
    host = "127.0.0.1"
    [[topics]]
    filter = "plant/{asset}/{channel}"
    payload = "number"
    [[models]]
    name = "pump"
    path = "models/pump.onnx"
    [influx]
    url = "http://127.0.0.1:8086"
    bucket = "b"
"#;

pub(crate) fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_toml_with_env(text, "test.toml", &env).map(|s| s.config)
}

#[test]
fn minimal_config_gets_defaults() {
    let c = parse(MINIMAL, &[]).unwrap();
    assert_eq!(c.mqtt.port, 1883);
    assert_eq!(c.mqtt.qos, 1);
    assert_eq!(c.runtime.intra_threads, 1);
    assert_eq!(c.influx.score_measurement, "anomaly_score");
}

#[test]
fn environment_overrides_typed_values() {
    let c = parse(
        MINIMAL,
        &[
            ("ANOMALYD__MQTT__PORT", "1884"),
            ("ANOMALYD__MQTT__CLEAN_SESSION", "true"),
            ("ANOMALYD__INFLUX__BUCKET", "plant"),
        ],
    )
    .unwrap();
    assert_eq!(c.mqtt.port, 1884);
    assert!(c.mqtt.clean_session);
    assert_eq!(c.influx.bucket, "plant");
}

#[test]
fn unknown_key_is_named_with_its_path() {
    let text = MINIMAL.replace("host = \"127.0.0.1\"", "hots = \"x\"");
    let err = parse(&text, &[]).unwrap_err().to_string();
    assert!(err.contains("mqtt") && err.contains("hots"), "{err}");
}

#[test]
fn wrong_type_is_named_with_its_path() {
    let err = parse(MINIMAL, &[("ANOMALYD__MQTT__PORT", "lots")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("mqtt.port"), "{err}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = MINIMAL
        .replace(
            "payload = \"number\"",
            "payload = \"number\"\n[[topics]]\nfilter = \"x/y\"\npayload = \"json\"",
        )
        .replace("bucket = \"b\"", "bucket = \"\"\nbatch_size = 0");
    let err = parse(&text, &[("ANOMALYD__MQTT__QOS", "3")]).unwrap_err();
    let ConfigError::Invalid { problems, .. } = &err else {
        panic!("{err}")
    };
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    for k in [
        "mqtt.qos",
        "topics[1].filter",
        "influx.bucket",
        "influx.batch_size",
    ] {
        assert!(keys.contains(&k), "{k} missing from {keys:?}");
    }
}

#[test]
fn bad_url_is_a_problem_not_a_panic() {
    let err = parse(&MINIMAL.replace("http://127.0.0.1:8086", "not a url"), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("influx.url"), "{err}");
}

#[test]
fn secrets_never_print() {
    let text = MINIMAL.replace(
        "host = \"127.0.0.1\"",
        "host = \"127.0.0.1\"\nusername = \"u\"\npassword = \"hunter2\"",
    );
    let c = parse(&text, &[]).unwrap();
    assert!(!format!("{c:?}").contains("hunter2"));
    assert!(!serde_json::to_string(&c).unwrap().contains("hunter2"));
    assert_eq!(c.mqtt_password().unwrap().unwrap().expose(), "hunter2");
}

#[test]
fn secret_from_file_strips_newline() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("token");
    std::fs::write(&f, "s3cret\n").unwrap();
    let text = MINIMAL.replace(
        "bucket = \"b\"",
        &format!("bucket = \"b\"\ntoken_file = {:?}", f),
    );
    let c = parse(&text, &[]).unwrap();
    assert_eq!(c.influx_token().unwrap().expose(), "s3cret");
}

#[test]
fn shipped_configs_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 1, "no config/*.toml found");
}

#[test]
fn journal_sync_pacing_has_defaults_and_bounds() {
    let c = parse(MINIMAL, &[]).unwrap();
    assert_eq!(
        (c.journal.sync_interval_ms, c.journal.sync_max_pending),
        (1000, 16)
    );
    let err = parse(
        MINIMAL,
        &[
            ("ANOMALYD__JOURNAL__SYNC_MAX_PENDING", "0"),
            ("ANOMALYD__JOURNAL__SYNC_INTERVAL_MS", "600000"),
        ],
    )
    .unwrap_err();
    let ConfigError::Invalid { problems, .. } = &err else {
        panic!("{err}")
    };
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert!(keys.contains(&"journal.sync_max_pending"), "{keys:?}");
    assert!(keys.contains(&"journal.sync_interval_ms"), "{keys:?}");
}
