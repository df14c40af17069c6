#!/usr/bin/env bash
# Scale-out throughput: aggregate readings/s and CPU per reading with 1, 2
# and 4 daemons (release build) sharing 4 partitions, on one NATS node and
# on mosquitto; ratios to 1 daemon and per-daemon efficiency. How it
# measures: the docstring of scripts/bench_scale.py. Figures and the
# machine: docs/scale-out.md §9.
#
# Usage: scripts/bench-scale.sh [--assets 200] [--rows 500] [--daemons 1,2,4]
#          [--brokers nats,mosquitto] [--json FILE]
# ANOMALYD_BIN=PATH runs that binary instead of building the release one
# (a check of the bench itself; its figures are not the product's).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

for tool in /usr/sbin/nats-server /usr/sbin/mosquitto /usr/bin/mosquitto_pub /usr/bin/victoria-metrics; do
  [ -x "$tool" ] || { echo "bench-scale: $tool is missing: bash scripts/setup.sh --for tests" >&2; exit 1; }
done
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$ROOT/.ort/libonnxruntime.so.1.31.1}
[ -f "$ORT_DYLIB_PATH" ] || { echo "bench-scale: no ONNX Runtime at $ORT_DYLIB_PATH: bash scripts/setup.sh" >&2; exit 1; }
BIN=${ANOMALYD_BIN:-}
if [ -z "$BIN" ]; then
  cargo build --release --locked -p anomalyd --bin anomalyd 2>&1 | tail -1
  BIN="$ROOT/target/release/anomalyd"
fi
exec python3 scripts/bench_scale.py --anomalyd "$BIN" "$@"
