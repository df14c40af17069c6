"""The bench's options and the order of its runs: per QoS level the broker
alone, then each stack's throughput run and its latency run at half that
throughput, then each stack at every fixed rate point; then anomalyd's
footprint runs (paced, then a burst); then the summaries and, with --json,
every figure."""

import argparse
import json
import os

import bench_load
from bench_load import report
from bench_load.bench import Bench
from bench_load.common import CHANNELS, ROOT
from bench_load.consumers import is_anomalyd
from bench_load.paired import run_paired
from bench_load.rates import run_rate
from bench_load.services import Services


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        prog="bench-load",
        description=bench_load.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--assets", type=int, default=200)
    ap.add_argument("--rows", type=int, default=600, help="rows per asset in a throughput run (0: none)")
    ap.add_argument("--qos", default="0,1", help="comma-separated QoS levels")
    ap.add_argument(
        "--stacks",
        default="anomalyd,anomalyd+journal,python,python-ort1",
        help="anomalyd, anomalyd+journal (QoS 1/2 only), python (as written), python-ort1 (--ort-threads 1)",
    )
    ap.add_argument("--rates", default="1,10", help="fixed rates, rows/s per asset (empty: none)")
    ap.add_argument("--rate-assets", default="200,1000", help="asset counts of the fixed-rate points")
    ap.add_argument("--rate-s", type=float, default=20.0, help="measured seconds of a fixed-rate point")
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of each throughput run and fixed-rate point, the stacks taking turns; "
        "the summary gives each load's median and range",
    )
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
        "--broker-inflight",
        type=int,
        default=1000,
        help="mosquitto's max_inflight_messages (its own default is 20)",
    )
    ap.add_argument(
        "--journal",
        action="store_true",
        help="give anomalyd a state directory: QoS 1/2 messages are journaled and synced before their PUBACK",
    )
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "pump.onnx"))
    ap.add_argument(
        "--anomalyd",
        default=os.path.join(ROOT, "target", "release", "anomalyd"),
        help="the anomalyd binary that runs, publishes and inspects the model (default: the release build)",
    )
    ap.add_argument(
        "--config",
        help="the config anomalyd runs, edited for the bench (default: config/anomalyd.toml; an older build wants its own)",
    )
    ap.add_argument(
        "--publisher",
        help="the binary whose `simulate` publishes (default: --anomalyd; fixed-rate points need --spread)",
    )
    ap.add_argument(
        "--python-stack", default=os.path.join(ROOT, "..", "shared", "baselines", "python_stack.py")
    )
    ap.add_argument(
        "--against",
        help="another anomalyd binary: each fixed-rate point runs it beside --anomalyd on one broker and "
        "publisher, --repeat spans of --rate-s seconds, and prints B/A of their CPU (bench_load/paired.py)",
    )
    ap.add_argument("--json", help="write every figure here")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    return ap.parse_args(argv)


def applies(stack, qos):
    """The journal only takes acknowledged (QoS 1/2) messages."""
    return not (stack == "anomalyd+journal" and qos == 0)


def main(argv=None):
    args = parse_args(argv)
    stacks = [s for s in args.stacks.split(",") if s]
    qos_levels = [int(q) for q in args.qos.split(",") if q]

    services = Services(args.keep, args.broker_inflight)
    try:
        bench = Bench(args, services)
        services.start()
        print(f"bench: model {bench.model}: {bench.model_desc}", flush=True)
        bench.results["model"] = {"path": bench.model, "desc": bench.model_desc, "window": bench.window}
        print(
            f"bench: mosquitto :{services.mqtt_port}, VictoriaMetrics :{services.vm_port} behind the write tap "
            f":{services.tap_port}; scratch {services.dir}",
            flush=True,
        )
        runs = range(max(1, args.repeat))
        for q in qos_levels:
            if args.rows > 0:
                bench.broker_alone(args.assets, args.rows, q)
            for run in runs if args.rows > 0 else ():
                for stack in stacks:
                    if not applies(stack, q):
                        continue
                    p = bench.run_phase(stack, q, args.assets, args.rows)
                    if run == 0 and args.latency_s > 0 and p["readings_per_s"] > 0:
                        rate = p["readings_per_s"] / 2 / (args.assets * CHANNELS)
                        rows = max(bench.window + 20, int(rate * args.latency_s))
                        bench.run_phase(stack, q, args.assets, rows, rate=rate)
        for q in qos_levels:
            for assets in [int(a) for a in args.rate_assets.split(",") if a]:
                for rate in [float(r) for r in args.rates.split(",") if r]:
                    if args.against:
                        for stack in stacks:
                            if is_anomalyd(stack) and applies(stack, q):
                                run_paired(
                                    bench, os.path.abspath(args.against), stack, q, assets, rate, args.rate_s, len(runs)
                                )
                        continue
                    for _ in runs:
                        for stack in stacks:
                            if applies(stack, q):
                                run_rate(bench, stack, q, assets, rate, args.rate_s)
        for pace in (args.footprint_rate, None) if args.footprint_assets and "anomalyd" in stacks else ():
            # Steady state at a paced rate, then a burst as fast as the broker
            # delivers (the queues between the stages fill up).
            p = bench.run_phase(
                "anomalyd", 0, args.footprint_assets, args.footprint_rows, rate=pace, footprint=True
            )
            report.footprint(p["smaps_peak_kib"])
        print()
        print(report.summary(bench.results, stacks, qos_levels))
        print(report.rate_summary(bench.results, stacks))
        ratios = report.against_maximum(bench.results, stacks)
        if ratios:
            print()
            print(ratios)
        fits = report.fixed_and_per_message(bench.results)
        if fits:
            print()
            print(fits)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(bench.results, f, indent=1)
    finally:
        services.stop()
