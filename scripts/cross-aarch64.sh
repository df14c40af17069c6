#!/usr/bin/env bash
# The package for 64-bit ARM gateways: cross-compiles `anomalyd` for
# aarch64-unknown-linux-gnu (glibc 2.28 or newer) and builds and checks
# target/debian/anomalyd_VERSION-1_arm64.deb with
# scripts/build-deb.sh, the same package checks as the amd64 one (file
# list, control data, the unpacked config, model and library through
# `check-config` and a `replay` under qemu-aarch64, the unit, dpkg install
# with `man anomalyd`, remove and purge in a scratch root).
# Installs what it needs once: the Rust target, Debian's
# gcc-aarch64-linux-gnu and libc6-dev-arm64-cross (linker:
# .cargo/config.toml), qemu-user, and the ONNX Runtime library from the PyPI
# wheel onnxruntime==1.31.1 for manylinux_2_28_aarch64 (into .ort/aarch64/).
#   scripts/cross-aarch64.sh [--profile release|demo]
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=aarch64-unknown-linux-gnu
ORT_VERSION=1.31.1
ORT_DIR=.ort/aarch64
PROFILE=release
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) PROFILE="${2:?--profile needs a name}"; shift 2 ;;
    *) echo "cross: unknown argument $1" >&2; exit 2 ;;
  esac
done

# shellcheck source=scripts/apt-need.sh
. scripts/apt-need.sh
apt_need cross gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user unzip file
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
file "$ORT_DIR/libonnxruntime.so.$ORT_VERSION" | grep -q 'ARM aarch64' ||
  { echo "cross: $ORT_DIR/libonnxruntime.so.$ORT_VERSION is not an aarch64 library" >&2; exit 1; }

cargo deb --version >/dev/null 2>&1 || cargo install cargo-deb --locked --version 3.8.0
bash scripts/build-deb.sh --target "$TARGET" --profile "$PROFILE"
BIN="${CARGO_TARGET_DIR:-target}/$TARGET/$PROFILE/anomalyd"
file "$BIN" | grep -q 'ARM aarch64' || { echo "cross: $BIN is not an aarch64 binary" >&2; exit 1; }
echo "cross: binary $(stat -c %s "$BIN") bytes"
