//! Two daemons sharing a fleet through a 3-node NATS cluster
//! (docs/scale-out.md §2, §4, §8): 4 partitions, daemon `gw-a` owns
//! [0, 1] and `gw-b` owns [2, 3], 40 assets stream json_object frames at
//! QoS 1 with event timestamps, and both write to one real InfluxDB 1.x,
//! each with its own `host` tag, so a window written by both shows up
//! twice in InfluxQL. After each fault every expected window of every
//! asset must be there exactly once, by timestamp: a NATS node killed
//! mid-stream, a daemon `kill -9`ed and restarted, a daemon stopped for
//! good whose partitions the other takes by config + SIGHUP. Each prints
//! the windows lost and repeated.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use anomalyd::core::synth::generate;
use tempfile::TempDir;

use crate::util::*;

const DB: &str = "anomalyd";
const PARTITIONS: u32 = 4;
const ASSETS: usize = 40;
/// Rows (one frame a second of event time) per asset.
const ROWS: usize = 120;
/// Rows published before the fault; the rest after it.
const BEFORE: usize = 70;
/// How long the fleet may take to write every window after the last
/// publish (a node kill alone costs about 8 s of refused connects).
const COMPLETE_DEADLINE: Duration = Duration::from_secs(40);

/// One asset's windows: end time -> the `host` tags that wrote it.
type Windows = BTreeMap<i64, Vec<String>>;

/// One daemon of the fleet: its config, ports and state, and the process
/// while it runs.
struct Member {
    tag: &'static str,
    config: DaemonConfig,
    metrics_port: u16,
    _state: TempDir,
    daemon: Option<Daemon>,
    /// The logs of its runs that ended, for a failing test.
    past_logs: Vec<String>,
}

impl Member {
    fn start(&mut self) {
        let mut d = Daemon::start(&self.config.to_toml(), self.metrics_port, &[]);
        d.wait_note("READY=1", Duration::from_secs(60));
        self.daemon = Some(d);
    }

    fn running(&self) -> &Daemon {
        self.daemon.as_ref().expect("the daemon runs")
    }

    /// SIGTERM and a clean exit.
    fn stop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let status = d.terminate(Duration::from_secs(30));
            assert!(
                status.success(),
                "{}: {status}; log:\n{}",
                self.tag,
                d.log()
            );
            self.past_logs.push(d.log());
        }
    }

    /// `kill -9`: the state directory and the broker's sessions stay.
    fn kill_9(&mut self) {
        let mut d = self.daemon.take().expect("the daemon runs");
        d.signal("KILL");
        let _ = d.child.wait();
        self.past_logs.push(d.log());
    }

    /// Writes `config` over the running daemon's config file and sends
    /// SIGHUP.
    fn reload(&mut self, config: DaemonConfig) {
        self.config = config;
        let d = self.running();
        std::fs::write(d.dir.path().join("anomalyd.toml"), self.config.to_toml()).unwrap();
        d.signal("HUP");
    }
}

/// Windows lost and repeated per asset, after every daemon flushed and
/// stopped.
struct Tally {
    expected: usize,
    lost: BTreeMap<String, Vec<i64>>,
    repeated: BTreeMap<String, Vec<i64>>,
    unexpected: usize,
    /// How long the last publish took to be written (or the deadline).
    waited: Duration,
    /// Score points per `host` tag (the daemon that wrote them).
    by_host: BTreeMap<String, usize>,
}

impl Tally {
    fn lost(&self) -> usize {
        self.lost.values().map(Vec::len).sum()
    }

    fn repeated(&self) -> usize {
        self.repeated.values().map(Vec::len).sum()
    }

