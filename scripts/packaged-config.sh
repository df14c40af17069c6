#!/usr/bin/env bash
# Prints the configuration as installed in /etc/anomalyd/anomalyd.toml:
# config/anomalyd.toml with the installed paths of the model and of the
# ONNX Runtime library. Used by scripts/install.sh and scripts/build-deb.sh,
# so the repository keeps one commented config. Fails when the example
# config no longer has the lines it rewrites.
#
#   scripts/packaged-config.sh [--execution-provider cpu|cuda|auto]
set -euo pipefail
cd "$(dirname "$0")/.."

provider=""
while [ $# -gt 0 ]; do
  case "$1" in
    --execution-provider) provider="${2:?--execution-provider needs a value}"; shift 2 ;;
    *) echo "packaged-config: unknown argument $1" >&2; exit 2 ;;
  esac
done

src=config/anomalyd.toml
model_line='path = "../models/pump.onnx"'
lib_line='# library_path = "/usr/lib/anomalyd/libonnxruntime.so.1.31.1"'
ep_line='execution_provider = "cpu"'
for line in "$model_line" "$lib_line" "$ep_line"; do
  grep -qxF "$line" "$src" || {
    echo "packaged-config: $src has no line '$line'; update scripts/packaged-config.sh" >&2
    exit 1
  }
done

sed_args=(
  -e 's|^path = "\.\./models/pump\.onnx"$|path = "/usr/share/anomalyd/models/pump.onnx"|'
  -e 's|^# library_path = "/usr/lib/anomalyd/|library_path = "/usr/lib/anomalyd/|'
)
if [ -n "$provider" ]; then
  case "$provider" in cpu|cuda|auto) ;; *) echo "packaged-config: bad provider $provider" >&2; exit 2 ;; esac
  sed_args+=(-e "s|^execution_provider = \"cpu\"$|execution_provider = \"$provider\"|")
fi
sed "${sed_args[@]}" "$src"
