#!/usr/bin/env bash
# Installs what anomalyd needs on a fresh Debian/Ubuntu machine: the broker and
# database used by the tests and the demo, a font for the trainer's plots, and
# the ONNX Runtime shared library (from the PyPI wheel, into ./.ort/).
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_VERSION=1.31.1
# shellcheck source=scripts/apt-need.sh
. scripts/apt-need.sh
apt_need setup mosquitto mosquitto-clients victoria-metrics influxdb fonts-dejavu-core \
  unzip python3-pip curl chromium shellcheck

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
