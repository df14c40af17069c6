"""Scale-out throughput (docs/scale-out.md §9): aggregate readings/s and CPU
per reading of 1, 2 and 4 daemons sharing 4 partitions, on one NATS node
(the partition mapping in the broker) and on mosquitto (the publisher puts
each asset in `sensors/<p>/<asset>` itself, p = FNV-1a 32 of the asset
mod 4, NATS's function).

Each case starts a fresh broker and VictoriaMetrics on free loopback ports.
The daemons start once so the broker holds their partitions' persistent
sessions, and stop (SIGTERM). The backlog, ASSETS x ROWS JSON frames of 8
channels at QoS 1, is then published while no daemon runs (one
`mosquitto_pub -l` per asset), so publishing costs the daemons nothing.
The daemons start again and drain it: from the moment every daemon's
/metrics answers (model loaded; intake starts right after) until the sum
of their `anomalyd_windows_scored_total` reaches every window (or until
the last change, when it stops short for 45 s: reported with the windows
scored and the readings dropped). Readings/s = 8 x frames / that time;
CPU per reading = the daemons' utime + stime (/proc) over the same
interval / readings, and the same for the broker. Everything shares this
machine's cores with the broker and the database: the figures are what
one host gives, not what separate hosts would.

Usage: python3 scripts/bench_scale.py --anomalyd BIN [--assets 200]
       [--rows 500] [--daemons 1,2,4] [--brokers nats,mosquitto] [--json FILE]
       [--keep]
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_load.common import CHANNELS, ROOT, START_NS, free_port  # noqa: E402
from bench_load.procfs import proc_cpu  # noqa: E402
from bench_load.services import stop_all  # noqa: E402

PARTITIONS = 4
WINDOW = 40  # the shipped model's window length
NAMES = ["vibration_1", "vibration_2", "current", "pressure", "motor_temp", "fluid_temp", "voltage", "flow_rate"]
BASE = [1.6, 1.29, 5.4, 2.6, 51.0, 26.2, 230.0, 31.4]
DEADLINE_S = 600
STALL_S = 45


def nats_partition(token, n):
    """NATS's partition(n, ...) of one token: FNV-1a 32 mod n."""
    h = 0x811C9DC5
    for b in token.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h % n


def wait_for(what, check, deadline_s=60):
    start = time.time()
    while not check():
        if time.time() - start > deadline_s:
            raise SystemExit(f"bench-scale: no {what} after {deadline_s} s")
        time.sleep(0.05)