    fn print(&self, scenario: &str) {
        eprintln!(
            "{scenario}: {} windows expected ({ASSETS} assets); lost {}, repeated {}, unexpected {}; points by host {:?}; complete {:.1} s after the last publish",
            self.expected,
            self.lost(),
            self.repeated(),
            self.unexpected,
            self.by_host,
            self.waited.as_secs_f64()
        );
        for (what, m) in [("lost", &self.lost), ("repeated", &self.repeated)] {
            for (asset, ts) in m.iter().filter(|(_, ts)| !ts.is_empty()).take(5) {
                let rows: Vec<i64> = ts.iter().map(|t| (t - START_NS) / 1_000_000_000).collect();
                eprintln!("  {what} {asset}: windows ending at rows {rows:?}");
            }
        }
    }

    /// Asserts nothing lost, repeated or unexpected; prints the daemons'
    /// logs when something was.
    fn assert_exactly_once(&self, fleet: &Fleet) {
        let counts = (self.lost(), self.repeated(), self.unexpected);
        if counts != (0, 0, 0) {
            for m in &fleet.members {
                for (run, log) in m.past_logs.iter().enumerate() {
                    eprintln!("--- {} run {run} ---\n{log}", m.tag);
                }
            }
        }
        assert_eq!(counts, (0, 0, 0), "windows lost, repeated, unexpected");
    }
}

/// The cluster, the database, the two daemons and the assets' data.
struct Fleet {
    // First, so the daemons stop before the services they use.
    members: Vec<Member>,
    nats: NatsCluster,
    influx: Influxd,
    session: String,
    /// Asset name and its frame payloads, row by row.
    assets: Vec<(String, Vec<String>)>,
    started: Instant,
}

impl Fleet {
    /// Starts everything; both daemons are READY when this returns.
    fn start() -> Fleet {
        let started = Instant::now();
        let nats = NatsCluster::start(3, PARTITIONS);
        let influx = Influxd::start(DB);
        let session = client_id("anomalyd-fleet");
        let mut members = Vec::new();
        for (tag, owned) in [("gw-a", [0, 1]), ("gw-b", [2, 3])] {
            let metrics_port = free_port();
            let state = tempfile::tempdir().unwrap();
            let config = DaemonConfig::new(nats.mqtt_port(0), &influx.url(), metrics_port)
                .mqtt_hosts(&nats.mqtt_hosts())
                .partitions(PARTITIONS, &owned, &session)
                .host_tag(tag)
                .influx_v1(DB)
                .state_dir(state.path());
            members.push(Member {
                tag,
                config,
                metrics_port,
                _state: state,
                daemon: None,
                past_logs: Vec::new(),
            });
        }
        for m in &mut members {
            m.start();
        }
        let assets: Vec<(String, Vec<String>)> = (0..ASSETS)
            .map(|k| {
                let log = generate(ROWS, 500 + k as u64, START_NS, 1_000_000_000, None);
                (format!("pump-{k:02}"), frame_payloads(&log))
            })
            .collect();
        let used: HashSet<u32> = assets
            .iter()
            .map(|(a, _)| nats_partition(a, PARTITIONS))
            .collect();
        assert_eq!(
            used.len(),
            PARTITIONS as usize,
            "every partition has assets"
        );
        Fleet {
            nats,
            influx,
            session,
            members,
            assets,
            started,
        }
    }

    /// [`start`](Self::start), then the first `BEFORE` rows published on
    /// node `node`; returns once every daemon of `tags` has written
    /// windows, announcing the `fault` that follows.
    fn streaming(node: usize, tags: &[&str], fault: &str) -> Fleet {
        let fleet = Fleet::start();
        fleet.mark("fleet ready");
        fleet.publish(0..BEFORE, node);
        for tag in tags {
            fleet.wait_points_of(tag, 1);
        }
        fleet.mark(&format!("first windows written; {fault}"));
        fleet
    }

    /// Prints a step of the scenario with the seconds since the start.
    fn mark(&self, step: &str) {
        eprintln!("[{:5.1} s] {step}", self.started.elapsed().as_secs_f64());
    }

