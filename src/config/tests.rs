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
fn threshold_adaptation_keys_are_checked_with_their_path() {
    let text = format!(
        "{MINIMAL}\n[[assets]]\npattern = \"*\"\nadapt_half_life_h = -1.0\n\
         [detector]\nadapt_max_factor = 0.5\n"
    );
    let err = parse(&text, &[]).unwrap_err();
    let ConfigError::Invalid { problems, .. } = &err else {
        panic!("{err}")
    };
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        ["detector.adapt_max_factor", "assets[0].adapt_half_life_h"]
    );
    let c = parse(MINIMAL, &[]).unwrap();
    assert_eq!(c.detector.adapt_half_life_h, 0.0, "off by default");
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
    assert_eq!(
        c.influx_auth().unwrap(),
        InfluxAuth::Token(Secret::new("s3cret"))
    );
}

#[test]
fn an_empty_secret_file_is_a_config_error_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("password");
    std::fs::write(&f, "\n").unwrap();
    let text = MINIMAL.replace(
        "bucket = \"b\"",
        &format!("api = \"v1\"\ndatabase = \"plant\"\nusername = \"gw\"\npassword_file = {f:?}"),
    );
    let c = parse(&text, &[]).unwrap();
    let err = c.influx_auth().unwrap_err().to_string();
    assert!(
        err.contains("influx.password_file") && err.contains("is empty"),
        "{err}"
    );
    std::fs::write(&f, "pw\n").unwrap();
    assert_eq!(
        c.influx_auth().unwrap(),
        InfluxAuth::Basic {
            username: "gw".into(),
            password: Secret::new("pw")
        }
    );
}

#[test]
fn v1_needs_a_database_and_takes_user_and_password_not_both_kinds() {
    let v1 = MINIMAL.replace("bucket = \"b\"", "api = \"v1\"");
    let err = parse(&v1, &[]).unwrap_err().to_string();
    assert!(err.contains("influx.database"), "{err}");
    let both = MINIMAL.replace(
        "bucket = \"b\"",
        "api = \"v1\"\ndatabase = \"d\"\nusername = \"u\"\npassword = \"p\"\ntoken = \"t\"",
    );
    let err = parse(&both, &[]).unwrap_err().to_string();
    assert!(
        err.contains("influx.username") && err.contains("not both"),
        "{err}"
    );
    let no_password = MINIMAL.replace(
        "bucket = \"b\"",
        "api = \"v1\"\ndatabase = \"d\"\nusername = \"u\"",
    );
    let err = parse(&no_password, &[]).unwrap_err().to_string();
    assert!(err.contains("influx.username"), "{err}");
    let v2_user = MINIMAL.replace(
        "bucket = \"b\"",
        "bucket = \"b\"\nusername = \"u\"\npassword = \"p\"",
    );
    let err = parse(&v2_user, &[]).unwrap_err().to_string();
    assert!(err.contains("takes a token"), "{err}");
    let ok = MINIMAL.replace(
        "bucket = \"b\"",
        "api = \"v1\"\ndatabase = \"d\"\nusername = \"u\"\npassword = \"p\"",
    );
    assert_eq!(parse(&ok, &[]).unwrap().influx.api, InfluxApi::V1);
}

#[test]
fn a_run_credentials_path_is_read_where_the_unit_loads_it_from() {
    let unit = Path::new("/run/credentials/anomalyd.service/influx-token");
    // Only tests that do not set CREDENTIALS_DIRECTORY run in this process.
    if std::env::var_os("CREDENTIALS_DIRECTORY").is_none() && !unit.exists() {
        assert_eq!(
            credential_path(unit),
            (
                Path::new("/etc/anomalyd/credentials/influx-token").to_path_buf(),
                CredentialSource::UnitSource
            )
        );
    }
    let other = Path::new("/etc/anomalyd/token");
    assert_eq!(
        credential_path(other),
        (other.to_path_buf(), CredentialSource::Configured)
    );
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

#[test]
fn the_default_client_id_names_the_host() {
    let c = parse(MINIMAL, &[]).unwrap();
    assert_eq!(c.mqtt.client_id, format!("anomalyd-{}", host_name()));
    assert_ne!(host_name(), "");
    // The host tag defaults to the same name; "" turns it off.
    assert_eq!(c.influx.host_tag_value(), Some(host_name()));
    let off = MINIMAL.replace("bucket = \"b\"", "bucket = \"b\"\nhost_tag = \"\"");
    assert_eq!(parse(&off, &[]).unwrap().influx.host_tag_value(), None);
}

/// Keys of every problem `text` has.
fn problem_keys(text: &str) -> Vec<String> {
    match parse(text, &[]) {
        Err(ConfigError::Invalid { problems, .. }) => problems.into_iter().map(|p| p.key).collect(),
        other => panic!("expected problems, got {other:?}"),
    }
}

const PARTITIONED: &str = r#"
    [mqtt]
    hosts = ["127.0.0.1:4001", "127.0.0.1:4002"]
    client_id = "anomalyd-a"
    [partitions]
    count = 4
    owned = [2, 0]
    session = "fleet"
    [state]
    directory = "/var/lib/anomalyd"
    [[topics]]
    filter = "sensors/{partition}/{asset}"
    payload = "json_object"
    [[models]]
    name = "pump"
    path = "models/pump.onnx"
    [influx]
    url = "http://127.0.0.1:8086"
    bucket = "b"
"#;

#[test]
fn partitions_give_one_session_and_one_topic_set_each() {
    let s = Config::from_toml_with_env(PARTITIONED, "test.toml", &[]).unwrap();
    assert_eq!(s.sessions(), [Some(0), Some(2)]);
    assert_eq!(
        s.topics_for(Some(2))[0].pattern.subscription(),
        "sensors/2/+"
    );
    assert_eq!(
        s.topics_for(Some(2))[0].pattern.matches("sensors/2/pump-7"),
        Some(("pump-7", None))
    );
    assert_eq!(
        s.topics_for(Some(2))[0].pattern.matches("sensors/1/pump-7"),
        None
    );
    assert_eq!(
        s.config.mqtt.brokers(),
        [
            ("127.0.0.1".to_string(), 4001),
            ("127.0.0.1".to_string(), 4002)
        ]
    );
    // Without [partitions]: one session, the plain host.
    let plain = Config::from_toml_with_env(MINIMAL, "test.toml", &[]).unwrap();
    assert_eq!(plain.sessions(), [None]);
    assert_eq!(
        plain.config.mqtt.brokers(),
        [("127.0.0.1".to_string(), 1883)]
    );
}

#[test]
fn partition_mistakes_are_named() {
    let keys = problem_keys(
        &PARTITIONED
            .replace("owned = [2, 0]", "owned = [2, 4, 2]")
            .replace("\"127.0.0.1:4002\"", "\"127.0.0.1:x\"")
            .replace("sensors/{partition}/{asset}", "sensors/{asset}")
            .replace(
                "client_id = \"anomalyd-a\"",
                "client_id = \"a\"\nclean_session = true\nqos = 0",
            ),
    );
    for k in [
        "partitions.owned[1]",
        "partitions.owned[2]",
        "mqtt.hosts[1]",
        "topics[0].filter",
        "mqtt.clean_session",
        "mqtt.qos",
    ] {
        assert!(keys.iter().any(|x| x == k), "{k} missing from {keys:?}");
    }
    // {partition} without [partitions].
    let keys = problem_keys(&MINIMAL.replace(
        "plant/{asset}/{channel}",
        "plant/{partition}/{asset}/{channel}",
    ));
    assert_eq!(keys, ["topics[0].filter"]);
}
