//! `[partitions]` and `mqtt.hosts`: one daemon's share of a fleet whose
//! broker maps every asset to one of `count` partitions, on a broker that
//! may have several nodes (docs/scale-out.md §2). Each owned partition is
//! consumed through its own persistent MQTT session `<session>-p<i>`,
//! whichever daemon owns it, so its backlog waits on the broker for the
//! next owner; topic filters name the partition with a `{partition}`
//! segment.

use serde::{Deserialize, Serialize};

use super::Problem;
use super::schema::Config;

/// The segment of a topic filter that stands for the partition's number.
pub const PARTITION_SEGMENT: &str = "{partition}";

/// `[partitions]`: which of the broker's partitions this daemon consumes.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionsConfig {
    /// Partitions the broker maps assets into (e.g. NATS `partition(4,1)`).
    pub count: u32,
    /// This daemon's share; SIGHUP re-reads it. Empty: a standby daemon.
    #[serde(default)]
    pub owned: Vec<u32>,
    /// Partition `i` is consumed through the session `<session>-p<i>`.
    #[serde(default = "default_session")]
    pub session: String,
    /// Retained `<handover_topic>/<i>`: what the owner that gives
    /// partition `i` up leaves for the next one (docs/scale-out.md §4).
    #[serde(default = "default_handover_topic")]
    pub handover_topic: String,
}

fn default_session() -> String {
    "anomalyd-fleet".into()
}

fn default_handover_topic() -> String {
    "anomalyd/handover".into()
}

impl PartitionsConfig {
    /// The MQTT client id of partition `p`'s session.
    pub fn client_id(&self, p: u32) -> String {
        format!("{}-p{p}", self.session)
    }

    /// The retained topic of partition `p`'s handover record.
    pub fn handover_topic(&self, p: u32) -> String {
        format!("{}/{p}", self.handover_topic)
    }

    /// The owned partitions, sorted, without repeats.
    pub fn owned_set(&self) -> std::collections::BTreeSet<u32> {
        self.owned.iter().copied().collect()
    }
}

/// A topic filter with `{partition}` replaced by `p` (unchanged without).
pub fn filter_for(filter: &str, p: Option<u32>) -> String {
    match p {
        Some(p) => filter.replace(PARTITION_SEGMENT, &p.to_string()),
        None => filter.to_string(),
    }
}

/// One broker address of `mqtt.hosts`: `host:port`, `[v6]:port`, or a bare
/// host on `mqtt.port`.
pub fn parse_host(s: &str, default_port: u16) -> Result<(String, u16), String> {
    let s = s.trim();
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, tail) = rest
            .split_once(']')
            .ok_or_else(|| format!("{s:?}: missing ']'"))?;
        match tail.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if tail.is_empty() => (h, None),
            None => return Err(format!("{s:?}: expected [address]:port")),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            Some(_) => return Err(format!("{s:?}: write an IPv6 address as [address]:port")),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{s:?}: no host"));
    }
    let port = match port {
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("{s:?}: {p:?} is not a port")),
        },
        None => default_port,
    };
    Ok((host.to_string(), port))
}

impl super::schema::MqttConfig {
    /// The broker nodes in the order they are tried: `hosts`, or
    /// `host`/`port`. Validation refused addresses that do not parse.
    pub fn brokers(&self) -> Vec<(String, u16)> {
        let listed: Vec<_> = self
            .hosts
            .iter()
            .filter_map(|h| parse_host(h, self.port).ok())
            .collect();
        if listed.is_empty() {
            vec![(self.host.clone(), self.port)]
        } else {
            listed
        }
    }
}

