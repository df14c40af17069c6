"""The workload: `anomalyd simulate` publishing synthetic pumps, as fast as
the broker takes them or paced, and the instant it started publishing (the
anchor of every latency figure)."""

import datetime as dt
import subprocess

from bench_load.common import START_TS


def publish(services, binary, assets, rows, qos, rate=None, prefix="pump-", start_ts=START_TS, spread=False):
    """Starts the publisher; `rate` is rows/s per asset (None: as fast as
    possible); `spread` publishes each asset at its own phase of the row
    interval (devices on their own clocks) instead of a burst per row. Its
    stderr carries the anchor line."""
    argv = [
        binary,
        "simulate",
        "--broker",
        f"127.0.0.1:{services.mqtt_port}",
        "--synthetic",
        "pump",
        "--assets",
        str(assets),
        "--rows",
        str(rows),
        "--qos",
        str(qos),
        "--start-ts",
        start_ts,
        "--asset-prefix",
        prefix,
    ]
    argv += ["--rate", f"{rate:.6f}"] if rate else ["--fast"]
    if spread and rate:
        argv.append("--spread")
    return services.spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def anchor_of(stderr_text):
    """Unix time of the publisher's "publishing" log line, or None."""
    for line in stderr_text.splitlines():
        if "simulate: publishing" in line:
            stamp = line.split()[0]
            return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    return None
