//! Validation: every rule the configuration breaks, collected with its key
//! path so the operator sees all problems at once (exit code 78), and the
//! topic filters parsed on the way.

use super::Problem;
use super::schema::{Config, InfluxApi};
use super::topics::{TopicMapping, parse_topics};

impl Config {
    /// Validates the whole configuration once: the parsed topic filters,
    /// and every rule the configuration breaks, with its key path.
    pub(super) fn check(&self) -> (Vec<TopicMapping>, Vec<Problem>) {
        let mut p = Vec::new();
        let mut bad = |key: String, message: String| p.push(Problem { key, message });
        let m = &self.mqtt;
        if m.host.trim().is_empty() {
            bad("mqtt.host".into(), "is empty".into());
        }
        if m.port == 0 {
            bad("mqtt.port".into(), "must not be 0".into());
        }
        if m.client_id.is_empty() && !m.clean_session {
            bad(
                "mqtt.client_id".into(),
                "a persistent session (clean_session = false) needs a fixed client id".into(),
            );
        }
        if m.qos > 2 {
            bad(
                "mqtt.qos".into(),
                format!("is {}, must be 0, 1 or 2", m.qos),
            );
        }
        if m.keep_alive_s < 5 {
            bad("mqtt.keep_alive_s".into(), "must be at least 5".into());
        }
        if m.max_packet_size < 1024 {
            bad(
                "mqtt.max_packet_size".into(),
                "must be at least 1024".into(),
            );
        }
        if m.reconnect_min_ms == 0 || m.reconnect_max_ms < m.reconnect_min_ms {
            bad(
                "mqtt.reconnect_max_ms".into(),
                "reconnect_min_ms must be > 0 and <= reconnect_max_ms".into(),
            );
        }
        if m.password.is_some() && m.password_file.is_some() {
            bad(
                "mqtt.password_file".into(),
                "set password or password_file, not both".into(),
            );
        }
        if (m.password.is_some() || m.password_file.is_some()) && m.username.is_none() {
            bad(
                "mqtt.username".into(),
                "a password is set but no username".into(),
            );
        }
        if m.tls.client_cert.is_some() != m.tls.client_key.is_some() {
            bad(
                "mqtt.tls.client_key".into(),
                "client_cert and client_key go together".into(),
            );
        }
        if self.topics.is_empty() {
            bad(
                "topics".into(),
                "no [[topics]] configured: nothing to subscribe to".into(),
            );
        }
        let topics = parse_topics(&self.topics, self.partitions.as_ref().map(|_| 0), &mut p);
        super::partitions::check(self, &mut p);
        let mut bad = |key: String, message: String| p.push(Problem { key, message });
        if self.models.is_empty() {
            bad("models".into(), "no [[models]] configured".into());
        }
        let mut names = std::collections::HashSet::new();
        for (i, mc) in self.models.iter().enumerate() {
            if mc.name.is_empty() {
                bad(format!("models[{i}].name"), "is empty".into());
            }
            if !names.insert(mc.name.as_str()) {
                bad(
                    format!("models[{i}].name"),
                    format!("{:?} is defined twice", mc.name),
                );
            }
            if let Some(h) = &mc.sha256
                && (h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()))
            {
                bad(
                    format!("models[{i}].sha256"),
                    "must be 64 hex digits".into(),
                );
            }
        }
        match &self.default_model {
            Some(d) if !names.contains(d.as_str()) => bad(
                "default_model".into(),
                format!("names {d:?}, which no [[models]] entry defines"),
            ),
            None if self.models.len() > 1 => bad(
                "default_model".into(),
                "several models are configured: say which one is the default".into(),
            ),
            _ => {}
        }
        for (i, r) in self.assets.iter().enumerate() {
            if r.pattern.is_empty() {
                bad(format!("assets[{i}].pattern"), "is empty".into());
            }
            if let Some(mname) = &r.model
                && !names.contains(mname.as_str())
            {
                bad(
                    format!("assets[{i}].model"),
                    format!("names {mname:?}, which no [[models]] entry defines"),
                );
            }
            if let Some(t) = r.threshold
                && !(t.is_finite() && t > 0.0)
            {
                bad(format!("assets[{i}].threshold"), "must be > 0".into());
            }
            if r.raise_after == Some(0) {
                bad(format!("assets[{i}].raise_after"), "must be >= 1".into());
            }
            if r.clear_after == Some(0) {
                bad(format!("assets[{i}].clear_after"), "must be >= 1".into());
            }
            if let Some(c) = r.clear_ratio
                && !(c > 0.0 && c <= 1.0)
            {
                bad(
                    format!("assets[{i}].clear_ratio"),
                    "must be in (0, 1]".into(),
                );
            }
        }
        let rt = &self.runtime;
        if rt.intra_threads == 0 {
            bad("runtime.intra_threads".into(), "must be >= 1".into());
        }
        if rt.max_batch == 0 || rt.max_batch > 65_536 {
            bad("runtime.max_batch".into(), "must be in 1..=65536".into());
        }
        let pl = &self.pipeline;
        if pl.max_age_periods == 0 {
            bad("pipeline.max_age_periods".into(), "must be >= 1".into());
        }
        if !(0.0..=1.0).contains(&pl.max_imputed_fraction) {
            bad(
                "pipeline.max_imputed_fraction".into(),
                "must be in [0, 1]".into(),
            );
        }
        if pl.queue_capacity == 0 {
            bad("pipeline.queue_capacity".into(), "must be >= 1".into());
        }
        if pl.max_assets == 0 {
            bad("pipeline.max_assets".into(), "must be >= 1".into());
        }
        let ix = &self.influx;
        match reqwest::Url::parse(&ix.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            Ok(u) => bad(
                "influx.url".into(),
                format!("{:?}: scheme must be http or https with a host", u.as_str()),
            ),
            Err(e) => bad(
                "influx.url".into(),
                format!("{:?} is not a URL: {e}", ix.url),
            ),
        }
        match ix.api {
            InfluxApi::V2 if ix.bucket.is_empty() => {
                bad("influx.bucket".into(), "is empty".into());
            }
            InfluxApi::V1 if ix.database.is_empty() => {
                bad(
                    "influx.database".into(),
                    "api = \"v1\" writes to a database: name it".into(),
                );
            }
            _ => {}
        }
        if ix.password.is_some() && ix.password_file.is_some() {
            bad(
                "influx.password_file".into(),
                "set password or password_file, not both".into(),
            );
        }
        let has_password = ix.password.is_some() || ix.password_file.is_some();
        if has_password != ix.username.is_some() {
            bad(
                "influx.username".into(),
                "username and a password (password or password_file) go together".into(),
            );
        }
        if ix.username.is_some() && (ix.token.is_some() || ix.token_file.is_some()) {
            bad(
                "influx.username".into(),
                "set a token or a username and password, not both".into(),
            );
        }
        if ix.username.is_some() && ix.api == InfluxApi::V2 {
            bad(
                "influx.username".into(),
                "the v2 write API takes a token: set api = \"v1\" for a username and password"
                    .into(),
            );
        }
        if ix.token.is_some() && ix.token_file.is_some() {
            bad(
                "influx.token_file".into(),
                "set token or token_file, not both".into(),
            );
        }
        if ix.batch_size == 0 {
            bad("influx.batch_size".into(), "must be >= 1".into());
        }
        if ix.flush_interval_ms == 0 {
            bad("influx.flush_interval_ms".into(), "must be >= 1".into());
        }
        if ix.queue_capacity < ix.batch_size {
            bad(
                "influx.queue_capacity".into(),
                "must be at least batch_size".into(),
            );
        }
        if ix.retry_min_ms == 0 || ix.retry_max_ms < ix.retry_min_ms {
            bad(
                "influx.retry_max_ms".into(),
                "retry_min_ms must be > 0 and <= retry_max_ms".into(),
            );
        }
        for (key, v) in [
            ("influx.score_measurement", &ix.score_measurement),
            ("influx.alert_measurement", &ix.alert_measurement),
        ] {
            if v.is_empty() {
                bad(key.into(), "is empty".into());
            }
        }
        if !self.metrics.listen.is_empty()
            && self.metrics.listen.parse::<std::net::SocketAddr>().is_err()
        {
            bad(
                "metrics.listen".into(),
                format!(
                    "{:?} is not an address like 127.0.0.1:9464",
                    self.metrics.listen
                ),
            );
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            bad(
                "log.level".into(),
                format!("{:?} is not a tracing filter", self.log.level),
            );
        }
        if self.spool.max_mb == 0 {
            bad("spool.max_mb".into(), "must be >= 1".into());
        }
        if self.journal.sync_max_pending == 0 {
            bad("journal.sync_max_pending".into(), "must be >= 1".into());
        }
        if self.journal.sync_interval_ms > 60_000 {
            bad(
                "journal.sync_interval_ms".into(),
                "must be <= 60000 (acknowledgements would wait that long)".into(),
            );
        }
        if self.journal.max_mb == 0 {
            bad("journal.max_mb".into(), "must be >= 1".into());
        }
        if self.record.enabled && self.record.measurement.is_empty() {
            bad("record.measurement".into(), "is empty".into());
        }
        if self.record.queue_capacity == 0 {
            bad("record.queue_capacity".into(), "must be >= 1".into());
        }
        if self.shutdown.timeout_s == 0 {
            bad("shutdown.timeout_s".into(), "must be >= 1".into());
        }
        self.alerts.check(&mut p);
        self.detector.check(&self.assets, &mut p);
        (topics, p)
    }
}
