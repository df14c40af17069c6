"""The services both stacks share: one mosquitto and one VictoriaMetrics on
free loopback ports, the write tap in front of the database, and the
scratch directory; every process the bench starts is stopped by `stop`."""

import os
import signal
import subprocess
import tempfile
import time
import urllib.request

from bench_load.common import free_port
from bench_load.tap import TapState, make_tap


def stop_all(procs, timeout_s):
    """SIGTERM to every process still running, last started first; SIGKILL
    to those not gone within `timeout_s` each."""
    for p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in reversed(procs):
        try:
            p.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()


class Services:
    def __init__(self, keep, inflight=1000):
        self.inflight = inflight
        self.keep = keep
        self.dir = tempfile.mkdtemp(prefix="anomalyd-bench.")
        self.procs = []
        self.tap = TapState()

    def spawn(self, argv, **kw):
        p = subprocess.Popen(argv, **kw)
        self.procs.append(p)
        return p

    def start(self):
        self.mqtt_port = free_port()
        self.vm_port = free_port()
        self.mlog = os.path.join(self.dir, "mosquitto.log")
        conf = os.path.join(self.dir, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write(
                f"listener {self.mqtt_port} 127.0.0.1\nallow_anonymous true\n"
                f"max_queued_messages 2000000\nmax_inflight_messages {self.inflight}\n"
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
        stop_all(self.procs, 10)
        if not self.keep:
            subprocess.run(["rm", "-rf", self.dir], check=False)

    def subscribed_count(self, client_id):
        """Subscriptions to `sensors/+` the broker has logged for a client."""
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
