"""Fixed-rate points: what a stack costs at the rates plants run, not only
at its maximum. Per point (ASSETS assets at RATE rows/s each):

1. prefill: the first window - 1 rows of every asset go out as fast as the
   broker takes them, so that the measured part scores a window per row
   from its first row (at 1 Hz, waiting 39 s for the first window would
   dominate a short run); the bench waits until the consumer has taken
   them (anomalyd: its message counter; Python: its CPU time standing
   still for a second);
2. the measured part: SECONDS x RATE rows per asset, paced, with each asset
   at its own phase of the row interval (`simulate --spread`: devices on
   their own clocks, the even arrival that costs a consumer the most
   wake-ups), event time continuing after the prefill;
3. figures from the first paced publish to the last score point the
   database acknowledged: CPU seconds (utime + stime from /proc) per
   million readings and as % of one core (CPU seconds / wall seconds),
   context switches of all threads per message (each voluntary one is a
   thread going to sleep to be woken again), and for anomalyd its journal
   syncs per second (`anomalyd_journal_syncs_total`) and how long its
   windows waited for scoring (`anomalyd_window_wait_seconds`: the mean,
   and the histogram bucket bound that holds 99 % of them);
4. where the CPU went: ms of CPU per second and context switches per
   second of each thread name over the same span, from the scheduler's
   own clock (`schedstat`, exact where /proc's utime and stime count 10 ms
   ticks: a 1 Hz point is a few dozen of those).

With several asset counts at one rate, the summary fits the stack's CPU
per second as a fixed part plus a part per message (least squares over
the points): the fixed part is what the stack's wake-ups cost whatever
the load, the slope what one more message costs at that rate.
"""

import time

from bench_load import report
from bench_load.common import CHANNELS, PERIOD_NS, START_NS
from bench_load.consumers import is_anomalyd, metrics_of
from bench_load.procfs import context_switches, proc_cpu, thread_rates, thread_sched
from bench_load.publisher import anchor_of, publish


def iso(ns):
    secs = ns // 10**9
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(secs))


def wait_prefill(consumer, stack, messages, timeout_s=120):
    """Until the consumer has taken the prefill: anomalyd's own counter, or
    (the Python stack has none) its CPU time unchanged for one second."""
    deadline = time.time() + timeout_s
    last_cpu, still_since = None, time.time()
    while time.time() < deadline:
        if consumer.poll() is not None:
            raise SystemExit(f"bench: {stack} exited during the prefill")
        if is_anomalyd(stack):
            got = metrics_of(consumer.metrics_port).get("anomalyd_messages_received_total", 0)
            if got >= messages:
                return
        else:
            cpu = proc_cpu(consumer.pid)
            if cpu != last_cpu:
                last_cpu, still_since = cpu, time.time()
            elif time.time() - still_since >= 1.0:
                return
        time.sleep(0.05)
    raise SystemExit(f"bench: {stack} did not take the {messages:,} prefill messages in {timeout_s} s")


def window_wait(m0, m1):
    """anomalyd's wait from a window's cut to its ONNX Runtime call over the
    point (`anomalyd_window_wait_seconds`): the mean, and the smallest
    bucket bound that holds 99 % of the windows (p99 at most that)."""
    name = "anomalyd_window_wait_seconds"
    n = m1.get(f"{name}_count", 0) - m0.get(f"{name}_count", 0)
    if n <= 0:
        return {}
    total = m1.get(f"{name}_sum", 0) - m0.get(f"{name}_sum", 0)
    prefix = f'{name}_bucket{{le="'
    buckets = sorted((float(k[len(prefix) : -2]), k) for k in m1 if k.startswith(prefix) and "+Inf" not in k)
    p99 = next((le for le, k in buckets if m1[k] - m0.get(k, 0) >= 0.99 * n), None)
    return {"window_wait_mean_ms": 1000 * total / n, "window_wait_p99_at_most_ms": None if p99 is None else 1000 * p99}


