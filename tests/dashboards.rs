//! The shipped dashboards (two Grafana ones and an InfluxDB 2 template)
//! import cleanly, and every query names only measurements, fields, tags
//! and metrics the daemon really writes.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::dashboard_schema::{Names, idents_after};
use crate::util::*;

/// Every query string of a Grafana dashboard with its language, from the
/// nearest enclosing datasource type.
fn grafana_queries(v: &Value, ds: &str, path: &str, out: &mut Vec<(String, String, String)>) {
    match v {
        Value::Object(map) => {
            let ds = map
                .get("datasource")
                .and_then(|d| d.get("type"))
                .and_then(Value::as_str)
                .unwrap_or(ds);
            for (k, child) in map {
                let p = format!("{path}.{k}");
                match (k.as_str(), child) {
                    ("expr", Value::String(s)) => out.push(("prometheus".into(), s.clone(), p)),
                    ("query", Value::String(s)) => out.push((ds.to_string(), s.clone(), p)),
                    _ => grafana_queries(child, ds, &p, out),
                }
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                grafana_queries(child, ds, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// `$name`, `${name}` and `${name:format}` references in `q`.
fn grafana_vars(q: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in q.match_indices('$') {
        let rest = &q[i + 1..];
        let rest = rest.strip_prefix('{').unwrap_or(rest);
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end > 0 {
            out.push(rest[..end].to_string());
        }
    }
    out
}

/// Both Grafana dashboards parse, import cleanly (datasources are inputs),
/// and every query names only what the daemon writes and exports.
#[test]
fn grafana_dashboards_query_only_what_the_daemon_writes() {
    let names = Names::new();
    for (file, lang) in [
        ("dashboards/grafana-influxdb-flux.json", "flux"),
        ("dashboards/grafana-influxql.json", "influxql"),
    ] {
        let doc: Value =
            serde_json::from_str(&read_repo_file(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let inputs: Vec<&str> = doc["__inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap())
            .collect();
        assert_eq!(inputs, ["DS_INFLUXDB", "DS_PROMETHEUS"], "{file}");
        let vars: BTreeSet<String> = doc["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_string())
            .collect();
        let mut ids = BTreeSet::new();
        let panels = doc["panels"].as_array().unwrap();
        for p in panels {
            assert!(
                ids.insert(p["id"].as_u64().unwrap()),
                "{file}: duplicate panel id"
            );
            if p["type"] != "row" {
                let uid = p["datasource"]["uid"].as_str().unwrap_or("");
                assert!(
                    uid == "${DS_INFLUXDB}" || uid == "${DS_PROMETHEUS}",
                    "{file}: panel {} has datasource {uid}",
                    p["title"]
                );
                assert!(!p["targets"].as_array().unwrap().is_empty());
            }
        }
        let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
        assert!(
            titles.iter().any(|t| t.starts_with("Score vs threshold")),
            "{titles:?}"
        );
        assert!(
            titles.iter().any(|t| t.starts_with("Top channels")),
            "{titles:?}"
        );
        let anns = doc["annotations"]["list"].as_array().unwrap();
        assert!(
            anns.iter()
                .filter(|a| a["datasource"]["uid"] == "${DS_INFLUXDB}")
                .count()
                >= 2
        );

        let mut queries = Vec::new();
        grafana_queries(&doc, "", file, &mut queries);
        let (mut influx, mut prom) = (0, 0);
        for (ds, q, path) in &queries {
            for var in grafana_vars(q) {
                let builtin = var.starts_with("__") || var == "timeFilter";
                assert!(
                    builtin || vars.contains(&var),
                    "{path}: unknown variable ${var} in {q}"
                );
            }
            match (ds.as_str(), lang) {
                ("prometheus", _) => {
                    names.check_promql(q, path);
                    prom += 1;
                }
                ("influxdb", "flux") => {
                    names.check_flux(q, path);
                    influx += 1;
                }
                ("influxdb", _) if q.starts_with("SHOW TAG VALUES") => {
                    assert_eq!(
                        q,
                        "SHOW TAG VALUES FROM \"anomaly_score\" WITH KEY = \"asset\""
                    );
                    influx += 1;
                }
                ("influxdb", _) => {
                    names.check_influxql(q, path);
                    influx += 1;
                }
                ("", _) if q == "anomalyd" => {} // the bucket textbox's default
                other => panic!("{path}: query of unknown kind {other:?}: {q}"),
            }
        }
        println!("{file}: {influx} InfluxDB and {prom} Prometheus queries checked");
        assert!(
            influx >= 10 && prom >= 10,
            "{file}: {influx} influx, {prom} prometheus queries"
        );
        for metric in [
            "anomalyd_windows_scored_total",
            "anomalyd_readings_dropped_total",
            "anomalyd_inference_latency_seconds_bucket",
            "anomalyd_sink_queue_points",
            "anomalyd_mqtt_connected",
            "anomalyd_model_info",
        ] {
            assert!(
                queries.iter().any(|(_, q, _)| q.contains(metric)),
                "{file} never shows {metric}"
            );
        }
    }
}

/// The InfluxDB 2 template: resources of known kinds, every `v.name` a
/// template variable (or built in), every Flux query within the schema, and
/// a Telegraf config that scrapes the daemon's default metrics address.
#[test]
fn influxdb2_template_queries_only_what_the_daemon_writes() {
    let names = Names::new();
    let doc: Value =
        serde_json::from_str(&read_repo_file("dashboards/influxdb2-template.json")).unwrap();
    let resources = doc.as_array().expect("a template is an array of resources");
    let mut kinds = BTreeMap::new();
    let mut vars = BTreeSet::from([
        "timeRangeStart".to_string(),
        "timeRangeStop".into(),
        "windowPeriod".into(),
    ]);
    for r in resources {
        assert_eq!(r["apiVersion"], "influxdata.com/v2alpha1");
        let kind = r["kind"].as_str().unwrap();
        *kinds.entry(kind).or_insert(0) += 1;
        if kind == "Variable" {
            vars.insert(r["spec"]["name"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(
        kinds,
        BTreeMap::from([
            ("Dashboard", 1),
            ("Label", 1),
            ("Telegraf", 1),
            ("Variable", 2)
        ])
    );
    let mut checked = 0;
    let mut prometheus = 0;
    for r in resources {
        let spec = &r["spec"];
        let mut queries: Vec<String> = Vec::new();
        match r["kind"].as_str().unwrap() {
            "Variable" => {
                let q = spec["query"].as_str().unwrap();
                if !q.starts_with("buckets()") {
                    queries.push(q.to_string());
                }
            }
            "Dashboard" => {
                for c in spec["charts"].as_array().unwrap() {
                    for q in c["queries"].as_array().into_iter().flatten() {
                        queries.push(q["query"].as_str().unwrap().to_string());
                    }
                }
            }
            "Telegraf" => {
                let config = spec["config"].as_str().unwrap();
                let listen = read_repo_file("config/anomalyd.toml")
                    .lines()
                    .find_map(|l| l.strip_prefix("listen = \""))
                    .map(|v| v.trim_end_matches('"').to_string())
                    .unwrap();
                assert!(
                    config.contains(&format!("http://{listen}/metrics")),
                    "{config}"
                );
                assert!(config.contains("metric_version = 2"));
            }
            _ => {}
        }
        for q in queries {
            for v in idents_after(&q, "v.") {
                assert!(vars.contains(v), "unknown variable v.{v} in {q}");
            }
            if names
                .check_flux(&q, "influxdb2-template")
                .iter()
                .any(|m| m == "prometheus")
            {
                prometheus += 1;
            }
            checked += 1;
        }
    }
    println!("influxdb2-template: {checked} Flux queries checked ({prometheus} on daemon metrics)");
    assert!(
        checked >= 12 && prometheus >= 5,
        "{checked} queries, {prometheus} on metrics"
    );
}
