#!/usr/bin/env bash
# Cross-validation of the trainer's defaults across groups (BENCHMARKS.md,
# "One set of defaults"): runs scripts/bench-skab.sh and scripts/bench-tep.sh
# once per seed with the same TRAIN_ARGS, and prints each group's figures:
# SKAB valve1 and other (F1, FAR), Tennessee Eastman faults 1-5 and 6-10
# (mean FDR without 3 and 9, FAR over the normal rows of those files and
# d00_te). A setting is chosen on one group and judged on the other.
#
#   SEEDS="42 7 3" TRAIN_ARGS="..." scripts/bench-cv.sh [SKAB_DIR] [TEP_DIR] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
skab=${1:-$root/../shared/data/skab}
tep=${2:-$root/../shared/data/tep}
out=${3:-$root/target/cv}
seeds=${SEEDS:-42 7 3}
bin=$root/target/release

for seed in $seeds; do
    args="${TRAIN_ARGS:-} --seed $seed"
    TRAIN_ARGS="$args" bash scripts/bench-skab.sh "$skab" "$out/skab-$seed" \
        >"$out-skab-$seed.txt" 2>/dev/null || { echo "bench-cv: SKAB, seed $seed failed" >&2; exit 1; }
    TRAIN_ARGS="$args" bash scripts/bench-tep.sh "$tep" "$out/tep-$seed" \
        >"$out-tep-$seed.txt" 2>/dev/null || { echo "bench-cv: TEP, seed $seed failed" >&2; exit 1; }
    half() {
        "$bin/anomalyd-tep-score" --replays "$out/tep-$seed" "$tep/d00_te.csv" \
            "${@/#/$tep/}" | tail -n 1
    }
    echo "seed $seed:"
    grep -E '^(valve1|other|all files):' "$out-skab-$seed.txt" | sed 's/^/  SKAB /'
    echo "  TEP 1-5:  $(half d01_te.csv d02_te.csv d03_te.csv d04_te.csv d05_te.csv)"
    echo "  TEP 6-10: $(half d06_te.csv d07_te.csv d08_te.csv d09_te.csv d10_te.csv)"
    echo "  TEP all:  $(grep '^mean FDR' "$out-tep-$seed.txt")"
done
