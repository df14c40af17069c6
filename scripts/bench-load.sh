#!/usr/bin/env bash
# End-to-end load test, anomalyd against the reference Python stack
# (../shared/baselines/python_stack.py: paho-mqtt + numpy + onnxruntime +
# influxdb-client), same broker, model file (models/pump.onnx), database and
# workload, in one run. Starts mosquitto and VictoriaMetrics on free loopback
# ports; `anomalyd simulate` publishes ASSETS synthetic pumps x ROWS JSON
# frames of 8 channels. Prints readings/s, CPU seconds per million readings,
# peak RSS, p50/p99 publish-to-database latency at half of each stack's
# maximum load, drops, the ratios, CPU per reading and % of one core at
# fixed rates (with context switches per message, journal syncs per
# second and each thread's CPU; with several asset counts at one rate, its
# fixed part and its part per message; each rate point's CPU per reading
# against the same stack's maximum), and anomalyd's RSS split with 1,000
# assets; --repeat N runs each point N times (medians and ranges);
# --against BIN runs BIN beside the build at each fixed-rate point, on one
# broker and publisher, and prints B/A of their CPU. How each figure is
# taken: the docstrings of scripts/bench_load/ and scripts/bench_load/rates.py
# (the Python package that runs the bench; `--help` prints the first).
#
# Usage: scripts/bench-load.sh [--assets 200] [--rows 600] [--qos 0,1]
#          [--stacks anomalyd,anomalyd+journal,python,python-ort1]
#          [--rates 1,10] [--rate-assets 200,1000] [--rate-s 20] [--repeat 1]
#          [--latency-s 20] [--footprint-assets 1000]
#          [--config FILE] [--publisher BIN] [--against BIN] [--json FILE] [--help]
# The Python stack's packages, pinned in scripts/bench_load/requirements.txt,
# go into target/bench-venv (from PyPI, once, and again when the pins change).
# ANOMALYD_BIN=PATH runs that binary instead of building the release one
# (a quick check of the bench itself; its figures are not the product's);
# PROFILE=demo builds and measures the demo profile's binary instead
# (docs/distribution.md §1).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

for arg in "$@"; do
  case "$arg" in
    -h | --help) exec python3 scripts/bench_load --help ;;
  esac
done

bash scripts/setup.sh >/dev/null
export ORT_DYLIB_PATH="$ROOT/.ort/libonnxruntime.so.1.31.1"
BIN=${ANOMALYD_BIN:-}
if [ -z "$BIN" ]; then
  PROFILE=${PROFILE:-release}
  cargo build --profile "$PROFILE" --locked -p anomalyd --bin anomalyd 2>&1 | tail -1
  BIN="$ROOT/target/$PROFILE/anomalyd"
fi

VENV="$ROOT/target/bench-venv"
REQUIREMENTS="$ROOT/scripts/bench_load/requirements.txt"
if ! cmp -s "$REQUIREMENTS" "$VENV/requirements.txt"; then
  echo "bench: installing the Python stack into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet -r "$REQUIREMENTS"
  cp "$REQUIREMENTS" "$VENV/requirements.txt"
fi
"$VENV/bin/python" -c 'import onnxruntime, numpy, paho.mqtt, influxdb_client; print("bench: Python stack: onnxruntime", onnxruntime.__version__, "numpy", numpy.__version__, "paho-mqtt", paho.mqtt.__version__, "influxdb-client", influxdb_client.__version__)'

exec python3 scripts/bench_load --anomalyd "$BIN" "$@"
