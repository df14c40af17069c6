"""Constants of the workload and the repository's paths, shared by every
module of the bench."""

import datetime as dt
import os
import socket

CHANNELS = 8
START_TS = "2026-01-01T00:00:00Z"
START_NS = int(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc).timestamp()) * 10**9
PERIOD_NS = 10**9
SCORE_MEASUREMENT = b"anomaly_score"

# scripts/bench_load/ -> the repository root.
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
