#!/usr/bin/env python3
"""End-to-end load comparison: anomalyd against the reference Python stack.

Run through `scripts/bench-load.sh`, which builds the daemon and the Python
virtual environment first. Everything runs on loopback, in this one process
tree: one mosquitto, one VictoriaMetrics, and a write tap in this process
that forwards every write to VictoriaMetrics and notes when the database
acknowledged each point. Both stacks get the same workload (`anomalyd
simulate`: ASSETS synthetic pumps, one JSON frame of 8 channels per asset and
row, topic `sensors/<asset>`), the same broker, model file and database, one
after the other.

Measured per stack and QoS:
- throughput: ROWS rows published as fast as the broker takes them; readings/s
  from the first publish to the last score point acknowledged by the
  database; the consumer's CPU seconds per million readings (utime + stime
  from /proc, start-up excluded) and peak RSS (VmHWM); readings and score
  points lost.
- latency: at half of that stack's own maximum (readings/s), row i is
  published at anchor + i / rate (the publisher's schedule; anchor is the
  instant it logs "publishing") with event time start + i s. The tap takes
  the moment the database answers 2xx to the write that holds the score of
  the window ending at row i; latency = that moment - scheduled publish of
  row i. A late publisher makes this larger, never smaller.
- footprint: anomalyd alone with many assets; RSS split from
  /proc/PID/smaps into heap/anonymous memory and the ONNX Runtime
  library's file pages.

A reading is one channel value (the Python stack prints frames as
"readings": they are converted).
"""

import argparse
import datetime as dt
import gzip
import http.client
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

CHANNELS = 8
START_TS = "2026-01-01T00:00:00Z"
START_NS = int(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc).timestamp()) * 10**9
PERIOD_NS = 10**9
SCORE_MEASUREMENT = b"anomaly_score"
HZ = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------
# The write tap
# --------------------------------------------------------------------------


class TapState:
    """What the tap saw in the current phase (guarded by `lock`)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reset(False)

    def reset(self, keep_ts):
        with self.lock:
            self.keep_ts = keep_ts
            self.points = 0
            self.first_ack = None
            self.last_ack = None
            self.requests = 0
            self.failed = 0
            # (ack time, [ts_ns, ...]) per accepted write, latency phases only.
            self.acks = []
            # Seconds the database took to answer each write.
            self.db_s = []

    def snapshot(self):
        with self.lock:
            return self.points, self.last_ack


def score_timestamps(body, precision):
    scale = {"ns": 1, "us": 10**3, "ms": 10**6, "s": 10**9}.get(precision, 1)
    out = []
    for line in body.split(b"\n"):
        if line.startswith(SCORE_MEASUREMENT + b","):
            out.append(int(line.rsplit(b" ", 1)[1]) * scale)
    return out


def make_tap(upstream_port, state):
    local = threading.local()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def upstream(self):
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
                local.conn = conn
            return conn

        def forward(self, method):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {
                k: v
                for k, v in self.headers.items()
                if k.lower() not in ("host", "connection", "content-length")
            }
            try:
                conn = self.upstream()
                sent = time.time()
                conn.request(method, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException):
                local.conn = None
                self.send_response(502)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            acked = time.time()
            if method == "POST" and "/write" in self.path:
                self.note(body, acked, 200 <= resp.status < 300, acked - sent)
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("connection", "content-length", "transfer-encoding"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def note(self, body, acked, ok, db_s):
            if self.headers.get("Content-Encoding", "").lower() == "gzip":
                body = gzip.decompress(body)
            n = body.count(b"\n" + SCORE_MEASUREMENT + b",") + int(
                body.startswith(SCORE_MEASUREMENT + b",")
            )
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            precision = query.get("precision", ["ns"])[0]
            with state.lock:
                state.requests += 1
                state.db_s.append(db_s)
                if not ok:
                    state.failed += 1
                    return
                state.points += n
                if n and state.first_ack is None:
                    state.first_ack = acked
                if n:
                    state.last_ack = acked
                keep = state.keep_ts
            if keep and n:
                stamps = score_timestamps(body, precision)
                with state.lock:
                    state.acks.append((acked, stamps))

        def do_POST(self):
            self.forward("POST")

        def do_GET(self):
            self.forward("GET")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# --------------------------------------------------------------------------
# /proc readings
# --------------------------------------------------------------------------


def proc_cpu(pid):
    """utime + stime of a process (all threads), seconds; None when gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / HZ
    except OSError:
        return None


