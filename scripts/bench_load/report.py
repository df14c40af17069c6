"""What the bench prints: one line per phase as it ends, the RSS split of
the footprint runs, and the summary table of both stacks side by side with
their ratios."""

from statistics import median

from bench_load.common import CHANNELS


def percentiles_ms(sorted_s):
    """p50, p99 and max of sorted durations in seconds, in milliseconds."""
    xs = sorted_s
    return {
        "p50": 1000 * xs[len(xs) // 2],
        "p99": 1000 * xs[min(len(xs) - 1, int(len(xs) * 0.99))],
        "max": 1000 * xs[-1],
    }


def phase(p):
    """One line per phase, plus latency, database and per-thread lines."""
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


def broker(p):
    print(
        f"  broker    QoS {p['qos']} null subscriber: {p['readings_per_s']:>9,.0f} readings/s "
        f"({p['messages_per_s']:,.0f} msg/s), broker CPU {p['broker_cpu_s']:.2f} s",
        flush=True,
    )


def footprint(s):
    """The RSS split at the footprint run's peak sample (`smaps_peak_kib`)."""
    if not s.get("total"):
        return
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


def summary(results, stacks, qos_levels):
    # With --repeat, each figure comes from the run of median CPU per reading.
    runs = {}
    for p in results["phases"]:
        runs.setdefault((p["stack"], p["qos"], p["mode"]), []).append(p)
    by = {k: sorted(v, key=lambda p: p.get("cpu_s_per_million", 0))[(len(v) - 1) // 2] for k, v in runs.items()}
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


def rate_phase(p):
    """One line per fixed-rate point."""
    extra = ""
    if p.get("journal_syncs_per_s") is not None:
        extra += f", journal syncs {p['journal_syncs_per_s']:.1f}/s"
    if p.get("mean_batch"):
        extra += f", mean inference batch {p['mean_batch']:.1f}"
    if p.get("window_wait_mean_ms") is not None:
        p99 = p.get("window_wait_p99_at_most_ms")
        extra += f", windows waited {p['window_wait_mean_ms']:.0f} ms on average" + (
            f" (p99 <= {p99:g} ms)" if p99 is not None else " (p99 above 1 s)"
        )
    ctx = p.get("context_switches_per_message")
    print(
        f"  {p['stack']:<16} QoS {p['qos']} rate {p['assets']} assets x {p['rate_rows_per_s']:g} Hz: "
        f"{p['cpu_s_per_million']:.2f} CPU-s/M, {p['core_percent']:.2f} % of a core "
        f"({p['cpu_s']:.2f} CPU-s over {p['wall_s']:.1f} s), "
        + (f"{ctx:.2f} context switches/message, " if ctx is not None else "")
        + f"points {p['points_accepted']:,}/{p['points_expected']:,}{extra}",
        flush=True,
    )
    threads = p.get("threads") or []
    if threads:
        print(
            f"    all threads {p['threads_cpu_ms_per_s']:.2f} ms of CPU/s; by thread, ms of CPU/s (switches/s): "
            + ", ".join(f"{t['thread']} {t['cpu_ms_per_s']:.2f} ({t['switches_per_s']:.1f})" for t in threads[:6]),
            flush=True,
        )


def fixed_and_per_message(results):
    """Per stack, QoS and rate with two or more asset counts: the
    least-squares line of ms of CPU per second (CPU-s / wall-s) against
    messages per second. Its intercept is the fixed cost of the stack's
    wake-ups, its slope the cost of one more message at that rate."""
    groups = {}
    for p in results["phases"]:
        if p["mode"] == "rate" and p.get("messages_per_s"):
            key = (p["stack"], p["qos"], p["rate_rows_per_s"])
            # The threads' sum from the scheduler's clock where there is one:
            # /proc's 10 ms ticks are too coarse for a few ms of CPU per second.
            ms = p["threads_cpu_ms_per_s"] if "sched_cpu_s_per_million" in p else 10 * p["core_percent"]
            groups.setdefault(key, []).append((p["messages_per_s"], ms, p["assets"]))
    lines = []
    for (stack, qos, rate), pts in groups.items():
        if len({a for _, _, a in pts}) < 2:
            continue
        n = len(pts)
        mx = sum(x for x, _, _ in pts) / n
        my = sum(y for _, y, _ in pts) / n
        sxx = sum((x - mx) ** 2 for x, _, _ in pts)
        if sxx <= 0:
            continue
        slope = sum((x - mx) * (y - my) for x, y, _ in pts) / sxx
        fixed = my - slope * mx
        assets = ", ".join(str(a) for a in sorted({a for _, _, a in pts}))
        lines.append(
            f"  {stack:<16} QoS {qos} at {rate:g} Hz ({assets} assets): "
            f"{fixed:.2f} ms of CPU per second fixed + {1000 * slope:.1f} us per message"
        )
    if not lines:
        return ""
    return "\n".join(["CPU at one rate, fixed part and part per message (least squares over the asset counts):"] + lines)


def _by_load(results):
    """Every throughput run and fixed-rate point, grouped: {(qos, assets,
    rate or None for the maximum): {stack: [(CPU-s per million readings,
    % of one core, journal syncs per second or None, CPU-s per million
    readings from the scheduler's clock where there is one), ...]}}, in run
    order."""
    loads = {}
    for p in results["phases"]:
        if p["mode"] == "throughput":
            key = (p["qos"], p["assets"], None)
            pct = 100 * p["cpu_s"] / p["wall_s"] if p["wall_s"] > 0 else 0.0
        elif p["mode"] == "rate":
            key = (p["qos"], p["assets"], p["rate_rows_per_s"])
            pct = p["core_percent"]
        else:
            continue
        runs = loads.setdefault(key, {}).setdefault(p["stack"], [])
        # The fourth figure: from the scheduler's clock where there is one.
        per_m = p.get("sched_cpu_s_per_million") or p["cpu_s_per_million"]
        runs.append((p["cpu_s_per_million"], pct, p.get("journal_syncs_per_s"), per_m))
    return loads


def _load_label(qos, assets, rate):
    return f"QoS {qos} {assets} assets, maximum" if rate is None else f"QoS {qos} {assets} assets x {rate:g} Hz"


def rate_summary(results, stacks):
    """CPU-s per million readings and % of one core by load: the maximum
    (throughput runs) and every fixed rate, one column pair per stack; the
    median where a load ran more than once (--repeat)."""
    loads = _by_load(results)
    if not loads:
        return ""
    most = max(len(runs) for by in loads.values() for runs in by.values())
    lines = [
        "CPU by load: CPU-s per million readings / % of one core (journal syncs per second)"
        + (f", medians of up to {most} runs" if most > 1 else "")
    ]
    lines.append(f"{'':32}" + "".join(f"{s:>24}" for s in stacks))
    for key, by in loads.items():
        cells = []
        for s in stacks:
            if s not in by:
                cells.append(f"{'-':>24}")
                continue
            runs = by[s]
            cell = f"{median([r[0] for r in runs]):.2f} / {median([r[1] for r in runs]):.2f} %"
            syncs = [r[2] for r in runs if r[2] is not None]
            if syncs and s == "anomalyd+journal":
                cell += f" ({median(syncs):.1f})"
            cells.append(f"{cell:>24}")
        lines.append(f"  {_load_label(*key):<30}" + "".join(cells))
    return "\n".join(lines)


def against_maximum(results, stacks):
    """Each fixed-rate point's CPU per reading as a multiple of the same
    stack's at the maximum (same QoS, and same assets where that ran, else
    the throughput runs' asset count): the median run's, and the
    range of the point's runs, each against the maximum's median. A
    point's CPU is taken from the scheduler's clock where it has one."""
    loads = _by_load(results)
    lines = []
    for (qos, assets, rate), by in loads.items():
        if rate is None:
            continue
        # The maximum at the same asset count, else the one run (--assets).
        peak_key = (qos, assets, None)
        if peak_key not in loads:
            peak_key = next((k for k in loads if k[0] == qos and k[2] is None), None)
        top = loads.get(peak_key, {})
        cells = []
        for s in stacks:
            if s not in by or s not in top:
                continue
            peak = median([r[0] for r in top[s]])
            if peak <= 0:
                continue
            per_m = [r[3] for r in by[s]]
            cell = f"{s} {median(per_m) / peak:.2f}x"
            if len(per_m) > 1:
                cell += f" ({min(per_m) / peak:.2f}-{max(per_m) / peak:.2f}, {len(per_m)} runs)"
            cell += f" [/proc {median([r[0] for r in by[s]]) / peak:.2f}x]"
            cells.append(cell)
        if cells:
            label = _load_label(qos, assets, rate)
            if peak_key[1] != assets:
                label += f" (maximum at {peak_key[1]})"
            lines.append(f"  {label:<30}  " + "   ".join(cells))
    if not lines:
        return ""
    head = (
        "CPU per reading against the same stack's maximum load "
        "(fixed rates from the scheduler's clock; in brackets from /proc's ticks)"
    )
    return "\n".join([head] + lines)