    /// Publishes `rows` of every asset, row by row across the assets, to
    /// `sensors/<asset>` on node `node` at QoS 1.
    fn publish(&self, rows: std::ops::Range<usize>, node: usize) {
        let msgs: Vec<(String, Vec<u8>)> = rows
            .flat_map(|r| {
                self.assets
                    .iter()
                    .map(move |(a, p)| (format!("sensors/{a}"), p[r].clone().into_bytes()))
            })
            .collect();
        mqtt_publish_many(self.nats.mqtt_port(node), &msgs, 1);
    }

    /// Every score point: asset -> window end (ns) -> the hosts that wrote it.
    fn written(&self) -> HashMap<String, BTreeMap<i64, Vec<String>>> {
        let doc = self.influx.query(
            Some(DB),
            "SELECT score FROM anomaly_score GROUP BY asset, host",
        );
        let mut out: HashMap<String, BTreeMap<i64, Vec<String>>> = HashMap::new();
        for s in doc["results"][0]["series"].as_array().into_iter().flatten() {
            let asset = s["tags"]["asset"].as_str().unwrap_or("").to_string();
            let host = s["tags"]["host"].as_str().unwrap_or("").to_string();
            for v in s["values"].as_array().into_iter().flatten() {
                let t = v[0].as_i64().expect("time in ns");
                out.entry(asset.clone())
                    .or_default()
                    .entry(t)
                    .or_default()
                    .push(host.clone());
            }
        }
        out
    }

    /// How many score points the daemon tagged `tag` has written.
    fn points_of(&self, tag: &str) -> usize {
        self.written()
            .values()
            .flat_map(|m| m.values())
            .filter(|hosts| hosts.iter().any(|h| h == tag))
            .count()
    }

    /// Waits until the daemon tagged `tag` has written at least `n` points.
    fn wait_points_of(&self, tag: &str, n: usize) {
        wait_until(
            Duration::from_secs(30),
            &format!("{n} points of {tag}"),
            || self.points_of(tag) >= n,
        );
    }

    /// The expected window ends of one asset.
    fn expected() -> Vec<i64> {
        let first = START_NS + (WINDOW as i64 - 1) * 1_000_000_000;
        (0..windows_for(ROWS) as i64)
            .map(|k| first + k * 1_000_000_000)
            .collect()
    }

    /// Waits (up to the deadline, without failing) until every window of
    /// every asset is in, stops the running daemons (SIGTERM: they drain
    /// and flush, so nothing is written after this), and counts.
    fn finish(&mut self) -> Tally {
        self.finish_when(&|expected, got| expected.iter().all(|t| got.contains_key(t)))
    }

    /// [`finish`](Self::finish), waiting until `done(expected, written)`
    /// holds for every asset instead.
    fn finish_when(&mut self, done: &dyn Fn(&[i64], &Windows) -> bool) -> Tally {
        let expected = Self::expected();
        let start = Instant::now();
        let complete = |w: &HashMap<String, BTreeMap<i64, Vec<String>>>| {
            self.assets
                .iter()
                .all(|(a, _)| w.get(a).is_some_and(|m| done(&expected, m)))
        };
        while !complete(&self.written()) && start.elapsed() < COMPLETE_DEADLINE {
            std::thread::sleep(Duration::from_millis(200));
        }
        let waited = start.elapsed();
        for m in &mut self.members {
            m.stop();
        }
        let written = self.written();
        let mut tally = Tally {
            expected: expected.len() * ASSETS,
            lost: BTreeMap::new(),
            repeated: BTreeMap::new(),
            unexpected: 0,
            waited,
            by_host: BTreeMap::new(),
        };
        let want: HashSet<i64> = expected.iter().copied().collect();
        for (asset, _) in &self.assets {
            let got = written.get(asset).cloned().unwrap_or_default();
            let lost: Vec<i64> = expected
                .iter()
                .copied()
                .filter(|t| !got.contains_key(t))
                .collect();
            let repeated: Vec<i64> = got
                .iter()
                .filter(|(_, hosts)| hosts.len() > 1)
                .map(|(t, _)| *t)
                .collect();
            tally.unexpected += got.keys().filter(|t| !want.contains(t)).count();
            for hosts in got.values() {
                for h in hosts {
                    *tally.by_host.entry(h.clone()).or_default() += 1;
                }
            }
            tally.lost.insert(asset.clone(), lost);
            tally.repeated.insert(asset.clone(), repeated);
        }
        tally
    }

