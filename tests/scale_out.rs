//! Scale-out on a NATS cluster (docs/scale-out.md §5). First the broker facts
//! the design rests on, proven with rumqttc against real `nats-server`
//! processes: the subject mapping puts each asset in one stable
//! partition; a persistent QoS 1 session survives the death of its node
//! and is resumed on another with the messages published meanwhile; a
//! retained message reaches a new subscriber on another node; and, printed,
//! how evenly 1,000 asset names spread over 4 and 16 partitions and how
//! fast QoS 1 publishes go with a node down. Then, in `daemons`, several
//! daemons sharing the partitions (docs/scale-out.md §8).

mod daemons;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

use crate::util::*;

/// `count` asset names `asset-<k>` whose partition (of `n`) is `p`.
pub(crate) fn assets_in(p: u32, n: u32, count: usize) -> Vec<String> {
    (0..)
        .map(|k| format!("asset-{k}"))
        .filter(|a| nats_partition(a, n) == p)
        .take(count)
        .collect()
}

/// Options for a client of node `port` with a persistent session.
fn persistent(id: &str, port: u16) -> MqttOptions {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_clean_session(false);
    opts.set_keep_alive(Duration::from_secs(5));
    opts
}

/// Subscribes to `filter` (QoS 1) with `opts`, retrying while the cluster
/// refuses (a node just died: its leaders are being re-elected) until
/// `deadline`; returns the subscriber and how many tries it took.
fn subscribe_retrying(
    opts: impl Fn() -> MqttOptions,
    filter: &str,
    deadline: Duration,
) -> (MqttSubscriber, usize) {
    let start = Instant::now();
    let mut tries = 0;
    loop {
        tries += 1;
        match MqttSubscriber::try_connect_with(opts(), filter, 1) {
            Ok(s) => return (s, tries),
            Err(e) => assert!(
                start.elapsed() < deadline,
                "subscribe to {filter}: still refused after {:?} and {tries} tries: {e}",
                start.elapsed()
            ),
        }
    }
}