def thread_cpu(pid):
    """CPU seconds per thread name (threads of one name summed)."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw.rsplit(")", 1)[1].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / HZ
        out["(kernel, all threads)"] = out.get("(kernel, all threads)", 0.0) + int(fields[12]) / HZ
    return out


def proc_status_kb(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def smaps(pid):
    """RSS in kB: anon (heap, stacks, anonymous maps), ort_file (file pages
    of libonnxruntime), ort_cow (its relocated/written pages), other_file;
    `largest` lists the biggest anonymous mappings (kB, name, size)."""
    cats = {"anon": 0, "ort_file": 0, "ort_cow": 0, "other_file": 0}
    anon_maps = []
    path = ""
    size = rss = 0
    try:
        with open(f"/proc/{pid}/smaps") as f:
            lines = f.readlines()
    except OSError:
        return None
    for line in lines:
        first = line.split(None, 1)[0]
        if "-" in first and not first.endswith(":"):
            parts = line.split()
            path = parts[5] if len(parts) > 5 else ""
        elif first == "Size:":
            size = int(line.split()[1])
        elif first == "Rss:":
            rss = int(line.split()[1])
        elif first == "Anonymous:":
            anon = int(line.split()[1])
            if "libonnxruntime" in path:
                cats["ort_file"] += rss - anon
                cats["ort_cow"] += anon
            elif path.startswith("/"):
                cats["other_file"] += rss - anon
                cats["anon"] += anon
            else:
                cats["anon"] += rss
                anon_maps.append((rss, path or "anonymous", size))
    anon_maps.sort(reverse=True)
    cats["largest"] = anon_maps[:8]
    return cats


# --------------------------------------------------------------------------
# Services and consumers
# --------------------------------------------------------------------------


class Bench:
    def __init__(self, args):
        self.args = args
        self.root = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
        self.bin = os.path.join(self.root, "target", "release", "anomalyd")
        self.model = os.path.abspath(args.model)
        self.window, self.stride, self.model_desc = self.inspect_model()
        self.python = os.path.join(self.root, "target", "bench-venv", "bin", "python")
        self.python_stack = os.path.abspath(args.python_stack)
        self.dir = tempfile.mkdtemp(prefix="anomalyd-bench.")
        self.procs = []
        self.tap = TapState()
        self.runs = 0
        self.results = {"phases": []}

    def inspect_model(self):
        out = subprocess.run(
            [self.bin, "inspect-model", self.model], capture_output=True, text=True, check=True
        ).stdout
        window = stride = None
        desc = []
        for line in out.splitlines():
            key, _, rest = line.partition(":")
            if key.strip() == "sampling":
                parts = rest.split()
                window = int(parts[parts.index("window") + 1])
                stride = int(parts[parts.index("stride") + 1])
            if key.strip() in ("sha256", "model", "sampling"):
                desc.append(rest.strip())
        if window is None:
            raise SystemExit(f"bench: cannot read the window of {self.model}")
        return window, stride, "; ".join(desc)

    def expected_points(self, stack, rows):
        """Score points per asset: both stacks score a row's window as soon
        as the row (a whole frame on its tick) arrives."""
        if rows < self.window:
            return 0
        return (rows - self.window) // self.stride + 1

    def spawn(self, argv, **kw):
        p = subprocess.Popen(argv, **kw)
        self.procs.append(p)
        return p

    def start_services(self):
        self.mqtt_port = free_port()
        self.vm_port = free_port()
        self.mlog = os.path.join(self.dir, "mosquitto.log")
        conf = os.path.join(self.dir, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write(
                f"listener {self.mqtt_port} 127.0.0.1\nallow_anonymous true\n"
                "max_queued_messages 2000000\nmax_inflight_messages 1000\n"
                # stderr is unbuffered: a subscription shows up at once.
                "log_dest stderr\nlog_type subscribe\nlog_type error\n"
                + ("user root\n" if os.getuid() == 0 else "")
            )
        self.mosquitto = self.spawn(
            ["/usr/sbin/mosquitto", "-c", conf], stderr=open(self.mlog, "w")
        )
        os.makedirs(os.path.join(self.dir, "vm"))
        self.vm = self.spawn(
            [
                "/usr/bin/victoria-metrics",
                f"-httpListenAddr=127.0.0.1:{self.vm_port}",
                f"-storageDataPath={self.dir}/vm",
                "-retentionPeriod=100y",
                "-search.latencyOffset=0s",
                "-loggerLevel=ERROR",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.vm_port}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        self.tap_server = make_tap(self.vm_port, self.tap)
        self.tap_port = self.tap_server.server_address[1]

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        if not self.args.keep:
            subprocess.run(["rm", "-rf", self.dir], check=False)

    def subscribed_count(self, client_id):
        try:
            with open(self.mlog) as f:
                return sum(1 for line in f if f": {client_id} " in line and "sensors/+" in line)
        except OSError:
            return 0

    def wait_subscribed(self, client_id, before, proc):
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.subscribed_count(client_id) > before:
                return
            if proc.poll() is not None:
                raise SystemExit(f"bench: {client_id} exited before subscribing (rc {proc.returncode})")
            time.sleep(0.01)
        raise SystemExit(f"bench: {client_id} did not subscribe within 60 s")

    def daemon_config(self, qos, metrics_port, max_batch, client_id):
        with open(os.path.join(self.root, "config", "anomalyd.toml")) as f:
            text = f.read()
        repl = [
            ("port = 1883", f"port = {self.mqtt_port}"),
            ("http://127.0.0.1:8428", f"http://127.0.0.1:{self.tap_port}"),
            ("127.0.0.1:9464", f"127.0.0.1:{metrics_port}"),
            ('path = "../models/pump.onnx"', f'path = "{self.model}"'),
            ("\nqos = 1\n", f"\nqos = {qos}\n"),
            ('client_id = "anomalyd"', f'client_id = "{client_id}"'),
            ("clean_session = false", "clean_session = true"),
            ("max_batch = 64", f"max_batch = {max_batch}"),
            # The Python stack's writer: batches of 1,000 or every 200 ms.
            ("flush_interval_ms = 1000", f"flush_interval_ms = {self.args.flush_ms}"),
            ('level = "info"', 'level = "warn"'),
        ]
        if self.args.journal:
            # Durable intake: a state directory (journal + spool) and a
            # persistent session, as a production gateway runs.
            state = os.path.join(self.dir, f"state-{client_id}")
            repl.remove(("clean_session = false", "clean_session = true"))
            repl.append(('# directory = "/var/lib/anomalyd"\n', f'directory = "{state}"\n'))
        for old, new in repl:
            if old not in text:
                raise SystemExit(f"bench: config/anomalyd.toml no longer contains {old!r}")
            text = text.replace(old, new, 1)
        path = os.path.join(self.dir, f"anomalyd-q{qos}.toml")
        with open(path, "w") as f:
            f.write(text)
        return path

    def start_consumer(self, stack, qos, frames, max_batch):
        """Starts a consumer and waits until the broker has its subscription."""
        # A client id of its own per run: nothing of an earlier session can
        # reach it.
        self.runs += 1
        if stack == "anomalyd":
            client_id = f"anomalyd-bench-{self.runs}"
            metrics_port = free_port()
            cfg = self.daemon_config(qos, metrics_port, max_batch, client_id)
            before = self.subscribed_count(client_id)
            log = open(os.path.join(self.dir, "anomalyd.log"), "a")
            env = dict(os.environ)
            p = self.spawn([self.bin, "run", "--config", cfg], stdout=log, stderr=log, env=env)
            p.metrics_port = metrics_port
        else:
            client_id = "python-stack"
            before = self.subscribed_count(client_id)
            p = self.spawn(
                [
                    self.python,
                    self.python_stack,
                    "--model",
                    self.model,
                    "--mqtt-port",
                    str(self.mqtt_port),
                    "--influx-url",
                    f"http://127.0.0.1:{self.tap_port}",
                    "--count",
                    str(frames),
                    "--qos",
                    str(qos),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            p.metrics_port = None
        self.wait_subscribed(client_id, before, p)
        return p

    def publish(self, assets, rows, qos, rate=None, prefix="pump-"):
        argv = [
            self.bin,
            "simulate",
            "--broker",
            f"127.0.0.1:{self.mqtt_port}",
            "--synthetic",
            "pump",
            "--assets",
            str(assets),
            "--rows",
            str(rows),
            "--qos",
            str(qos),
            "--start-ts",
            START_TS,
            "--asset-prefix",
            prefix,
        ]
        argv += ["--rate", f"{rate:.6f}"] if rate else ["--fast"]
        return self.spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    @staticmethod
    def anchor_of(stderr_text):
        for line in stderr_text.splitlines():
            if "simulate: publishing" in line:
                stamp = line.split()[0]
                return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        return None

    def metrics_of(self, port):
        if not port:
            return {}
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
        except OSError:
            return {}
        out = {}
        for line in text.splitlines():
            if line.startswith("anomalyd_") and " " in line:
                k, v = line.rsplit(" ", 1)
                try:
                    out[k] = out.get(k, 0) + float(v)
                except ValueError:
                    pass
                if k.startswith("anomalyd_readings_dropped_total"):
                    out["dropped"] = out.get("dropped", 0) + float(v)
        return out

    # ----------------------------------------------------------------------

    def run_phase(self, stack, qos, assets, rows, rate=None, footprint=False):
        """One run. `rate` (rows/s per asset) paces the publisher; without
        `footprint` a paced run is a latency run."""
        latency = rate is not None and not footprint
        expected = assets * self.expected_points(stack, rows)
        readings = assets * rows * CHANNELS
        self.tap.reset(keep_ts=latency)
        # The footprint run keeps the shipped config's batch size.
        max_batch = self.args.footprint_max_batch if footprint else self.args.max_batch
        consumer = self.start_consumer(stack, qos, assets * rows, max_batch)
        pid = consumer.pid
        cpu0 = proc_cpu(pid)
        threads0 = thread_cpu(pid) if stack == "anomalyd" else {}
        broker0 = proc_cpu(self.mosquitto.pid)
        vm0 = proc_cpu(self.vm.pid)
        t_launch = time.time()
        pub = self.publish(assets, rows, qos, rate)
        peak = {"total": 0}
        last_cpu, last_hwm, last_threads = cpu0, proc_status_kb(pid, "VmHWM"), threads0
        progress_at, last_points = time.time(), -1
        t_pub_end = None
        next_smaps = 0.0
        while True:
            points, _ = self.tap.snapshot()
            now = time.time()
            c = proc_cpu(pid)
            if c is not None:
                last_cpu = c
                last_hwm = proc_status_kb(pid, "VmHWM") or last_hwm
                if stack == "anomalyd":
                    last_threads = thread_cpu(pid)
            if footprint and now >= next_smaps:
                s = smaps(pid)
                if s:
                    total = s["anon"] + s["ort_file"] + s["ort_cow"] + s["other_file"]
                    if total > peak["total"]:
                        peak = dict(s, total=total)
                next_smaps = now + 0.2
            if t_pub_end is None and pub.poll() is not None:
                t_pub_end = now
            if points >= expected:
                break
            if points != last_points:
                last_points, progress_at = points, now
            if now - progress_at > self.args.stall_s and pub.poll() is not None:
                break
            time.sleep(0.02)
        points, last_ack = self.tap.snapshot()
        pub.wait()
        pub_err = pub.stderr.read()
        anchor = self.anchor_of(pub_err) or t_launch
        broker1 = proc_cpu(self.mosquitto.pid)
        vm1 = proc_cpu(self.vm.pid)
        metrics = self.metrics_of(consumer.metrics_port)
        if stack == "anomalyd":
            consumer.send_signal(signal.SIGTERM)
            consumer.wait(timeout=30)
            processed = int(metrics.get("anomalyd_readings_used_total", 0))
            dropped = int(metrics.get("dropped", 0))
        else:
            try:
                out, _ = consumer.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                consumer.kill()
                out, _ = consumer.communicate()
            processed = 0
            for line in (out or "").splitlines():
                if line.startswith("processed "):
                    processed = int(line.split()[1]) * CHANNELS
            dropped = readings - processed
        wall = (last_ack or time.time()) - anchor
        cpu = last_cpu - cpu0
        phase = {
            "stack": stack,
            "qos": qos,
            "assets": assets,
            "rows": rows,
            "mode": "footprint" if footprint else ("latency" if latency else "throughput"),
            "rate_rows_per_s": rate,
            "readings": readings,
            "readings_processed": processed,
            "readings_dropped": dropped,
            "points_expected": expected,
            "points_accepted": points,
            "wall_s": wall,
            "readings_per_s": readings / wall if wall > 0 else 0.0,
            "cpu_s": cpu,
            "cpu_s_per_million": cpu / readings * 1e6,
            "peak_rss_mib": (last_hwm or 0) / 1024,
            "broker_cpu_s": (broker1 or 0) - (broker0 or 0),
            "vm_cpu_s": (vm1 or 0) - (vm0 or 0),
            "publish_s": t_pub_end - anchor if t_pub_end else None,
            "tap_failed_writes": self.tap.failed,
        }
        if stack == "anomalyd" and metrics.get("anomalyd_inference_batches_total"):
            phase["mean_batch"] = metrics.get("anomalyd_windows_scored_total", 0) / metrics[
                "anomalyd_inference_batches_total"
            ]
        if stack == "anomalyd":
            phase["threads_cpu_s"] = {
                k: round(v - threads0.get(k, 0.0), 3)
                for k, v in last_threads.items()
                if v - threads0.get(k, 0.0) > 0
            }
        if footprint:
            phase["smaps_peak_kib"] = peak
        if latency:
            phase["latency_ms"] = self.latency(anchor, rate, stack)
        self.results["phases"].append(phase)
        self.report(phase)
        return phase

    def latency(self, anchor, rate, stack):
        with self.tap.lock:
            acks = list(self.tap.acks)
        lat, lat_close = [], []
        for acked, stamps in acks:
            for ts in stamps:
                row = round((ts - START_NS) / PERIOD_NS)
                lat.append(acked - (anchor + row / rate))
                lat_close.append(acked - (anchor + (row + 1) / rate))
        res = {"samples": len(lat)}
        with self.tap.lock:
            db = sorted(self.tap.db_s)
        if db:
            res["database_write_ms"] = {
                "p50": 1000 * db[len(db) // 2],
                "p99": 1000 * db[min(len(db) - 1, int(len(db) * 0.99))],
                "max": 1000 * db[-1],
                "writes": len(db),
            }
        for name, xs in (("from_row", lat), ("from_closing_row", lat_close)):
            xs.sort()
            if xs:
                res[name] = {
                    "p50": 1000 * xs[len(xs) // 2],
                    "p99": 1000 * xs[min(len(xs) - 1, int(len(xs) * 0.99))],
                    "max": 1000 * xs[-1],
                }
        return res

    @staticmethod
    def report(p):
        print(
            f"  {p['stack']:<9} QoS {p['qos']} {p['mode']:<10} {p['assets']} assets x {p['rows']} rows"
            f"{' at %g rows/s' % p['rate_rows_per_s'] if p['rate_rows_per_s'] else ''}: "
            f"{p['readings_per_s']:>9,.0f} readings/s, {p['cpu_s_per_million']:.2f} CPU-s/M, "
            f"RSS {p['peak_rss_mib']:.1f} MiB, points {p['points_accepted']:,}/{p['points_expected']:,}, "
            f"readings dropped {p['readings_dropped']:,}",
            flush=True,
        )
        if "latency_ms" in p and "from_row" in p["latency_ms"]:
            lr = p["latency_ms"]["from_row"]
            print(
                f"            latency at {p['rate_rows_per_s'] * p['assets'] * CHANNELS:,.0f} readings/s: "
                f"p50 {lr['p50']:.1f} ms, p99 {lr['p99']:.1f} ms, max {lr['max']:.1f} ms "
                f"({p['latency_ms']['samples']:,} points)",
                flush=True,
            )
            db = p["latency_ms"].get("database_write_ms")
            if db:
                print(
                    f"            of which the database answering a write: p50 {db['p50']:.1f} ms, "
                    f"p99 {db['p99']:.1f} ms, max {db['max']:.1f} ms ({db['writes']} writes)",
                    flush=True,
                )
        if "threads_cpu_s" in p:
            batch = f", mean inference batch {p['mean_batch']:.0f} windows" if "mean_batch" in p else ""
            print(f"            CPU by thread: {p['threads_cpu_s']}{batch}", flush=True)
        if p["readings_processed"] > p["readings"]:
            print(
                f"            !! {p['readings_processed']:,} readings processed, more than published: "
                "the figures of this run are not valid",
                flush=True,
            )

    def broker_alone(self, assets, rows, qos):
        """Publisher -> mosquitto -> mosquitto_sub (prints nothing): what the
        broker delivers to a subscriber that does no work."""
        n = assets * rows
        before = self.subscribed_count("bench-null")
        sub = self.spawn(
            [
                "mosquitto_sub",
                "-p",
                str(self.mqtt_port),
                "-t",
                "sensors/+",
                "-q",
                str(qos),
                "-i",
                "bench-null",
                "-C",
                str(n),
                "-F",
                "",
            ],
            stdout=subprocess.DEVNULL,
        )
        self.wait_subscribed("bench-null", before, sub)
        c0 = proc_cpu(sub.pid)
        b0 = proc_cpu(self.mosquitto.pid)
        pub = self.publish(assets, rows, qos)
        last = c0
        while sub.poll() is None:
            c = proc_cpu(sub.pid)
            last = c if c is not None else last
            time.sleep(0.02)
        t_end = time.time()
        pub.wait()
        anchor = self.anchor_of(pub.stderr.read()) or t_end
        wall = t_end - anchor
        b1 = proc_cpu(self.mosquitto.pid)
        phase = {
            "stack": "broker",
            "qos": qos,
            "assets": assets,
            "rows": rows,
            "mode": "null-subscriber",
            "readings": n * CHANNELS,
            "wall_s": wall,
            "readings_per_s": n * CHANNELS / wall,
            "messages_per_s": n / wall,
            "subscriber_cpu_s": (last or 0) - (c0 or 0),
            "broker_cpu_s": (b1 or 0) - (b0 or 0),
        }
        self.results["phases"].append(phase)
        print(
            f"  broker    QoS {qos} null subscriber: {phase['readings_per_s']:>9,.0f} readings/s "
            f"({phase['messages_per_s']:,.0f} msg/s), broker CPU {phase['broker_cpu_s']:.2f} s",
            flush=True,
        )
        return phase


def summary(results, stacks, qos_levels):
    by = {}
    for p in results["phases"]:
        by[(p["stack"], p["qos"], p["mode"])] = p
    lines = []
    header = f"{'':34}{'anomalyd':>14}{'Python stack':>14}{'ratio':>10}"
    for q in qos_levels:
        a = by.get(("anomalyd", q, "throughput"))
        b = by.get(("python", q, "throughput"))
        la = by.get(("anomalyd", q, "latency"))
        lb = by.get(("python", q, "latency"))
        lines.append(f"QoS {q}")
        lines.append(header)

        def row(label, fa, fb, fmt, better_high=True):
            va = fa(a, la) if a else None
            vb = fb(b, lb) if b else None
            s = f"  {label:<32}"
            s += f"{fmt.format(va):>14}" if va is not None else f"{'-':>14}"
            s += f"{fmt.format(vb):>14}" if vb is not None else f"{'-':>14}"
            if va and vb:
                r = va / vb if better_high else vb / va
                s += f"{r:>9.1f}x"
            lines.append(s)

        row("readings/s", lambda p, _: p["readings_per_s"], lambda p, _: p["readings_per_s"], "{:,.0f}")
        row(
            "readings per CPU-second",
            lambda p, _: 1e6 / p["cpu_s_per_million"],
            lambda p, _: 1e6 / p["cpu_s_per_million"],
            "{:,.0f}",
        )
        row(
            "CPU-s per million readings",
            lambda p, _: p["cpu_s_per_million"],
            lambda p, _: p["cpu_s_per_million"],
            "{:.2f}",
            better_high=False,
        )
        row("peak RSS, MiB", lambda p, _: p["peak_rss_mib"], lambda p, _: p["peak_rss_mib"], "{:.1f}", False)

        def lat(key, which="from_row"):
            return lambda _, lp: lp["latency_ms"][which][key] if lp and which in lp.get("latency_ms", {}) else None

        row("latency p50, ms (half max load)", lat("p50"), lat("p50"), "{:.1f}", False)
        row("latency p99, ms (half max load)", lat("p99"), lat("p99"), "{:.1f}", False)
        row(
            "  load used, readings/s",
            lambda p, lp: lp["rate_rows_per_s"] * lp["assets"] * CHANNELS if lp else None,
            lambda p, lp: lp["rate_rows_per_s"] * lp["assets"] * CHANNELS if lp else None,
            "{:,.0f}",
        )
        row(
            "readings dropped",
            lambda p, _: p["readings_dropped"] or None,
            lambda p, _: p["readings_dropped"] or None,
            "{:,}",
        )
        for s, p in (("anomalyd", a), ("python", b)):
            if p and (p["points_accepted"] < p["points_expected"] or p["readings_dropped"]):
                lines.append(
                    f"  !! {s}: {p['points_accepted']:,} of {p['points_expected']:,} score points, "
                    f"{p['readings_dropped']:,} readings dropped"
                )
        lines.append("")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--assets", type=int, default=200)
    ap.add_argument("--rows", type=int, default=600, help="rows per asset in a throughput run")
    ap.add_argument("--qos", default="0,1", help="comma-separated QoS levels")
    ap.add_argument("--stacks", default="anomalyd,python")
    ap.add_argument("--latency-s", type=float, default=20.0, help="length of a latency run (0: none)")
    ap.add_argument("--footprint-assets", type=int, default=1000, help="assets of the RSS run (0: none)")
    ap.add_argument("--footprint-rows", type=int, default=120)
    ap.add_argument(
        "--footprint-rate", type=float, default=10.0, help="rows/s per asset of the steady footprint run"
    )
    ap.add_argument("--flush-ms", type=int, default=200, help="anomalyd influx.flush_interval_ms")
    ap.add_argument("--max-batch", type=int, default=256, help="anomalyd runtime.max_batch")
    ap.add_argument(
        "--footprint-max-batch", type=int, default=64, help="runtime.max_batch of the RSS run (shipped default)"
    )
    ap.add_argument("--stall-s", type=float, default=20.0)
    ap.add_argument(
        "--journal",
        action="store_true",
        help="give anomalyd a state directory: QoS 1/2 messages are journaled and synced before their PUBACK",
    )
    ap.add_argument("--model", default=os.path.join(os.path.dirname(__file__), "..", "models", "pump.onnx"))
    ap.add_argument("--python-stack", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "baselines", "python_stack.py"))
    ap.add_argument("--json", help="write every figure here")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = ap.parse_args()
    stacks = [s for s in args.stacks.split(",") if s]
    qos_levels = [int(q) for q in args.qos.split(",") if q]

    bench = Bench(args)
    try:
        bench.start_services()
        print(f"bench: model {bench.model}: {bench.model_desc}", flush=True)
        bench.results["model"] = {"path": bench.model, "desc": bench.model_desc, "window": bench.window}
        print(
            f"bench: mosquitto :{bench.mqtt_port}, VictoriaMetrics :{bench.vm_port} behind the write tap "
            f":{bench.tap_port}; scratch {bench.dir}",
            flush=True,
        )
        for q in qos_levels:
            bench.broker_alone(args.assets, args.rows, q)
            for stack in stacks:
                p = bench.run_phase(stack, q, args.assets, args.rows)
                if args.latency_s > 0 and p["readings_per_s"] > 0:
                    rate = p["readings_per_s"] / 2 / (args.assets * CHANNELS)
                    rows = max(bench.window + 20, int(rate * args.latency_s))
                    bench.run_phase(stack, q, args.assets, rows, rate=rate)
        for pace in (args.footprint_rate, None) if args.footprint_assets and "anomalyd" in stacks else ():
            # Steady state at a paced rate, then a burst as fast as the broker
            # delivers (the queues between the stages fill up).
            p = bench.run_phase(
                "anomalyd", 0, args.footprint_assets, args.footprint_rows, rate=pace, footprint=True
            )
            s = p["smaps_peak_kib"]
            if s.get("total"):
                print(
                    f"            RSS at its peak sample: {s['total'] / 1024:.1f} MiB = heap/anon "
                    f"{s['anon'] / 1024:.1f} + ONNX Runtime library file pages {s['ort_file'] / 1024:.1f} "
                    f"+ its written pages {s['ort_cow'] / 1024:.1f} + other files {s['other_file'] / 1024:.1f}; "
                    f"without the library's file pages {(s['total'] - s['ort_file']) / 1024:.1f} MiB",
                    flush=True,
                )
                print(
                    "            largest anonymous mappings (RSS/size KiB): "
                    + ", ".join(f"{name} {rss}/{size}" for rss, name, size in s["largest"]),
                    flush=True,
                )
        print()
        print(summary(bench.results, stacks, qos_levels))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(bench.results, f, indent=1)
    finally:
        bench.stop()


if __name__ == "__main__":
    sys.exit(main())
