#!/usr/bin/env bash
# Slow-fault benchmark of the threshold adaptation (docs/far-calibration.md
# §4): trains a model on the synthetic pump's normal operation (the shipped
# model's recipe: 20,000 s, seed 1), writes another pump's log (seed 2) with
# NORMAL_H hours of normal operation and then a fault that grows to full
# strength over RAMP_H hours, and replays it once per detector setting:
# false alarms before the fault, time from the fault's start to the first
# alert, share of the fault's rows flagged, threshold at the end.
#
#   FAULT=blockage RAMP_H=4 scripts/bench-drift.sh [OUT_DIR] [SETTING...]
#
# A SETTING is "HALF_LIFE_H:MAX_FACTOR" (0:1 = off, always run first);
# default settings: 0.25:2 1:2 4:2. OUT_DIR defaults to target/drift.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out=${1:-$root/target/drift}
shift || true
settings=("0:1" "${@:-0.25:2 1:2 4:2}")
# shellcheck disable=SC2206 # the default is a list of settings
settings=(${settings[@]})
fault=${FAULT:-blockage}
normal_h=${NORMAL_H:-2}
ramp_h=${RAMP_H:-4}
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$root/.ort/libonnxruntime.so.1.31.1}"
cargo build --release --locked -p anomalyd -p anomalyd-train
bin=$root/target/release
mkdir -p "$out"

from=$((normal_h * 3600))
ramp=$(awk -v h="$ramp_h" 'BEGIN { printf "%d", h * 3600 }')
rows=$((from + ramp + 3600))
log="$out/pump-$fault.csv"
"$bin/anomalyd-pump-log" --rows "$rows" --seed 2 --fault "$fault" --fault-from "$from" \
    --ramp-rows "$ramp" --out "$log"
if [ ! -f "$out/pump.onnx" ]; then
    "$bin/anomalyd-train" --synthetic-pump 20000 --synthetic-seed 1 --out "$out/pump.onnx" \
        >"$out/pump.train.log" 2>&1 || { tail -n 5 "$out/pump.train.log" >&2; exit 1; }
fi
echo "fault $fault from row $from, full strength after $ramp_h h, $rows rows"
printf '%-14s %10s %18s %12s %14s\n' "half-life:cap" "FAR before" "first alert after" "fault rows" "end threshold"
for s in "${settings[@]}"; do
    hl=${s%%:*}
    k=${s##*:}
    csv="$out/replay-$fault-$hl-$k.csv"
    "$bin/anomalyd" replay --model "$out/pump.onnx" --input "$log" --output "$csv" \
        --adapt-half-life-h "$hl" --adapt-max-factor "$k" >/dev/null 2>"$csv.log"
    # One output row per input row, in order: row i is second i of the log.
    awk -F, -v from="$from" -v s="$s" '
        NR == 1 { for (i = 1; i <= NF; i++) { if ($i == "anomaly") a = i; if ($i == "threshold") t = i }; next }
        { r = NR - 2; if ($t != "") last = $t }
        r < from { n++; fp += ($a == 1) }
        r >= from { m++; tp += ($a == 1); if ($a == 1 && first == "") first = r - from }
        END {
            printf "%-14s %9.2f%% %18s %11.1f%% %14.3f\n", s, 100 * fp / n,
                first == "" ? "never" : sprintf("%.1f min", first / 60), 100 * tp / m, last
        }' "$csv"
done