    /// Asserts every point of the assets in `partitions` was written by
    /// the daemon tagged `tag`.
    fn assert_owner(&self, partitions: &[u32], tag: &str) {
        for (asset, windows) in self.written() {
            if partitions.contains(&nats_partition(&asset, PARTITIONS)) {
                let other: Vec<&i64> = windows
                    .iter()
                    .filter(|(_, hosts)| hosts.iter().any(|h| h != tag))
                    .map(|(t, _)| t)
                    .collect();
                assert!(
                    other.is_empty(),
                    "{asset} (partition {}) has {} windows not written by {tag}",
                    nats_partition(&asset, PARTITIONS),
                    other.len()
                );
            }
        }
    }

    /// [`finish`](Self::finish), printed as `scenario`: every window once,
    /// and each partition's windows written by its owner alone.
    fn finish_owned(&mut self, scenario: &str) {
        let tally = self.finish();
        tally.print(scenario);
        tally.assert_exactly_once(self);
        self.assert_owner(&[0, 1], "gw-a");
        self.assert_owner(&[2, 3], "gw-b");
    }

    /// `gw-a` takes partitions 2 and 3 by a config rewrite and SIGHUP while
    /// the rest of the rows are published; returns once it owns all four.
    fn take_over_gw_b(&mut self) {
        self.mark("gw-a takes partitions 2 and 3 (SIGHUP)");
        let all =
            self.members[0]
                .config
                .clone()
                .partitions(PARTITIONS, &[0, 1, 2, 3], &self.session);
        self.members[0].reload(all);
        self.publish(BEFORE..ROWS, 0);
        self.mark("the rest published");
        wait_until(Duration::from_secs(30), "gw-a to own 4 partitions", || {
            self.metric(0, "anomalyd_partitions_owned") == 4.0
        });
        self.mark("gw-a owns 4 partitions");
    }

    /// A metric of the running daemon `member` (0 when absent).
    fn metric(&self, member: usize, name: &str) -> f64 {
        self.members[member].running().metric(name).unwrap_or(0.0)
    }
}

/// The NATS node both daemons are connected to (the first of their
/// `mqtt.hosts`) is killed while they consume and the stream goes on:
/// they reconnect to the next node and resume their partitions'
/// sessions; the node comes back for the rest of the stream; every
/// window is written once.
#[test]
fn a_nats_node_killed_mid_stream_loses_and_repeats_nothing() {
    let mut fleet = Fleet::streaming(2, &["gw-a", "gw-b"], "killing NATS node 0");
    let drops = [0, 1].map(|m| fleet.metric(m, "anomalyd_mqtt_disconnects_total"));
    fleet.nats.kill(0);
    wait_until(
        Duration::from_secs(30),
        "node 2 to take QoS 1 again",
        || fleet.nats.accepts_qos1(2),
    );
    fleet.mark("node 2 acknowledges QoS 1 publishes again");
    // With a node down, the cluster takes QoS 1 publishes at about 50/s
    // while sessions consume (docs/scale-out.md §5): five rows go in during
    // the outage, the rest once the node is back.
    fleet.publish(BEFORE..BEFORE + 5, 2);
    fleet.mark("five rows published with node 0 down");
    wait_until(Duration::from_secs(30), "both daemons reconnected", || {
        (0..2).all(|m| {
            fleet.metric(m, "anomalyd_mqtt_disconnects_total") > drops[m]
                && fleet.metric(m, "anomalyd_mqtt_connected") == 1.0
        })
    });
    fleet.mark("both daemons reconnected; restarting node 0");
    fleet.nats.restart(0);
    fleet.publish(BEFORE + 5..ROWS, 2);
    fleet.mark("the rest published");
    fleet.finish_owned("NATS node killed mid-stream");
}

