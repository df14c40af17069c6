#!/usr/bin/env bash
# Detection-quality benchmark on SKAB (docs/architecture.md §11, BENCHMARKS.md):
# for every experiment file (DATA_DIR/*/N.csv except anomaly-free/), train
# on its first 400 rows with the trainer's defaults, replay the whole file
# through the daemon's pipeline, then score rows 400.. of every file
# against its labels: per-file table, per-folder and overall totals.
#
#   scripts/bench-skab.sh [DATA_DIR] [OUT_DIR]
#
# DATA_DIR defaults to ../shared/data/skab (relative to the repository
# root), OUT_DIR to target/skab. OUT_DIR receives GROUP_N.onnx (the model),
# GROUP_N.train.log and GROUP_N.csv (the replay: one row per input row);
# OUT_DIR/skab-plot.png shows valve1/0 (PLOT_FILE=GROUP/N picks another).
# Extra trainer flags can be passed in TRAIN_ARGS (e.g. "--seed 7"), extra
# replay flags in REPLAY_ARGS (e.g. "--adapt-half-life-h 0.25"); with
# MODELS_DIR set, the models GROUP_N.onnx already there are replayed and no
# training is done (one training, several detector settings).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
data=${1:-$root/../shared/data/skab}
out=${2:-$root/target/skab}
plot_file=${PLOT_FILE:-valve1/0}
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$root/.ort/libonnxruntime.so.1.31.1}"

if [ ! -d "$data" ]; then
    echo "bench-skab: no SKAB data at $data (give DATA_DIR)" >&2
    exit 66
fi
start=$(date +%s.%N)
cargo build --release --locked -p anomalyd -p anomalyd-train
bin=$root/target/release
mkdir -p "$out"

logs=()
for dir in "$data"/*/; do
    group=$(basename "$dir")
    [ "$group" = anomaly-free ] && continue
    # Numeric order: 0, 1, 2, ..., 10, ...
    while IFS= read -r f; do logs+=("$f"); done < <(
        find "$dir" -maxdepth 1 -name '*.csv' -printf '%f\n' | sort -n | sed "s|^|$dir|"
    )
done
if [ ${#logs[@]} -eq 0 ]; then
    echo "bench-skab: no experiment files under $data" >&2
    exit 66
fi

bench_start=$(date +%s.%N)
for f in "${logs[@]}"; do
    group=$(basename "$(dirname "$f")")
    name=$(basename "$f" .csv)
    stem="$out/${group}_$name"
    model="$stem.onnx"
    if [ -n "${MODELS_DIR:-}" ]; then
        model="$MODELS_DIR/${group}_$name.onnx"
    # shellcheck disable=SC2086 # TRAIN_ARGS is a list of flags
    elif ! "$bin/anomalyd-train" --input "$f" --rows 0..400 --out "$model" \
        ${TRAIN_ARGS:-} >"$stem.train.log" 2>&1; then
        echo "bench-skab: training on $f failed:" >&2
        tail -n 5 "$stem.train.log" >&2
        exit 1
    fi
    # shellcheck disable=SC2086 # REPLAY_ARGS is a list of flags
    "$bin/anomalyd" replay --model "$model" --input "$f" --output "$stem.csv" \
        ${REPLAY_ARGS:-} >/dev/null 2>"$stem.replay.log" || {
        echo "bench-skab: replay of $f failed:" >&2
        tail -n 5 "$stem.replay.log" >&2
        exit 1
    }
    printf '.' >&2
done
echo >&2
"$bin/anomalyd-skab-score" --replays "$out" --first-row 400 \
    --plot "$out/skab-plot.png" --plot-file "$plot_file" "${logs[@]}"
end=$(date +%s.%N)
awk -v s="$start" -v b="$bench_start" -v e="$end" -v n="${#logs[@]}" 'BEGIN {
    printf "wall time: %.1f s for %d files (%.1f s training + replay + scoring, %.1f s build)\n",
        e - s, n, e - b, b - s }'
