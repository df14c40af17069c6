#!/usr/bin/env bash
# Installs what anomalyd's demo or tests need on a fresh Debian/Ubuntu
# machine and checks the Rust toolchain:
#   --for demo   the broker and database the demo starts (mosquitto,
#                victoria-metrics), curl, python3 and pip/unzip for the ONNX
#                Runtime wheel;
#   --for tests  (the default) the same plus what the tests use: openssl
#                (TLS certificates), a font for the trainer's report plots,
#                mosquitto-clients, man-db (the package's man page),
#                nats-server (the scale-out tests' cluster), and,
#                optional, chromium (status page
#                test) and shellcheck (script lint).
# Then the ONNX Runtime shared library (from the PyPI wheel, into ./.ort/).
# Idempotent: a second run only checks. Where each package exists:
# docs/distribution.md §2.
#
#   scripts/setup.sh [--for demo|tests]
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_VERSION=1.31.1
RUST_MIN=1.95
purpose=tests
while [ $# -gt 0 ]; do
  case "$1" in
    --for) purpose="${2:?--for needs demo or tests}"; shift 2 ;;
    *) echo "setup: unknown argument $1" >&2; exit 2 ;;
  esac
done

# Rust: Cargo.toml's rust-version. Distribution packages of rustc are older.
have=$(rustc --version 2>/dev/null | sed -n 's/^rustc \([0-9]*\.[0-9]*\).*/\1/p')
if [ -z "$have" ] || [ "$(printf '%s\n%s\n' "$RUST_MIN" "$have" | sort -V | head -1)" != "$RUST_MIN" ]; then
  echo "setup: Rust $RUST_MIN or newer is needed (found: ${have:-none}); install it with rustup (https://rustup.rs), then 'rustup update stable'" >&2
  exit 1
fi

# shellcheck source=scripts/apt-need.sh
. scripts/apt-need.sh
case "$purpose" in
  demo)
    apt_need setup mosquitto mosquitto-clients victoria-metrics curl python3 python3-pip unzip ;;
  tests)
    apt_need setup mosquitto mosquitto-clients victoria-metrics curl python3 python3-pip unzip \
      openssl fonts-dejavu-core man-db influxdb nats-server
    apt_want setup chromium shellcheck ;;
  *) echo "setup: --for takes demo or tests, not $purpose" >&2; exit 2 ;;
esac

if [ ! -f ".ort/libonnxruntime.so.${ORT_VERSION}" ]; then
  echo "setup: fetching ONNX Runtime ${ORT_VERSION} from PyPI"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --only-binary=:all: \
    "onnxruntime==${ORT_VERSION}" -d "$tmp"
  mkdir -p .ort
  unzip -q -o -j "$tmp"/onnxruntime-*.whl 'onnxruntime/capi/libonnxruntime*' -d .ort
fi
ls .ort/libonnxruntime.so.${ORT_VERSION} >/dev/null
echo "setup: ONNX Runtime at $(pwd)/.ort/libonnxruntime.so.${ORT_VERSION}"