def http_ok(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def metrics_text(port):
    """A daemon's /metrics, or "" when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            return r.read().decode()
    except OSError:
        return ""


def metrics(port):
    """Unlabelled metric values of a daemon, or {} when it does not answer."""
    out = {}
    for line in metrics_text(port).splitlines():
        parts = line.split()
        if len(parts) == 2 and not line.startswith("#") and "{" not in parts[0]:
            try:
                out[parts[0]] = float(parts[1])
            except ValueError:
                pass
    return out


def dropped_readings(port):
    """Sum of anomalyd_readings_dropped_total over its reasons."""
    lines = metrics_text(port).splitlines()
    return sum(float(line.split()[-1]) for line in lines if line.startswith("anomalyd_readings_dropped_total{"))


class Case:
    """One broker, one database and the daemons of one measurement."""

    def __init__(self, broker, binary, ndaemons, workdir):
        self.broker, self.binary, self.n = broker, binary, ndaemons
        self.dir = tempfile.mkdtemp(prefix=f"{broker}-{ndaemons}-", dir=workdir)
        self.procs = []
        self.daemons = []

    def spawn(self, argv, log):
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, log), "a"))
        self.procs.append(p)
        return p

    def start_services(self):
        self.mqtt_port = free_port()
        if self.broker == "nats":
            conf = os.path.join(self.dir, "nats.conf")
            with open(conf, "w") as f:
                f.write(
                    "server_name: bench\n"
                    f'listen: "127.0.0.1:{free_port()}"\n'
                    f'jetstream {{\n  store_dir: "{self.dir}/js"\n}}\n'
                    f'mqtt {{\n  listen: "127.0.0.1:{self.mqtt_port}"\n}}\n'
                    'mappings = { "sensors.*": "sensors.{{partition(%d,1)}}.{{wildcard(1)}}" }\n' % PARTITIONS
                )
            self.broker_proc = self.spawn(["/usr/sbin/nats-server", "-c", conf], "nats.log")
        else:
            conf = os.path.join(self.dir, "mosquitto.conf")
            with open(conf, "w") as f:
                f.write(
                    f"listener {self.mqtt_port} 127.0.0.1\nallow_anonymous true\n"
                    "max_queued_messages 10000000\nmax_inflight_messages 1000\n"
                    + ("user root\n" if os.getuid() == 0 else "")
                )
            self.broker_proc = self.spawn(["/usr/sbin/mosquitto", "-c", conf], "mosquitto.log")
        self.vm_port = free_port()
        os.makedirs(os.path.join(self.dir, "vm"))
        self.spawn(
            [
                "/usr/bin/victoria-metrics",
                f"-httpListenAddr=127.0.0.1:{self.vm_port}",
                f"-storageDataPath={self.dir}/vm",
                "-retentionPeriod=100y",
                "-loggerLevel=ERROR",
            ],
            "vm.log",
        )
        wait_for("VictoriaMetrics", lambda: http_ok(f"http://127.0.0.1:{self.vm_port}/health"))
        # A QoS 1 publish acknowledged: for NATS, JetStream and MQTT are up.
        probe = ["mosquitto_pub", "-p", str(self.mqtt_port), "-q", "1", "-t", "probe", "-m", "1"]

        def taking():
            if self.broker_proc.poll() is not None:
                raise SystemExit(f"bench-scale: {self.broker} exited; its log is in {self.dir}")
            return subprocess.run(probe, capture_output=True).returncode == 0

        wait_for(f"{self.broker} taking QoS 1", taking)

    def config(self, i, owned, metrics_port):
        state = os.path.join(self.dir, f"state-{i}")
        os.makedirs(state, exist_ok=True)
        return f"""default_model = "pump"

[mqtt]
hosts = ["127.0.0.1:{self.mqtt_port}"]
client_id = "bench-{i}"
clean_session = false
qos = 1
reconnect_min_ms = 50
reconnect_max_ms = 500

[partitions]
count = {PARTITIONS}
owned = {json.dumps(owned)}
session = "bench-fleet"

[[topics]]
filter = "sensors/{{partition}}/{{asset}}"
payload = "json_object"
timestamp_field = "ts"

[[models]]
name = "pump"
path = "{ROOT}/models/pump.onnx"

[pipeline]
max_assets = 100000

[influx]
url = "http://127.0.0.1:{self.vm_port}"
org = "bench"
bucket = "anomalyd"
host_tag = "d{i}"

[state]
directory = "{state}"

[metrics]
listen = "127.0.0.1:{metrics_port}"

[log]
level = "info"
"""

    def start_daemons(self):
        self.daemons = []
        for i in range(self.n):
            owned = list(range(i, PARTITIONS, self.n))
            port = self.ports[i]
            path = os.path.join(self.dir, f"d{i}.toml")
            with open(path, "w") as f:
                f.write(self.config(i, owned, port))
            p = self.spawn([self.binary, "run", "--config", path], f"d{i}.log")
            self.daemons.append((p, port))

    def stop_daemons(self):
        for p, _ in self.daemons:
            p.send_signal(signal.SIGTERM)
        for p, _ in self.daemons:
            if p.wait(timeout=60) != 0:
                raise SystemExit(f"bench-scale: a daemon exited with {p.returncode}; logs in {self.dir}")

    def publish(self, assets, rows):
        """The backlog: one mosquitto_pub per asset, eight at a time."""
        running = []
        for k in range(assets):
            asset = f"asset-{k:05}"
            lines = os.path.join(self.dir, "frames.jsonl")
            if k == 0:
                with open(lines, "w") as f:
                    for r in range(rows):
                        frame = {"ts": START_NS // 10**6 + r * 1000}
                        frame.update({n: round(b * (1 + 0.01 * ((r * 7 + j) % 13 - 6) / 6), 4) for j, (n, b) in enumerate(zip(NAMES, BASE))})
                        f.write(json.dumps(frame) + "\n")
            topic = f"sensors/{asset}" if self.broker == "nats" else f"sensors/{nats_partition(asset, PARTITIONS)}/{asset}"
            with open(lines) as src:
                running.append(subprocess.Popen(["mosquitto_pub", "-p", str(self.mqtt_port), "-q", "1", "-M", "200", "-t", topic, "-l"], stdin=src))
            if len(running) >= 8:
                if running.pop(0).wait() != 0:
                    raise SystemExit("bench-scale: mosquitto_pub failed")
        for p in running:
            if p.wait() != 0:
                raise SystemExit("bench-scale: mosquitto_pub failed")

    def run(self, assets, rows):
        self.start_services()
        self.ports = [free_port() for _ in range(self.n)]
        # Sessions first: the broker keeps the backlog for them.
        self.start_daemons()
        for _, port in self.daemons:
            wait_for("daemon ready", lambda: http_ok(f"http://127.0.0.1:{port}/readyz"))
        self.stop_daemons()
        t = time.time()
        self.publish(assets, rows)
        publish_s = time.time() - t

        expected = assets * (rows - WINDOW + 1)
        self.start_daemons()
        wait_for("every daemon's /metrics", lambda: all(metrics(port) for _, port in self.daemons))
        t0 = time.time()
        cpu0 = sum(proc_cpu(p.pid) or 0 for p, _ in self.daemons)
        broker0 = proc_cpu(self.broker_proc.pid) or 0
        acks0 = sum(metrics(port).get("anomalyd_mqtt_acks_total", 0) for _, port in self.daemons)

        def scored():
            return sum(metrics(port).get("anomalyd_windows_scored_total", 0) for _, port in self.daemons)

        # Done when every window is scored, or when nothing moved for longer
        # than NATS's 30 s ack wait (a redelivery would have come by then).
        last, last_at = -1, time.time()
        while True:
            n = scored()
            if n != last:
                last, last_at = n, time.time()
            if n >= expected or time.time() - last_at > STALL_S or time.time() - t0 > DEADLINE_S:
                break
            time.sleep(0.05)
        t1 = last_at
        cpu1 = sum(proc_cpu(p.pid) or 0 for p, _ in self.daemons)
        broker1 = proc_cpu(self.broker_proc.pid) or 0
        dropped = sum(dropped_readings(port) for _, port in self.daemons)
        frames = assets * rows - acks0
        self.stop_daemons()
        return {
            "broker": self.broker,
            "daemons": self.n,
            "frames": assets * rows,
            "publish_s": round(publish_s, 2),
            "drain_s": round(t1 - t0, 3),
            "readings_per_s": round(frames * CHANNELS / (t1 - t0)),
            "cpu_us_per_reading": round((cpu1 - cpu0) / (frames * CHANNELS) * 1e6, 3),
            "broker_cpu_us_per_reading": round((broker1 - broker0) / (frames * CHANNELS) * 1e6, 3),
            "windows_scored": int(last),
            "windows_expected": expected,
            "readings_dropped": int(dropped),
        }

    def close(self):
        stop_all(self.procs, 15)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--anomalyd", required=True)
    ap.add_argument("--assets", type=int, default=200)
    ap.add_argument("--rows", type=int, default=500)
    ap.add_argument("--daemons", default="1,2,4")
    ap.add_argument("--brokers", default="nats,mosquitto")
    ap.add_argument("--json")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory (logs, configs)")
    a = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="anomalyd-bench-scale.")
    results = []
    try:
        for broker in a.brokers.split(","):
            for n in [int(x) for x in a.daemons.split(",")]:
                case = Case(broker, a.anomalyd, n, workdir)
                try:
                    r = case.run(a.assets, a.rows)
                finally:
                    case.close()
                results.append(r)
                print(f"bench-scale: {broker} {n} daemon(s): {r}", flush=True)
    finally:
        if a.keep:
            print(f"bench-scale: kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print(f"\n{a.assets} assets x {a.rows} frames of {CHANNELS} channels, QoS 1, {PARTITIONS} partitions, backlog drained; {os.cpu_count()} cores")
    print("| broker | daemons | readings/s | x 1 daemon | per-daemon efficiency | daemons' CPU us/reading | broker's CPU us/reading | drain s | windows scored | readings dropped |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        one = next((x for x in results if x["broker"] == r["broker"] and x["daemons"] == 1), None)
        ratio = r["readings_per_s"] / one["readings_per_s"] if one else float("nan")
        print(
            f"| {r['broker']} | {r['daemons']} | {r['readings_per_s']} | {ratio:.2f} | {ratio / r['daemons']:.2f} "
            f"| {r['cpu_us_per_reading']} | {r['broker_cpu_us_per_reading']} | {r['drain_s']} | {r['windows_scored']}/{r['windows_expected']} | {r['readings_dropped']} |"
        )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
