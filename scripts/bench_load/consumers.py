"""The stacks under test: `anomalyd run` with the shipped config pointed at
the bench's broker, tap and model (`anomalyd`; `anomalyd+journal` with a
state directory, so QoS 1 messages are journaled and synced before their
PUBACK), and the reference Python stack (`python_stack.py` in the virtual
environment: `python` as written, `python-ort1` with `--ort-threads 1`);
each is started and waited for until the broker has its subscription. Also
reads anomalyd's /metrics."""

import os
import subprocess
import urllib.request

from bench_load.common import ROOT, free_port


class Consumers:
    def __init__(self, services, args, binary, model):
        self.services = services
        self.args = args
        self.binary = binary
        self.model = model
        self.python = os.path.join(ROOT, "target", "bench-venv", "bin", "python")
        self.python_stack = os.path.abspath(args.python_stack)
        self.runs = 0

    def daemon_config(self, qos, metrics_port, max_batch, client_id, journal):
        s = self.services
        with open(self.args.config or os.path.join(ROOT, "config", "anomalyd.toml")) as f:
            text = f.read()
        repl = [
            ("port = 1883", f"port = {s.mqtt_port}"),
            ("http://127.0.0.1:8428", f"http://127.0.0.1:{s.tap_port}"),
            ("127.0.0.1:9464", f"127.0.0.1:{metrics_port}"),
            ('path = "../models/pump.onnx"', f'path = "{self.model}"'),
            ("\nqos = 1\n", f"\nqos = {qos}\n"),
            ('# client_id = "anomalyd-gw1"', f'client_id = "{client_id}"'),
            ("clean_session = false", "clean_session = true"),
            ("max_batch = 64", f"max_batch = {max_batch}"),
            # The Python stack's writer: batches of 1,000 or every 200 ms.
            ("flush_interval_ms = 1000", f"flush_interval_ms = {self.args.flush_ms}"),
            ('level = "info"', 'level = "warn"'),
        ]
        if journal:
            # Durable intake: a state directory (journal + spool) and a
            # persistent session, as a production gateway runs.
            state = os.path.join(s.dir, f"state-{client_id}")
            repl.remove(("clean_session = false", "clean_session = true"))
            repl.append(('# directory = "/var/lib/anomalyd"\n', f'directory = "{state}"\n'))
        for old, new in repl:
            if old not in text:
                raise SystemExit(f"bench: config/anomalyd.toml no longer contains {old!r}")
            text = text.replace(old, new, 1)
        path = os.path.join(s.dir, f"anomalyd-q{qos}.toml")
        with open(path, "w") as f:
            f.write(text)
        return path

    def start(self, stack, qos, frames, max_batch):
        """Starts a consumer and waits until the broker has its subscription."""
        s = self.services
        # A client id of its own per run: nothing of an earlier session can
        # reach it.
        self.runs += 1
        if is_anomalyd(stack):
            client_id = f"anomalyd-bench-{self.runs}"
            metrics_port = free_port()
            journal = stack == "anomalyd+journal" or self.args.journal
            cfg = self.daemon_config(qos, metrics_port, max_batch, client_id, journal)
            before = s.subscribed_count(client_id)
            log = open(os.path.join(s.dir, "anomalyd.log"), "a")
            env = dict(os.environ)
            p = s.spawn([self.binary, "run", "--config", cfg], stdout=log, stderr=log, env=env)
            p.metrics_port = metrics_port
        else:
            client_id = "python-stack"
            before = s.subscribed_count(client_id)
            p = s.spawn(
                [
                    self.python,
                    self.python_stack,
                    "--model",
                    self.model,
                    "--mqtt-port",
                    str(s.mqtt_port),
                    "--influx-url",
                    f"http://127.0.0.1:{s.tap_port}",
                    "--count",
                    str(frames),
                    "--qos",
                    str(qos),
                ]
                + (["--ort-threads", "1"] if stack == "python-ort1" else []),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            p.metrics_port = None
        s.wait_subscribed(client_id, before, p)
        return p


def is_anomalyd(stack):
    return stack.startswith("anomalyd")


def metrics_of(port):
    """anomalyd's /metrics as {series: value}, plus `dropped`: every
    `readings_dropped_total` series summed. Empty without a port."""
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
