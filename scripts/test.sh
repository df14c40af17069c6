#!/usr/bin/env bash
# Runs the whole test suite the way CI does: setup (scripts/setup.sh --for
# tests), format and lint gates, then every test of the workspace (unit,
# trainer CLI, and integration tests that start their own mosquitto and
# VictoriaMetrics on loopback ports), then the Debian package's checks.
# Downloads, once: cargo-deb 3.8.0 from crates.io (`cargo install`), and
# whatever setup.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --for tests
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$(pwd)/.ort/libonnxruntime.so.1.31.1}"
export SKAB_DIR="${SKAB_DIR:-$(pwd)/../shared/data/skab}"
export TEP_DIR="${TEP_DIR:-$(pwd)/../shared/data/tep}"
start=$(date +%s)
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
# The Debian package: built, unpacked, installed and purged in a scratch root.
cargo deb --version >/dev/null 2>&1 || cargo install cargo-deb --locked --version 3.8.0
bash scripts/build-deb.sh
echo "tests: passed in $(( $(date +%s) - start )) s"
