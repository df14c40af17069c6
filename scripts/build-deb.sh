#!/usr/bin/env bash
# Builds the Debian package with cargo-deb and checks what is inside:
#   1. builds `anomalyd` (profile `release`: fat LTO, unless --profile) for
#      the host or --target, and writes packaging/build/: the installed
#      config, the target's ONNX Runtime library (.ort/ or .ort/aarch64/),
#      the man page anomalyd(8) and the bash/zsh/fish completions (from the
#      built binary's hidden `generate-docs`; under qemu-user for arm64);
#   2. `cargo deb --no-build` -> target/debian/*.deb (named for the architecture);
#   3. checks the file list (dpkg-deb -c), the control data (conffiles,
#      maintainer scripts with the systemd snippets, the architecture) and,
#      unpacked with dpkg -x into a scratch root, that the packaged config,
#      model and ONNX Runtime library work together (`anomalyd
#      check-config`, and for arm64 a short `replay`, under qemu-user), that
#      the unit and the template unit's instance pass `systemd-analyze
#      verify`, and that after `dpkg -i`
#      into a scratch root `man anomalyd` shows the page.
# Prints the package's path and size. Needs cargo-deb:
#   cargo install cargo-deb --locked
#
#   scripts/build-deb.sh [--no-build] [--profile release|demo] [--target aarch64-unknown-linux-gnu]
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=1
PROFILE=release
TARGET=""
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) BUILD=0; shift ;;
    --profile) PROFILE="${2:?--profile needs a name}"; shift 2 ;;
    --target) TARGET="${2:?--target needs a triple}"; shift 2 ;;
    *) echo "build-deb: unknown argument $1" >&2; exit 2 ;;
  esac
done
fail() { echo "build-deb: $*" >&2; exit 1; }

case "$TARGET" in
  "") ARCH=$(dpkg --print-architecture); ORT_DIR=.ort; RUN=() ;;
  aarch64-unknown-linux-gnu)
    ARCH=arm64; ORT_DIR=.ort/aarch64
    command -v qemu-aarch64 >/dev/null || fail "qemu-aarch64 is needed to check the arm64 package: apt-get install qemu-user"
    RUN=(qemu-aarch64 -L /usr/aarch64-linux-gnu) ;;
  *) fail "no package layout for target $TARGET" ;;
esac
TARGET_ARGS=()
[ -n "$TARGET" ] && TARGET_ARGS=(--target "$TARGET")
OUT_DIR=${CARGO_TARGET_DIR:-target}/${TARGET:+$TARGET/}$PROFILE
BIN=$OUT_DIR/anomalyd

cargo deb --version >/dev/null 2>&1 || fail "cargo-deb is not installed: cargo install cargo-deb --locked"
grep -q '^\[package.metadata.deb\]' Cargo.toml ||
  fail "Cargo.toml has no [package.metadata.deb]: paste packaging/cargo-deb-metadata.toml into it"
[ -f "$ORT_DIR/libonnxruntime.so.1.31.1" ] ||
  fail "no $ORT_DIR/libonnxruntime.so.1.31.1: run scripts/setup.sh (amd64) or scripts/cross-aarch64.sh (arm64)"

if [ "$BUILD" = 1 ]; then
  echo "build-deb: building anomalyd ($PROFILE${TARGET:+, $TARGET})"
  cargo build --profile "$PROFILE" --locked -p anomalyd --bin anomalyd "${TARGET_ARGS[@]}"
fi
[ -x "$BIN" ] || fail "no $BIN: build it first, or drop --no-build"