/// Daemon `gw-a` is `kill -9`ed mid-stream and started again on the same
/// config and state: its partitions' journals and the broker's sessions
/// bring back every window, each once, and `gw-b` is not disturbed.
#[test]
fn a_daemon_killed_and_restarted_loses_and_repeats_nothing() {
    let mut fleet = Fleet::streaming(1, &["gw-a"], "kill -9 gw-a");
    let drops = fleet.metric(1, "anomalyd_mqtt_disconnects_total");
    fleet.members[0].kill_9();
    fleet.publish(BEFORE..ROWS, 1);
    fleet.mark("the rest published; starting gw-a again");
    fleet.members[0].start();
    fleet.mark("gw-a ready again");
    assert_eq!(
        fleet.metric(1, "anomalyd_mqtt_disconnects_total"),
        drops,
        "gw-b lost no connection"
    );
    fleet.finish_owned("daemon gw-a kill -9 and restart");
}

/// Daemon `gw-b` is stopped for good (SIGTERM) mid-stream; `gw-a` takes
/// partitions 2 and 3 by a config rewrite and SIGHUP, reads the handover
/// records and the sessions' backlog: every window once, `gw-b`'s before
/// the handover and `gw-a`'s after.
#[test]
fn partitions_taken_over_by_sighup_lose_and_repeat_nothing() {
    let mut fleet = Fleet::streaming(0, &["gw-b"], "SIGTERM gw-b");
    fleet.members[1].stop();
    fleet.mark("gw-b stopped");
    fleet.take_over_gw_b();
    let handovers = (
        fleet.metric(0, "anomalyd_handovers_taken_total"),
        fleet.metric(0, "anomalyd_handover_messages_total"),
    );
    let tally = fleet.finish();
    tally.print(&format!(
        "partitions 2 and 3 handed from gw-b (SIGTERM) to gw-a (SIGHUP); handover records taken {}, messages replayed from them {}",
        handovers.0, handovers.1
    ));
    tally.assert_exactly_once(&fleet);
    fleet.assert_owner(&[0, 1], "gw-a");
    assert!(
        tally.by_host.get("gw-b").is_some_and(|&n| n > 0),
        "gw-b wrote before the handover: {:?}",
        tally.by_host
    );
}

/// Daemon `gw-b` dies for good (`kill -9`, so it leaves no handover record)
/// and `gw-a` takes partitions 2 and 3 by SIGHUP. The sessions' backlog is
/// delivered, so no reading is lost, but `gw-a` has no window history for
/// those assets: each loses the windows that its first `window - 1` frames
/// after the takeover would have completed, plus what `gw-b` had
/// acknowledged but not yet written. Measured and bounded here
/// (docs/scale-out.md §4, §8); partitions 0 and 1 lose nothing.
#[test]
fn partitions_of_a_dead_daemon_taken_without_a_record_lose_only_their_warm_up() {
    let mut fleet = Fleet::streaming(0, &["gw-b"], "kill -9 gw-b for good");
    fleet.members[1].kill_9();
    fleet.mark("gw-b killed");
    fleet.take_over_gw_b();
    assert_eq!(fleet.metric(0, "anomalyd_handovers_taken_total"), 0.0);
    // Complete once every asset's last window is in.
    let tally =
        fleet.finish_when(&|expected, got| expected.last().is_some_and(|t| got.contains_key(t)));
    tally.print("partitions 2 and 3 of gw-b (kill -9, no record) taken by gw-a (SIGHUP)");
    assert_eq!(tally.repeated(), 0, "no window written twice");
    assert_eq!(tally.unexpected, 0);
    for (asset, lost) in &tally.lost {
        let n = lost.len();
        if nats_partition(asset, PARTITIONS) < 2 {
            assert_eq!(n, 0, "{asset} of gw-a's own partitions lost windows");
        } else {
            assert!(
                (WINDOW - 1..windows_for(ROWS)).contains(&n),
                "{asset}: {n} windows lost; the warm-up alone is {}",
                WINDOW - 1
            );
        }
    }
}
