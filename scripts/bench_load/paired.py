"""Paired fixed-rate points (`--against OTHER`): two builds of anomalyd, the
bench's own (A) and OTHER (B), run side by side on one broker, one
database and one publisher, each with a client id of its own, so that both
take the same messages at the same instants. Their CPU is taken over the
same spans, from the scheduler's clock (`schedstat`, every thread summed).

Why: on a shared virtual machine two runs of one build at 1 Hz differ by
more than the changes worth measuring (35 to 45 ms of CPU per second for
five runs at 200 assets x 10 Hz, docs/low-rate.md §7), because the
neighbours' load changes from minute to minute. Run together, both builds
see the same neighbours: one build against itself at 200 assets x 1 Hz
with the journal gave a median B/A of 0.97, 0.99 and 1.02 in three
pairs (12 spans of 30 s, each within 0.95 to 1.03), where the absolute
figures moved by a fifth. At these rates the two daemons use well under
1 % of a core each, so they hardly disturb each other. A change counts
only where its B/A falls outside about 0.97 to 1.03.

Per point: prefill as `rates.py` does (the first window - 1 rows of every
asset as fast as the broker takes them), then the paced rows (`simulate
--spread`); after a settling span, `--repeat` spans of `--rate-s`
seconds each print A's and B's ms of CPU per second and B/A, then the
median B/A.
"""

import statistics
import time

from bench_load.common import PERIOD_NS, START_NS
from bench_load.procfs import thread_sched
from bench_load.publisher import publish
from bench_load.rates import iso, wait_prefill

SETTLE_S = 15.0


def cpu_ns(snapshot):
    return sum(ns for _, ns, _ in snapshot.values())


def run_paired(bench, other, stack, qos, assets, rate, span_s, spans):
    """One paired point; returns (and records) its figures."""
    s = bench.services
    prefill = bench.window - 1
    rows = int(rate * (SETTLE_S + span_s * spans + 30)) + 1
    consumers = bench.consumers
    a = consumers.start(stack, qos, 0, bench.args.max_batch)
    own = consumers.binary
    consumers.binary = other
    try:
        b = consumers.start(stack, qos, 0, bench.args.max_batch)
    finally:
        consumers.binary = own
    pre = publish(s, bench.pub_bin, assets, prefill, qos)
    pre.wait()
    for p in (a, b):
        wait_prefill(p, stack, assets * prefill)
    start_ts = iso(START_NS + prefill * PERIOD_NS)
    pub = publish(s, bench.pub_bin, assets, rows, qos, rate=rate, start_ts=start_ts, spread=True)
    time.sleep(SETTLE_S)
    figures = []
    for i in range(spans):
        a0, b0 = thread_sched(a.pid), thread_sched(b.pid)
        # Read every 50 ms, as rates.py does: a thread that exits during
        # the span keeps its last reading.
        a1, b1 = dict(a0), dict(b0)
        t0 = time.monotonic()
        while time.monotonic() - t0 < span_s:
            time.sleep(0.05)
            a1.update(thread_sched(a.pid))
            b1.update(thread_sched(b.pid))
        wall = time.monotonic() - t0
        if a.poll() is not None or b.poll() is not None:
            raise SystemExit("bench: a daemon of the pair exited")
        ms_a = (cpu_ns(a1) - cpu_ns(a0)) / 1e6 / wall
        ms_b = (cpu_ns(b1) - cpu_ns(b0)) / 1e6 / wall
        figures.append((ms_a, ms_b))
        print(
            f"  {stack:<16} QoS {qos} {assets} assets x {rate:g} Hz, span {i + 1}: "
            f"A {ms_a:.2f}, B {ms_b:.2f} ms of CPU/s, B/A {ms_b / ms_a:.3f}",
            flush=True,
        )
    pub.kill()
    pub.wait()
    for p in (a, b):
        bench.stop_consumer(stack, p)
    ratios = [mb / ma for ma, mb in figures if ma > 0]
    phase = {
        "stack": stack,
        "qos": qos,
        "assets": assets,
        "mode": "paired",
        "rate_rows_per_s": rate,
        "span_s": span_s,
        "against": other,
        "spans_ms_per_s": figures,
    }
    if ratios:
        phase["median_b_over_a"] = statistics.median(ratios)
        print(
            f"  {stack:<16} QoS {qos} {assets} assets x {rate:g} Hz: B/A median {phase['median_b_over_a']:.3f} "
            f"(range {min(ratios):.3f}-{max(ratios):.3f}, {len(ratios)} spans)",
            flush=True,
        )
    bench.results["phases"].append(phase)
    return phase
