#!/usr/bin/env bash
# Cross-builds `anomalyd` for 64-bit ARM Linux (aarch64-unknown-linux-gnu,
# glibc 2.28 or newer) and packs it with the ONNX Runtime library for that
# architecture into target/anomalyd-VERSION-aarch64-linux-gnu.tar.gz:
#   anomalyd, libonnxruntime.so.1.31.1 (+ libonnxruntime_providers_shared.so),
#   models/pump.onnx, anomalyd.toml (the example config), README.md.
# The daemon finds the library next to its binary. Installs what it needs
# once: the Rust target, Debian's gcc-aarch64-linux-gnu and
# libc6-dev-arm64-cross (linker: .cargo/config.toml), and the library from
# the PyPI wheel onnxruntime==1.31.1 for manylinux_2_28_aarch64 (into
# .ort/aarch64/). It also installs qemu-user and runs the packed binary
# (`--version`, `inspect-model`, a short `replay`) under qemu-aarch64,
# unless --no-qemu.
#   scripts/cross-aarch64.sh [--no-qemu]
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=aarch64-unknown-linux-gnu
ORT_VERSION=1.31.1
ORT_DIR=.ort/aarch64
QEMU=1
[ "${1:-}" = "--no-qemu" ] && QEMU=0

pkgs=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross unzip file)
[ "$QEMU" = 1 ] && pkgs+=(qemu-user)
# shellcheck source=scripts/apt-need.sh
. scripts/apt-need.sh
apt_need cross "${pkgs[@]}"
if ! rustup target list --installed | grep -qx "$TARGET"; then
  rustup target add "$TARGET" || {
    echo "cross: the Rust standard library for $TARGET is not installed and rustup cannot fetch it (no access to static.rust-lang.org?); skipping the cross-build" >&2
    exit 0
  }
fi

if [ ! -f "$ORT_DIR/libonnxruntime.so.$ORT_VERSION" ]; then
  echo "cross: fetching ONNX Runtime $ORT_VERSION for aarch64 from PyPI"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --platform manylinux_2_28_aarch64 "onnxruntime==$ORT_VERSION" -d "$tmp"
  mkdir -p "$ORT_DIR"
  unzip -q -o -j "$tmp"/onnxruntime-*.whl 'onnxruntime/capi/libonnxruntime*' -d "$ORT_DIR"
fi

cargo build --release --locked -p anomalyd --target "$TARGET" 2>&1 | tail -1
BIN="target/$TARGET/release/anomalyd"
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
PKG="anomalyd-$VERSION-aarch64-linux-gnu"
STAGE="target/$PKG"
rm -rf "$STAGE"
mkdir -p "$STAGE/models"
cp "$BIN" "$STAGE/"
cp "$ORT_DIR/libonnxruntime.so.$ORT_VERSION" "$ORT_DIR"/libonnxruntime_providers_shared.so "$STAGE/"
cp models/pump.onnx "$STAGE/models/"
cp config/anomalyd.toml README.md "$STAGE/"
tar -C target -czf "target/$PKG.tar.gz" "$PKG"

file "$STAGE/anomalyd" "$STAGE/libonnxruntime.so.$ORT_VERSION"
file "$STAGE/anomalyd" | grep -q 'ARM aarch64' || { echo "cross: $BIN is not an aarch64 binary" >&2; exit 1; }
echo "cross: binary $(stat -c %s "$STAGE/anomalyd") bytes; package target/$PKG.tar.gz $(stat -c %s "target/$PKG.tar.gz") bytes"

if [ "$QEMU" = 1 ] && command -v qemu-aarch64 >/dev/null; then
  run_arm() { qemu-aarch64 -L /usr/aarch64-linux-gnu "$STAGE/anomalyd" "$@"; }
  run_arm --version
  # ONNX Runtime's cpuinfo reads the host's (x86) /sys/devices/system/cpu
  # under qemu-user and crashes; in a private mount namespace that folder
  # is hidden and it falls back (warnings only). Real ARM machines are fine.
  hide_cpus=()
  if [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null; then
    # shellcheck disable=SC2016 # $0 and $@ belong to the inner sh.
    hide_cpus=(unshare -m sh -c 'mount -t tmpfs none /sys/devices/system/cpu && exec "$0" "$@"')
  fi
  # The library is found next to the binary, as on a gateway.
  (unset ORT_DYLIB_PATH
   "${hide_cpus[@]}" qemu-aarch64 -L /usr/aarch64-linux-gnu "$STAGE/anomalyd" \
     inspect-model "$STAGE/models/pump.onnx" 2>/dev/null | sed -n '3,4p;/^graph:/,$p')
  # Inference on ARM: 120 rows of the pump channels through `replay`.
  python3 - "$STAGE/replay-in.csv" <<'PY'
import math, sys
names = ["vibration_1", "vibration_2", "current", "pressure", "motor_temp", "fluid_temp", "voltage", "flow_rate"]
base = [1.6, 1.29, 5.4, 2.6, 51.0, 26.2, 230.0, 31.4]
with open(sys.argv[1], "w") as f:
    f.write("timestamp," + ",".join(names) + "\n")
    for i in range(120):
        row = [b * (1 + 0.01 * math.sin(i / 5 + k)) for k, b in enumerate(base)]
        f.write(f"{1767225600 + i}," + ",".join(f"{v:.4f}" for v in row) + "\n")
PY
  (unset ORT_DYLIB_PATH
   "${hide_cpus[@]}" qemu-aarch64 -L /usr/aarch64-linux-gnu "$STAGE/anomalyd" \
     replay --model "$STAGE/models/pump.onnx" --input "$STAGE/replay-in.csv" \
     --output "$STAGE/replay-out.csv" 2>/dev/null)
  scored=$(( $(wc -l < "$STAGE/replay-out.csv") - 1 ))
  rm -f "$STAGE/replay-in.csv" "$STAGE/replay-out.csv"
  [ "$scored" -gt 0 ] || { echo "cross: replay under qemu scored nothing" >&2; exit 1; }
  echo "cross: under qemu-aarch64: --version, inspect-model and replay ($scored rows scored) ran"
elif [ "$QEMU" = 1 ]; then
  echo "cross: qemu-user is not installed; not running the binary"
fi
