#!/usr/bin/env bash
# Installs anomalyd on this machine (run as root), or stages the same tree
# under another root directory (--root DIR or DESTDIR=DIR; then systemd is
# left alone and root is not needed):
#
#   /usr/bin/anomalyd                          the daemon (target/release/anomalyd)
#   /usr/lib/anomalyd/libonnxruntime*.so*      ONNX Runtime 1.31.1 (CPU from ./.ort, or --cuda)
#   /etc/anomalyd/anomalyd.toml                the config (kept if it exists)
#   /etc/anomalyd/credentials/{influx-token,mqtt-password}   empty, 0600, if absent
#   /usr/share/anomalyd/models/pump.onnx       the default model
#   /usr/share/anomalyd/dashboards/*.json      Grafana and InfluxDB dashboards
#   /usr/share/anomalyd/systemd/cuda.conf      the CUDA drop-in (installed with --cuda)
#   /usr/share/doc/anomalyd/README.md
#   /usr/lib/systemd/system/anomalyd.service   the unit
#   /usr/lib/systemd/system/anomalyd@.service  the template unit, several daemons on one host (docs/scale-out.md §7; not enabled)
#
# Everything created (files and directories) is listed in
# /usr/share/anomalyd/install.manifest, which scripts/uninstall.sh reads to
# remove exactly that. Running it again upgrades in place and keeps the
# config and credentials. When systemd runs, the unit is enabled (not
# started: edit the config first) and a running daemon is restarted.
#
#   scripts/install.sh [--root DIR] [--bin PATH] [--ort-dir DIR] [--cuda] [--no-systemctl]
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

ORT_VERSION=1.31.1
ROOT="${DESTDIR:-/}"
BIN_SRC="$REPO/target/release/anomalyd"
ORT_DIR="$REPO/.ort"
CUDA=0
SYSTEMCTL=1

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT="${2:?--root needs a directory}"; shift 2 ;;
    --bin) BIN_SRC="${2:?--bin needs a path}"; shift 2 ;;
    --ort-dir) ORT_DIR="${2:?--ort-dir needs a directory}"; shift 2 ;;
    --cuda) CUDA=1; shift ;;
    --no-systemctl) SYSTEMCTL=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
ROOT="${ROOT%/}"
[ -n "$ROOT" ] || ROOT=""
if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
  echo "install: run as root (or stage into a directory with --root DIR)" >&2
  exit 1
fi

MANIFEST=/usr/share/anomalyd/install.manifest
fail() { echo "install: $*" >&2; exit 1; }

[ -x "$BIN_SRC" ] || fail "no binary at $BIN_SRC: build it with 'cargo build --release -p anomalyd' or pass --bin"
for f in models/pump.onnx systemd/anomalyd.service systemd/anomalyd@.service systemd/cuda.conf README.md; do
  [ -f "$REPO/$f" ] || fail "missing $REPO/$f"
done
if [ -z "$ROOT" ] && command -v dpkg >/dev/null && dpkg -S /usr/bin/anomalyd >/dev/null 2>&1; then
  fail "/usr/bin/anomalyd belongs to the Debian package anomalyd: upgrade that package instead"
fi

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# ONNX Runtime: the CPU library from ./.ort (scripts/setup.sh), or the
# CUDA build from the onnxruntime-gpu wheel (its core library serves CPU
# too; the CUDA provider library is loaded on demand).
if [ "$CUDA" -eq 1 ]; then
  echo "install: downloading onnxruntime-gpu==$ORT_VERSION (about 255 MB)"
  python3 -m pip download --quiet --no-deps --only-binary=:all: \
    "onnxruntime-gpu==$ORT_VERSION" -d "$TMP/wheel"
  mkdir -p "$TMP/ort"
  unzip -q -o -j "$TMP"/wheel/onnxruntime_gpu-*.whl 'onnxruntime/capi/libonnxruntime*' -d "$TMP/ort"
  ORT_DIR="$TMP/ort"
  [ -f "$ORT_DIR/libonnxruntime_providers_cuda.so" ] || fail "the onnxruntime-gpu wheel has no CUDA provider library"
fi
[ -f "$ORT_DIR/libonnxruntime.so.$ORT_VERSION" ] ||
  fail "no $ORT_DIR/libonnxruntime.so.$ORT_VERSION: run scripts/setup.sh (or pass --ort-dir)"