def run_rate(bench, stack, qos, assets, rate, seconds):
    """One fixed-rate point; returns (and records) its figures."""
    s = bench.services
    tap = s.tap
    prefill = bench.window - 1
    rows = max(1, round(rate * seconds))
    expected = assets * ((rows + bench.stride - 1) // bench.stride)
    readings = assets * rows * CHANNELS
    tap.reset(keep_ts=False)
    consumer = bench.consumers.start(stack, qos, assets * (prefill + rows), bench.args.max_batch)
    pid = consumer.pid
    pre = publish(s, bench.pub_bin, assets, prefill, qos)
    pre.wait()
    wait_prefill(consumer, stack, assets * prefill)
    m0 = metrics_of(consumer.metrics_port)
    cpu0 = proc_cpu(pid)
    ctx0 = context_switches(pid)
    threads0 = thread_sched(pid)
    start_ts = iso(START_NS + prefill * PERIOD_NS)
    pub = publish(s, bench.pub_bin, assets, rows, qos, rate=rate, start_ts=start_ts, spread=True)
    last_cpu, last_ctx = cpu0, ctx0
    # Each thread's last reading: one that exits meanwhile (an idle
    # blocking-pool thread, which tokio ends after 10 s) still counts up
    # to its last poll, 50 ms before it went at most.
    seen = dict(threads0)
    progress_at, last_points = time.time(), -1
    while True:
        points, _ = tap.snapshot()
        now = time.time()
        c = proc_cpu(pid)
        if c is not None:
            last_cpu, last_ctx = c, context_switches(pid) or last_ctx
            seen.update(thread_sched(pid))
        if points >= expected:
            break
        if points != last_points:
            last_points, progress_at = points, now
        if now - progress_at > bench.args.stall_s and pub.poll() is not None:
            break
        time.sleep(0.05)
    points, last_ack = tap.snapshot()
    seen.update(thread_sched(pid))
    threads1 = seen
    m1 = metrics_of(consumer.metrics_port)
    pub.wait()
    anchor = anchor_of(pub.stderr.read()) or time.time()
    bench.stop_consumer(stack, consumer)
    wall = (last_ack or time.time()) - anchor
    cpu = last_cpu - cpu0
    threads = thread_rates(threads0, threads1, wall)
    messages = assets * rows
    phase = {
        "stack": stack,
        "qos": qos,
        "assets": assets,
        "rows": rows,
        "mode": "rate",
        "rate_rows_per_s": rate,
        "readings": readings,
        "points_expected": expected,
        "points_accepted": points,
        "wall_s": wall,
        "cpu_s": cpu,
        "cpu_s_per_million": cpu / readings * 1e6,
        "core_percent": 100 * cpu / wall if wall > 0 else 0.0,
        "context_switches_per_message": (last_ctx - ctx0) / messages if ctx0 is not None else None,
        "messages_per_s": messages / wall if wall > 0 else 0.0,
        "threads": threads,
        "threads_cpu_ms_per_s": sum(t["cpu_ms_per_s"] for t in threads),
    }
    if threads and wall > 0:
        # The same from the scheduler's clock: at 1 Hz /proc's 10 ms ticks
        # count 15 to 19 of them in a point, 5 % apart.
        phase["sched_cpu_s_per_million"] = phase["threads_cpu_ms_per_s"] * wall / 1000 / readings * 1e6
    if is_anomalyd(stack):
        key = "anomalyd_journal_syncs_total"
        if key in m1:
            phase["journal_syncs_per_s"] = (m1[key] - m0.get(key, 0)) / wall if wall > 0 else 0.0
        phase.update(window_wait(m0, m1))
        batches = m1.get("anomalyd_inference_batches_total", 0) - m0.get("anomalyd_inference_batches_total", 0)
        if batches:
            scored = m1.get("anomalyd_windows_scored_total", 0) - m0.get("anomalyd_windows_scored_total", 0)
            phase["mean_batch"] = scored / batches
    bench.results["phases"].append(phase)
    report.rate_phase(phase)
    return phase
