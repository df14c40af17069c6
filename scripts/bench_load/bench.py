"""One phase of the bench, start to finish: start a consumer, publish,
follow the tap until every expected score point is acknowledged (or the
run stalls), and take the figures: throughput, CPU, RSS, latency, and the
null-subscriber run that shows what the broker alone delivers."""

import os
import signal
import subprocess
import time

from bench_load import report
from bench_load.common import CHANNELS, PERIOD_NS, START_NS
from bench_load.consumers import Consumers, is_anomalyd, metrics_of
from bench_load.procfs import proc_cpu, proc_status_kb, smaps, thread_cpu
from bench_load.publisher import anchor_of, publish


class Bench:
    def __init__(self, args, services):
        self.args = args
        self.services = services
        self.bin = os.path.abspath(args.anomalyd)
        # The publisher (`anomalyd simulate`); another build may be measured.
        self.pub_bin = os.path.abspath(args.publisher or args.anomalyd)
        self.model = os.path.abspath(args.model)
        self.window, self.stride, self.model_desc = self.inspect_model()
        self.consumers = Consumers(services, args, self.bin, self.model)
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

    def expected_points(self, rows):
        """Score points per asset: both stacks score a row's window as soon
        as the row (a whole frame on its tick) arrives."""
        if rows < self.window:
            return 0
        return (rows - self.window) // self.stride + 1

    def run_phase(self, stack, qos, assets, rows, rate=None, footprint=False):
        """One run. `rate` (rows/s per asset) paces the publisher; without
        `footprint` a paced run is a latency run."""
        s = self.services
        tap = s.tap
        latency = rate is not None and not footprint
        expected = assets * self.expected_points(rows)
        readings = assets * rows * CHANNELS
        tap.reset(keep_ts=latency)
        # The footprint run keeps the shipped config's batch size.
        max_batch = self.args.footprint_max_batch if footprint else self.args.max_batch
        consumer = self.consumers.start(stack, qos, assets * rows, max_batch)
        pid = consumer.pid
        cpu0 = proc_cpu(pid)
        threads0 = thread_cpu(pid) if is_anomalyd(stack) else {}
        broker0 = proc_cpu(s.mosquitto.pid)
        vm0 = proc_cpu(s.vm.pid)
        t_launch = time.time()
        pub = publish(s, self.pub_bin, assets, rows, qos, rate)
        peak = {"total": 0}
        last_cpu, last_hwm, last_threads = cpu0, proc_status_kb(pid, "VmHWM"), threads0
        progress_at, last_points = time.time(), -1
        t_pub_end = None
        next_smaps = 0.0
        while True:
            points, _ = tap.snapshot()
            now = time.time()
            c = proc_cpu(pid)
            if c is not None:
                last_cpu = c
                last_hwm = proc_status_kb(pid, "VmHWM") or last_hwm
                if is_anomalyd(stack):
                    last_threads = thread_cpu(pid)
            if footprint and now >= next_smaps:
                sm = smaps(pid)
                if sm:
                    total = sm["anon"] + sm["ort_file"] + sm["ort_cow"] + sm["other_file"]
                    if total > peak["total"]:
                        peak = dict(sm, total=total)
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
        points, last_ack = tap.snapshot()
        pub.wait()
        pub_err = pub.stderr.read()
        anchor = anchor_of(pub_err) or t_launch
        broker1 = proc_cpu(s.mosquitto.pid)
        vm1 = proc_cpu(s.vm.pid)
        metrics = metrics_of(consumer.metrics_port)
        out = self.stop_consumer(stack, consumer)
        if is_anomalyd(stack):
            processed = int(metrics.get("anomalyd_readings_used_total", 0))
            dropped = int(metrics.get("dropped", 0))
        else:
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
            "tap_failed_writes": tap.failed,
        }
        if is_anomalyd(stack) and metrics.get("anomalyd_inference_batches_total"):
            phase["mean_batch"] = metrics.get("anomalyd_windows_scored_total", 0) / metrics[
                "anomalyd_inference_batches_total"
            ]
        if is_anomalyd(stack):
            phase["threads_cpu_s"] = {
                k: round(v - threads0.get(k, 0.0), 3)
                for k, v in last_threads.items()
                if v - threads0.get(k, 0.0) > 0
            }
        if footprint:
            phase["smaps_peak_kib"] = peak
        if latency:
            phase["latency_ms"] = self.latency(anchor, rate)
        self.results["phases"].append(phase)
        report.phase(phase)
        return phase

    def stop_consumer(self, stack, consumer):
        """Stops anomalyd (SIGTERM) or waits for the Python stack to exit
        after its count; returns the Python stack's output."""
        if is_anomalyd(stack):
            consumer.send_signal(signal.SIGTERM)
            consumer.wait(timeout=30)
            return ""
        try:
            out, _ = consumer.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            consumer.kill()
            out, _ = consumer.communicate()
        return out

    def latency(self, anchor, rate):
        tap = self.services.tap
        with tap.lock:
            acks = list(tap.acks)
        lat, lat_close = [], []
        for acked, stamps in acks:
            for ts in stamps:
                row = round((ts - START_NS) / PERIOD_NS)
                lat.append(acked - (anchor + row / rate))
                lat_close.append(acked - (anchor + (row + 1) / rate))
        res = {"samples": len(lat)}
        with tap.lock:
            db = sorted(tap.db_s)
        if db:
            res["database_write_ms"] = report.percentiles_ms(db)
            res["database_write_ms"]["writes"] = len(db)
        for name, xs in (("from_row", lat), ("from_closing_row", lat_close)):
            xs.sort()
            if xs:
                res[name] = report.percentiles_ms(xs)
        return res

    def broker_alone(self, assets, rows, qos):
        """Publisher -> mosquitto -> mosquitto_sub (prints nothing): what the
        broker delivers to a subscriber that does no work."""
        s = self.services
        n = assets * rows
        before = s.subscribed_count("bench-null")
        sub = s.spawn(
            [
                "mosquitto_sub",
                "-p",
                str(s.mqtt_port),
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
        s.wait_subscribed("bench-null", before, sub)
        c0 = proc_cpu(sub.pid)
        b0 = proc_cpu(s.mosquitto.pid)
        pub = publish(s, self.pub_bin, assets, rows, qos)
        last = c0
        while sub.poll() is None:
            c = proc_cpu(sub.pid)
            last = c if c is not None else last
            time.sleep(0.02)
        t_end = time.time()
        pub.wait()
        anchor = anchor_of(pub.stderr.read()) or t_end
        wall = t_end - anchor
        b1 = proc_cpu(s.mosquitto.pid)
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
        report.broker(phase)
        return phase