# The manifest: "KIND SHA256 PATH" lines, in creation order. KIND is
#   dir   a directory this script created (removed when empty),
#   file  a file it owns (removed),
#   conf  a file the operator may edit (removed only while unchanged, or with --purge).
declare -A KIND=() SUM=()
ORDER=()
record() { # KIND SUM PATH
  if [ -z "${KIND[$3]+x}" ]; then ORDER+=("$3"); fi
  KIND[$3]=$1
  SUM[$3]=$2
}
if [ -f "$ROOT$MANIFEST" ]; then
  while read -r kind sum path; do
    [ -n "$path" ] && record "$kind" "$sum" "$path"
  done < "$ROOT$MANIFEST"
  echo "install: upgrading the installation listed in $ROOT$MANIFEST"
fi

sha() { sha256sum "$1" | cut -d' ' -f1; }

# Creates DIR and its missing parents with MODE (0755 unless given),
# recording each one it created.
make_dir() { # DIR [MODE]
  local dir=$1 mode=${2:-0755} missing=() d
  d=$dir
  while [ "$d" != / ] && [ ! -d "$ROOT$d" ]; do
    missing=("$d" "${missing[@]}")
    d=$(dirname "$d")
  done
  for d in "${missing[@]}"; do
    if [ "$d" = "$dir" ]; then install -d -m "$mode" "$ROOT$d"; else install -d -m 0755 "$ROOT$d"; fi
    record dir - "$d"
  done
}

put() { # SRC DEST MODE
  make_dir "$(dirname "$2")"
  install -m "$3" "$1" "$ROOT$2"
  record file "$(sha "$ROOT$2")" "$2"
}

# A file the operator owns once it exists: never overwritten.
put_conf() { # SRC DEST MODE
  make_dir "$(dirname "$2")"
  if [ -e "$ROOT$2" ]; then
    echo "install: keeping existing $2"
    return
  fi
  install -m "$3" "$1" "$ROOT$2"
  record conf "$(sha "$ROOT$2")" "$2"
}

put "$BIN_SRC" /usr/bin/anomalyd 0755
for lib in "$ORT_DIR"/libonnxruntime*.so*; do
  put "$lib" "/usr/lib/anomalyd/$(basename "$lib")" 0644
done
put "$REPO/models/pump.onnx" /usr/share/anomalyd/models/pump.onnx 0644
for board in "$REPO"/dashboards/*.json; do
  [ -e "$board" ] || continue
  put "$board" "/usr/share/anomalyd/dashboards/$(basename "$board")" 0644
done
put "$REPO/systemd/cuda.conf" /usr/share/anomalyd/systemd/cuda.conf 0644
put "$REPO/README.md" /usr/share/doc/anomalyd/README.md 0644
put "$REPO/systemd/anomalyd.service" /usr/lib/systemd/system/anomalyd.service 0644
put "$REPO/systemd/anomalyd@.service" /usr/lib/systemd/system/anomalyd@.service 0644

provider=cpu
if [ "$CUDA" -eq 1 ]; then provider=auto; fi
bash "$REPO/scripts/packaged-config.sh" --execution-provider "$provider" > "$TMP/anomalyd.toml"
make_dir /etc/anomalyd
put_conf "$TMP/anomalyd.toml" /etc/anomalyd/anomalyd.toml 0644
make_dir /etc/anomalyd/credentials 0700
for cred in influx-token mqtt-password; do
  put_conf /dev/null "/etc/anomalyd/credentials/$cred" 0600
done
if [ "$CUDA" -eq 1 ]; then
  put_conf "$REPO/systemd/cuda.conf" /etc/systemd/system/anomalyd.service.d/cuda.conf 0644
fi

make_dir "$(dirname "$MANIFEST")"
{
  for path in "${ORDER[@]}"; do
    printf '%s %s %s\n' "${KIND[$path]}" "${SUM[$path]}" "$path"
  done
} > "$ROOT$MANIFEST.tmp"
chmod 0644 "$ROOT$MANIFEST.tmp"
mv "$ROOT$MANIFEST.tmp" "$ROOT$MANIFEST"
echo "install: installed into ${ROOT:-/} ($(wc -l < "$ROOT$MANIFEST") entries in $MANIFEST)"

if [ -z "$ROOT" ] && [ "$SYSTEMCTL" -eq 1 ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable anomalyd.service
  systemctl try-restart anomalyd.service
  echo "install: anomalyd.service enabled. Next: edit /etc/anomalyd/anomalyd.toml,"
  echo "         'anomalyd check-config', then 'systemctl start anomalyd'."
elif [ -z "$ROOT" ]; then
  echo "install: systemd is not running here; enable the unit later with 'systemctl enable anomalyd'."
fi