# ONNX Runtime under qemu-user reads the host's CPU list and crashes; in a
# private mount namespace the folder is hidden and it falls back (warnings
# only). Real ARM machines are fine.
HIDE_CPUS=()
if [ "$ARCH" = arm64 ] && [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null; then
  # shellcheck disable=SC2016 # $0 and $@ belong to the inner sh.
  HIDE_CPUS=(unshare -m sh -c 'mount -t tmpfs none /sys/devices/system/cpu && exec "$0" "$@"')
fi

rm -rf packaging/build
mkdir -p packaging/build/ort packaging/build/doc
bash scripts/packaged-config.sh > packaging/build/anomalyd.toml
cp "$ORT_DIR/libonnxruntime.so.1.31.1" "$ORT_DIR/libonnxruntime_providers_shared.so" packaging/build/ort/
"${RUN[@]}" "$BIN" generate-docs --out packaging/build/doc >/dev/null
gzip -9n packaging/build/doc/*.8

out=$(cargo deb -p anomalyd --locked --no-build --profile "$PROFILE" "${TARGET_ARGS[@]}")
deb=$(printf '%s\n' "$out" | grep '\.deb$' | tail -n 1)
[ -f "$deb" ] || fail "cargo deb printed no package path: $out"
case "$deb" in *_"$ARCH".deb) ;; *) fail "$deb is not named for $ARCH" ;; esac

SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT

# 1. The file list.
dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|' > "$SCRATCH/files"
for want in \
  /usr/bin/anomalyd \
  /usr/lib/anomalyd/libonnxruntime.so.1.31.1 \
  /etc/anomalyd/anomalyd.toml \
  /usr/share/anomalyd/models/pump.onnx \
  /usr/share/anomalyd/dashboards/grafana-influxdb-flux.json \
  /usr/share/anomalyd/dashboards/grafana-influxql.json \
  /usr/share/anomalyd/dashboards/influxdb2-template.json \
  /usr/share/anomalyd/systemd/cuda.conf \
  /usr/lib/systemd/system/anomalyd.service \
  '/usr/lib/systemd/system/anomalyd@.service' \
  /usr/share/doc/anomalyd/README.md \
  /usr/share/doc/anomalyd/CHANGELOG.md \
  /usr/share/man/man8/anomalyd.8.gz \
  /usr/share/man/man8/anomalyd-run.8.gz \
  /usr/share/man/man8/anomalyd-check-config.8.gz \
  /usr/share/bash-completion/completions/anomalyd \
  /usr/share/zsh/vendor-completions/_anomalyd \
  /usr/share/fish/vendor_completions.d/anomalyd.fish; do
  grep -qxF "$want" "$SCRATCH/files" || fail "$deb lacks $want; it has:
$(cat "$SCRATCH/files")"
done

# 2. Control data: conffile, maintainer scripts with the systemd snippets.
mkdir "$SCRATCH/control"
dpkg-deb -e "$deb" "$SCRATCH/control"
grep -qxF "Architecture: $ARCH" "$SCRATCH/control/control" || fail "control does not say Architecture: $ARCH"
grep -qxF /etc/anomalyd/anomalyd.toml "$SCRATCH/control/conffiles" || fail "anomalyd.toml is not a conffile"
grep -q 'install -m 0600 /dev/null' "$SCRATCH/control/postinst" || fail "postinst does not create the credential files"
grep -q 'deb-systemd-helper' "$SCRATCH/control/postinst" || fail "postinst lacks the systemd enable snippet"
grep -q 'deb-systemd-helper purge' "$SCRATCH/control/postrm" || fail "postrm lacks the systemd purge snippet"
# Upgrades restart a running daemon, and only a running one (README, "Upgrading").
grep -q 'deb-systemd-invoke try-restart anomalyd.service' "$SCRATCH/control/postinst" ||
  fail "postinst does not try-restart the unit on upgrade"
if grep -q 'deb-systemd-invoke start' "$SCRATCH/control/postinst"; then
  fail "postinst starts the unit on first install; it must only be enabled"
fi

# 3. Unpacked: the pieces work together.
ROOT="$SCRATCH/root"
dpkg -x "$deb" "$ROOT"
[ "$(stat -c %a "$ROOT/usr/bin/anomalyd")" = 755 ] || fail "/usr/bin/anomalyd is not 0755"
sed -e "s|\"/usr/|\"$ROOT/usr/|g" "$ROOT/etc/anomalyd/anomalyd.toml" > "$SCRATCH/check.toml"
# The library is found where the packaged config says (library_path).
(unset ORT_DYLIB_PATH
 "${HIDE_CPUS[@]}" "${RUN[@]}" "$ROOT/usr/bin/anomalyd" check-config --config "$SCRATCH/check.toml") > "$SCRATCH/check.log" 2>&1 ||
  fail "the packaged config does not check:
$(cat "$SCRATCH/check.log")"
grep -q "libonnxruntime.so.1.31.1\|pump" "$SCRATCH/check.log" || fail "check-config said nothing about the model: $(cat "$SCRATCH/check.log")"
if [ "$ARCH" = arm64 ]; then
  # Inference on ARM with the packaged model and library: 120 rows of the
  # pump's channels through `replay`.
  python3 - "$SCRATCH/replay-in.csv" <<'PY'
import math, sys
names = ["vibration_1", "vibration_2", "current", "pressure", "motor_temp", "fluid_temp", "voltage", "flow_rate"]
base = [1.6, 1.29, 5.4, 2.6, 51.0, 26.2, 230.0, 31.4]
with open(sys.argv[1], "w") as f:
    f.write("timestamp," + ",".join(names) + "\n")
    for i in range(120):
        row = [b * (1 + 0.01 * math.sin(i / 5 + k)) for k, b in enumerate(base)]
        f.write(f"{1767225600 + i}," + ",".join(f"{v:.4f}" for v in row) + "\n")
PY
  (export ORT_DYLIB_PATH="$ROOT/usr/lib/anomalyd/libonnxruntime.so.1.31.1"
   "${HIDE_CPUS[@]}" "${RUN[@]}" "$ROOT/usr/bin/anomalyd" replay --model "$ROOT/usr/share/anomalyd/models/pump.onnx" \
     --input "$SCRATCH/replay-in.csv" --output "$SCRATCH/replay-out.csv") > "$SCRATCH/replay.log" 2>&1 ||
    fail "replay under qemu: $(cat "$SCRATCH/replay.log")"
  scored=$(( $(wc -l < "$SCRATCH/replay-out.csv") - 1 ))
  [ "$scored" -gt 0 ] || fail "replay under qemu scored nothing"
  replayed=", replay under qemu-aarch64 ($scored rows scored)"
fi
replayed=${replayed:-}
# The unit, and the template unit as instance `a` (docs/scale-out.md §7).
for unit in anomalyd.service anomalyd@.service; do
  sed -e "s|^ExecStart=/usr/bin/anomalyd|ExecStart=$ROOT/usr/bin/anomalyd|" \
    "$ROOT/usr/lib/systemd/system/$unit" > "$SCRATCH/$unit"
done
for unit in anomalyd.service anomalyd@a.service; do
  verify=$(systemd-analyze verify "$SCRATCH/$unit" 2>&1) || fail "systemd-analyze verify $unit: $verify"
  [ -z "$verify" ] || fail "systemd-analyze verify $unit: $verify"
done

# 4. Installed, removed and purged by dpkg in a scratch root, maintainer
#    scripts included: they run outside a chroot and honour $DPKG_ROOT, as
#    does deb-systemd-helper since init-system-helpers 1.62 (needed, or the
#    enable snippet would touch this machine's /etc).
DPKG="$SCRATCH/dpkg"
if grep -q DPKG_ROOT /usr/bin/deb-systemd-helper 2>/dev/null; then
  mkdir -p "$DPKG/var/lib/dpkg/updates" "$DPKG/var/lib/dpkg/info"
  touch "$DPKG/var/lib/dpkg/status"
  # The scratch database has no libc6 and knows no foreign architecture:
  # only that is forced.
  dpkg_root() { dpkg --root="$DPKG" --force-script-chrootless --force-depends --force-architecture "$@" >"$SCRATCH/dpkg.log" 2>&1 ||
    fail "dpkg $*: $(cat "$SCRATCH/dpkg.log")"; }
  dpkg_root -i "$deb"
  [ -L "$DPKG/etc/systemd/system/multi-user.target.wants/anomalyd.service" ] || fail "dpkg -i did not enable the unit"
  # A template is only enabled per instance, by the operator.
  [ -f "$DPKG/usr/lib/systemd/system/anomalyd@.service" ] || fail "dpkg -i did not install anomalyd@.service"
  # The manual page, as `man anomalyd` finds it once installed.
  command -v man >/dev/null || fail "man is not installed: apt-get install man-db"
  page=$(MANPATH="$DPKG/usr/share/man" man -w anomalyd 2>&1) || fail "man -w anomalyd after dpkg -i: $page"
  MANPATH="$DPKG/usr/share/man" MANPAGER=cat MANWIDTH=80 man anomalyd 2>/dev/null > "$SCRATCH/man.txt" ||
    fail "man anomalyd after dpkg -i failed"
  { grep -q "check-config" "$SCRATCH/man.txt" && grep -q "EX_CONFIG" "$SCRATCH/man.txt"; } ||
    fail "man anomalyd lacks the subcommands or the exit status: $(head -20 "$SCRATCH/man.txt")"
  for cred in influx-token mqtt-password; do
    [ "$(stat -c %a "$DPKG/etc/anomalyd/credentials/$cred")" = 600 ] || fail "postinst did not create credentials/$cred 0600"
  done
  echo "token" > "$DPKG/etc/anomalyd/credentials/influx-token"
  dpkg_root -r anomalyd
  [ -f "$DPKG/etc/anomalyd/anomalyd.toml" ] || fail "dpkg -r removed the conffile"
  [ ! -e "$DPKG/usr/bin/anomalyd" ] || fail "dpkg -r left /usr/bin/anomalyd"
  dpkg_root --purge anomalyd
  left=$(find "$DPKG" -path "$DPKG/var/lib/dpkg" -prune -o \( -type f -o -type l \) -print |
    grep -v "^$DPKG/var/lib/systemd/" || true)
  [ -z "$left" ] || fail "dpkg --purge left: $left"
  installed="install (man anomalyd), remove and purge in a scratch root"
else
  installed="no dpkg --root check (deb-systemd-helper without DPKG_ROOT support)"
fi

size=$(stat -c %s "$deb")
echo "build-deb: $deb ($((size / 1024)) KiB, $(wc -l < "$SCRATCH/files") paths); layout, conffiles, scripts, check-config$replayed, unit, $installed: OK"