/// Publishes one retained QoS 1 message on node `port`; returns once the
/// broker acknowledged it. A fresh cluster may drop the connection while
/// it creates its retained-message stream (under load, its internal
/// requests time out): the publish is then tried again on a new
/// connection, within 20 s.
fn publish_retained(port: u16, topic: &str, payload: &str) {
    let start = Instant::now();
    loop {
        let opts = MqttOptions::new(client_id("test-retain"), "127.0.0.1", port);
        let (client, mut connection) = Client::new(opts, 10);
        client
            .publish(topic, QoS::AtLeastOnce, true, payload.as_bytes().to_vec())
            .expect("queue the retained publish");
        let acked = loop {
            match connection.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => break Ok(()),
                Ok(Err(e)) => break Err(e.to_string()),
                _ if start.elapsed() > Duration::from_secs(20) => {
                    break Err("no PubAck".to_string());
                }
                _ => {}
            }
        };
        let _ = client.disconnect();
        while let Ok(Ok(_)) = connection.recv_timeout(Duration::from_millis(50)) {}
        match acked {
            Ok(()) => return,
            Err(e) => assert!(
                start.elapsed() < Duration::from_secs(20),
                "retained publish to {topic} not acknowledged within 20 s: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// (a) A publish to `sensors/<asset>` on one node reaches a subscriber on
/// another node as `sensors/<p>/<asset>`, `p` the FNV-1a partition of the
/// asset, the same for every message of an asset; 40 assets use all 4
/// partitions, and nothing arrives unmapped.
#[test]
fn nats_maps_each_asset_to_one_stable_partition() {
    let nats = NatsCluster::start(3, 4);
    let sub = MqttSubscriber::connect(nats.mqtt_port(2), "sensors/#");
    let assets: Vec<String> = (0..40).map(|k| format!("pump-{k}")).collect();
    let msgs: Vec<(String, Vec<u8>)> = (0..2)
        .flat_map(|round| {
            assets
                .iter()
                .map(move |a| (format!("sensors/{a}"), format!("{a} {round}").into_bytes()))
        })
        .collect();
    mqtt_publish_many(nats.mqtt_port(0), &msgs, 1);
    let got = sub.wait_for(msgs.len(), Duration::from_secs(30));

    let mut seen: HashMap<String, HashSet<String>> = HashMap::new();
    for m in &got {
        let asset = m.payload_str().split(' ').next().unwrap().to_string();
        seen.entry(asset).or_default().insert(m.topic.clone());
    }
    let mut used = HashSet::new();
    for a in &assets {
        let p = nats_partition(a, 4);
        used.insert(p);
        let want = HashSet::from([format!("sensors/{p}/{a}")]);
        assert_eq!(seen.get(a), Some(&want), "asset {a}");
    }
    assert_eq!(used.len(), 4, "40 assets use every partition");
    assert_eq!(got.len(), msgs.len(), "each message once: {got:?}");
}

/// (b) A persistent session subscribed to partition 1 disconnects; QoS 1
/// messages for every partition are published; the node it was on is
/// killed. The same client id on another node resumes the session and
/// receives exactly partition 1's messages.
#[test]
fn a_persistent_session_resumes_on_another_node_after_its_node_dies() {
    let mut nats = NatsCluster::start(3, 4);
    let id = client_id("anomalyd-fleet-p1");
    let filter = "sensors/1/+";
    let first = MqttSubscriber::connect_with(persistent(&id, nats.mqtt_port(1)), filter, 1);
    drop(first); // a clean DISCONNECT: the session stays on the broker

    let mut want = HashSet::new();
    let mut msgs = Vec::new();
    for p in 0..4 {
        for a in assets_in(p, 4, 5) {
            for k in 0..4 {
                let payload = format!("{a} {k}");
                if p == 1 {
                    want.insert(payload.clone());
                }
                msgs.push((format!("sensors/{a}"), payload.into_bytes()));
            }
        }
    }
    mqtt_publish_many(nats.mqtt_port(0), &msgs, 1);
    nats.kill(1);
    let killed = Instant::now();

    let port = nats.mqtt_port(2);
    let (resumed, tries) =
        subscribe_retrying(|| persistent(&id, port), filter, Duration::from_secs(45));
    let connected = killed.elapsed();
    let got = resumed.wait_for(want.len(), Duration::from_secs(30));
    let payloads: HashSet<String> = got.iter().map(|m| m.payload_str().to_string()).collect();
    assert_eq!(payloads, want, "partition 1's backlog, nothing else");
    assert!(got.iter().all(|m| m.qos == 1), "{got:?}");
    eprintln!(
        "session resume after a node kill: subscribed on another node {:.1} s after the kill ({tries} tries); {} of {} backlog messages in {:.1} s ({} deliveries)",
        connected.as_secs_f64(),
        payloads.len(),
        want.len(),
        killed.elapsed().as_secs_f64(),
        got.len()
    );
}

/// (c) A retained message published on one node reaches a new subscriber
/// on another; a newer one replaces it there too.
#[test]
fn a_retained_message_reaches_a_new_subscriber_on_another_node() {
    let nats = NatsCluster::start(3, 4);
    let topic = "anomalyd/handover/2";
    let mut waited = Vec::new();
    for text in ["state one", "state two"] {
        publish_retained(nats.mqtt_port(0), topic, text);
        let start = Instant::now();
        // Each node learns retained messages from a stream consumer of
        // its own: poll with fresh subscribers until this one is there.
        let mut last = Vec::new();
        wait_until(Duration::from_secs(30), "the retained message", || {
            // A fresh cluster may refuse a subscription while it creates
            // its streams: try again within the deadline.
            let opts = MqttOptions::new(client_id("retained-sub"), "127.0.0.1", nats.mqtt_port(2));
            let Ok(sub) = MqttSubscriber::try_connect_with(opts, "anomalyd/handover/#", 1) else {
                return false;
            };
            let deadline = Instant::now() + Duration::from_secs(2);
            while sub.count() == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            last = sub.messages();
            last.len() == 1 && last[0].payload_str() == text
        });
        assert!(last[0].retain, "{last:?}");
        assert_eq!(last[0].topic, topic);
        waited.push(start.elapsed());
    }
    eprintln!("retained message seen on another node after {waited:?}");
}

/// Measured, printed: how many of 1,000 asset names `asset-<k>` land in
/// each partition through a real NATS node's mapping, for 4 and 16
/// partitions, with max/mean. Asserts the broker's partition is the
/// FNV-1a one the mosquitto publisher of `scripts/bench-scale.sh` uses.
#[test]
fn partition_spread_of_1000_assets_through_nats() {
    for n in [4u32, 16] {
        let nats = NatsCluster::single(n);
        let sub = MqttSubscriber::connect(nats.mqtt_port(0), "sensors/#");
        let msgs: Vec<(String, Vec<u8>)> = (0..1000)
            .map(|k| (format!("sensors/asset-{k}"), b"1".to_vec()))
            .collect();
        mqtt_publish_many(nats.mqtt_port(0), &msgs, 1);
        let got = sub.wait_for(msgs.len(), Duration::from_secs(30));
        let mut per: BTreeMap<u32, usize> = (0..n).map(|p| (p, 0)).collect();
        for m in &got {
            let mut parts = m.topic.split('/').skip(1);
            let p: u32 = parts.next().unwrap().parse().unwrap();
            let asset = parts.next().unwrap();
            assert_eq!(p, nats_partition(asset, n), "{}", m.topic);
            *per.get_mut(&p).expect("partition < n") += 1;
        }
        assert_eq!(per.values().sum::<usize>(), 1000);
        let max = *per.values().max().unwrap();
        let min = *per.values().min().unwrap();
        let mean = 1000.0 / f64::from(n);
        eprintln!(
            "partition spread, 1000 assets, N = {n}: {:?}; min {min}, max {max}, mean {mean}, max/mean {:.3}",
            per.values().collect::<Vec<_>>(),
            max as f64 / mean
        );
    }
}

/// Measured, printed: QoS 1 publishes a second to one node of a healthy
/// 3-node cluster, with one node killed (once the survivors acknowledge
/// QoS 1 again), and after it is back; a persistent QoS 1 session on
/// another node consumes every message.
#[test]
fn qos1_publish_rate_with_a_node_down() {
    let mut nats = NatsCluster::start(3, 4);
    let id = client_id("rate-sub");
    let port1 = nats.mqtt_port(1);
    let sub = MqttSubscriber::connect_with(persistent(&id, port1), "sensors/+/+", 1);
    let msgs: Vec<(String, Vec<u8>)> = (0..1000)
        .map(|k| (format!("sensors/asset-{}", k % 40), b"1".to_vec()))
        .collect();
    let rate = |nats: &NatsCluster| {
        let start = Instant::now();
        mqtt_publish_many(nats.mqtt_port(2), &msgs, 1);
        msgs.len() as f64 / start.elapsed().as_secs_f64()
    };
    let healthy = rate(&nats);
    nats.kill(0);
    let killed = Instant::now();
    wait_until(Duration::from_secs(45), "QoS 1 acknowledged again", || {
        nats.accepts_qos1(2)
    });
    let acked_again = killed.elapsed();
    let degraded = rate(&nats);
    nats.restart(0);
    let healed = rate(&nats);
    let got = sub.wait_for(3 * msgs.len(), Duration::from_secs(60));
    eprintln!(
        "QoS 1 publishes to one node, 1000 messages, a persistent QoS 1 session consuming: healthy {healthy:.0}/s; node killed: acknowledged again after {:.1} s, then {degraded:.0}/s; node back: {healed:.0}/s; {} deliveries",
        acked_again.as_secs_f64(),
        got.len()
    );
}
