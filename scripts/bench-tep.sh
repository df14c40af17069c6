#!/usr/bin/env bash
# Detection-quality benchmark on the Tennessee Eastman process
# (docs/architecture.md §11, BENCHMARKS.md): train once on DATA_DIR/d00.csv
# (normal operation) with the trainer's defaults, replay every
# DATA_DIR/d*_te.csv through the daemon's pipeline, then print the
# detection rate per fault, the mean FDR without faults 3, 9 and 15, the
# false-alarm rate over every normal row, and the time.
#
#   scripts/bench-tep.sh [DATA_DIR] [OUT_DIR]
#
# DATA_DIR defaults to ../shared/data/tep (relative to the repository root),
# OUT_DIR to target/tep. OUT_DIR receives model.onnx, train.log and one
# dXX_te.csv per test file (the replay: one row per input row, with the
# `anomaly` column); OUT_DIR/tep-plot.png shows d05_te (PLOT_FILE=dXX_te
# picks another). Extra trainer flags can be passed in TRAIN_ARGS (e.g.
# "--seed 7").
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
data=${1:-$root/../shared/data/tep}
out=${2:-$root/target/tep}
plot_file=${PLOT_FILE:-d05_te}
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$root/.ort/libonnxruntime.so.1.31.1}"

if [ ! -f "$data/d00.csv" ]; then
    echo "bench-tep: no Tennessee Eastman training file at $data/d00.csv (give DATA_DIR)" >&2
    exit 66
fi
start=$(date +%s.%N)
cargo build --release --locked -p anomalyd -p anomalyd-train
bin=$root/target/release
mkdir -p "$out"

logs=()
while IFS= read -r f; do logs+=("$data/$f"); done < <(
    find "$data" -maxdepth 1 -name 'd*_te.csv' -printf '%f\n' | sort
)
if [ ${#logs[@]} -eq 0 ]; then
    echo "bench-tep: no test files (d*_te.csv) under $data" >&2
    exit 66
fi

bench_start=$(date +%s.%N)
# shellcheck disable=SC2086 # TRAIN_ARGS is a list of flags
if ! "$bin/anomalyd-train" --input "$data/d00.csv" --out "$out/model.onnx" \
    ${TRAIN_ARGS:-} >"$out/train.log" 2>&1; then
    echo "bench-tep: training on $data/d00.csv failed:" >&2
    tail -n 5 "$out/train.log" >&2
    exit 1
fi
train_end=$(date +%s.%N)
for f in "${logs[@]}"; do
    name=$(basename "$f")
    "$bin/anomalyd" replay --model "$out/model.onnx" --input "$f" --output "$out/$name" \
        >/dev/null 2>"$out/${name%.csv}.replay.log" || {
        echo "bench-tep: replay of $f failed:" >&2
        tail -n 5 "$out/${name%.csv}.replay.log" >&2
        exit 1
    }
    printf '.' >&2
done
echo >&2
"$bin/anomalyd-tep-score" --replays "$out" --plot "$out/tep-plot.png" \
    --plot-file "$plot_file" "${logs[@]}"
end=$(date +%s.%N)
awk -v s="$start" -v b="$bench_start" -v t="$train_end" -v e="$end" -v n="${#logs[@]}" 'BEGIN {
    printf "wall time: %.1f s (%.1f s training, %.1f s replay + scoring of %d files, %.1f s build)\n",
        e - s, t - b, e - t, n, b - s }'