/// Problems of `[partitions]`, `mqtt.hosts` and the `{partition}` segment.
pub(super) fn check(cfg: &Config, p: &mut Vec<Problem>) {
    let mut bad = |key: &str, message: String| {
        p.push(Problem {
            key: key.into(),
            message,
        })
    };
    for (i, h) in cfg.mqtt.hosts.iter().enumerate() {
        if let Err(e) = parse_host(h, cfg.mqtt.port) {
            bad(&format!("mqtt.hosts[{i}]"), e);
        }
    }
    let templated = |f: &str| f.split('/').any(|s| s == PARTITION_SEGMENT);
    // Without [partitions], topics.rs refuses a {partition} segment.
    let Some(parts) = &cfg.partitions else {
        return;
    };
    if parts.count == 0 || parts.count > 4096 {
        bad("partitions.count", "must be 1 to 4096".into());
    }
    let mut seen = std::collections::HashSet::new();
    for (i, &o) in parts.owned.iter().enumerate() {
        if o >= parts.count {
            bad(
                &format!("partitions.owned[{i}]"),
                format!("{o} is not below partitions.count ({})", parts.count),
            );
        }
        if !seen.insert(o) {
            bad(
                &format!("partitions.owned[{i}]"),
                format!("{o} is listed twice"),
            );
        }
    }
    let topic_safe = |s: &str| !s.is_empty() && !s.contains(['+', '#', '/']);
    if !topic_safe(&parts.session) {
        bad(
            "partitions.session",
            "must be a non-empty name without '/', '+' or '#'".into(),
        );
    }
    if parts.handover_topic.is_empty()
        || parts.handover_topic.contains(['+', '#'])
        || parts.handover_topic.ends_with('/')
    {
        bad(
            "partitions.handover_topic",
            "must be a topic without wildcards or a trailing '/'".into(),
        );
    }
    for (i, t) in cfg.topics.iter().enumerate() {
        if !templated(&t.filter) {
            bad(
                &format!("topics[{i}].filter"),
                "with [partitions], every filter names its partition with a {partition} segment (or each partition's session would receive it)".into(),
            );
        }
    }
    // A partition's backlog waits on the broker only for a persistent
    // QoS 1 session, and its handover needs the journal.
    if cfg.mqtt.qos == 0 {
        bad("mqtt.qos", "[partitions] needs qos 1 or 2".into());
    }
    if cfg.mqtt.clean_session {
        bad(
            "mqtt.clean_session",
            "[partitions] needs persistent sessions (clean_session = false)".into(),
        );
    }
    if !cfg.journal.enabled {
        bad(
            "journal.enabled",
            "[partitions] needs the intake journal (a partition's handover is read from it)".into(),
        );
    }
    if cfg.state.resolved_directory().is_none() {
        bad(
            "state.directory",
            "[partitions] needs a state directory (or systemd's StateDirectory=)".into(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_parse_with_and_without_port() {
        assert_eq!(
            parse_host("a.example:1884", 1883),
            Ok(("a.example".into(), 1884))
        );
        assert_eq!(parse_host("b", 1883), Ok(("b".into(), 1883)));
        assert_eq!(parse_host("[::1]:4222", 1883), Ok(("::1".into(), 4222)));
        assert_eq!(parse_host("[::1]", 1883), Ok(("::1".into(), 1883)));
        assert!(
            parse_host("::1:4222", 1883)
                .unwrap_err()
                .contains("[address]:port")
        );
        assert!(parse_host("a:0", 1883).is_err());
        assert!(parse_host("a:x", 1883).is_err());
        assert!(parse_host(":1883", 1883).is_err());
    }

    #[test]
    fn partition_names() {
        let p = PartitionsConfig {
            count: 4,
            owned: vec![3, 1, 3],
            session: "fleet".into(),
            handover_topic: "anomalyd/handover".into(),
        };
        assert_eq!(p.client_id(2), "fleet-p2");
        assert_eq!(p.handover_topic(2), "anomalyd/handover/2");
        assert_eq!(p.owned_set().into_iter().collect::<Vec<_>>(), [1, 3]);
        assert_eq!(
            filter_for("sensors/{partition}/{asset}", Some(2)),
            "sensors/2/{asset}"
        );
        assert_eq!(filter_for("sensors/{asset}", None), "sensors/{asset}");
    }
}
