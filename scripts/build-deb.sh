#!/usr/bin/env bash
# Builds the Debian package with cargo-deb and checks what is inside:
#   1. writes packaging/build/anomalyd.toml (the installed config);
#   2. `cargo deb` (release build unless --no-build) -> target/debian/*.deb;
#   3. checks the file list (dpkg-deb -c), the control data (conffiles,
#      maintainer scripts with the systemd snippets) and, unpacked with
#      dpkg -x into a scratch root, that the packaged config, model and
#      ONNX Runtime library work together (`anomalyd check-config`) and
#      that the unit passes `systemd-analyze verify`.
# Prints the package's path and size. Needs cargo-deb:
#   cargo install cargo-deb --locked
#
#   scripts/build-deb.sh [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) BUILD_ARGS+=(--no-build); shift ;;
    *) echo "build-deb: unknown argument $1" >&2; exit 2 ;;
  esac
done
fail() { echo "build-deb: $*" >&2; exit 1; }

cargo deb --version >/dev/null 2>&1 || fail "cargo-deb is not installed: cargo install cargo-deb --locked"
grep -q '^\[package.metadata.deb\]' Cargo.toml ||
  fail "Cargo.toml has no [package.metadata.deb]: paste packaging/cargo-deb-metadata.toml into it"
[ -f .ort/libonnxruntime.so.1.31.1 ] || fail "no .ort/libonnxruntime.so.1.31.1: run scripts/setup.sh"

mkdir -p packaging/build
bash scripts/packaged-config.sh > packaging/build/anomalyd.toml

out=$(cargo deb -p anomalyd --locked "${BUILD_ARGS[@]}")
deb=$(printf '%s\n' "$out" | grep '\.deb$' | tail -n 1)
[ -f "$deb" ] || fail "cargo deb printed no package path: $out"

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
  /usr/share/doc/anomalyd/README.md; do
  grep -qxF "$want" "$SCRATCH/files" || fail "$deb lacks $want; it has:
$(cat "$SCRATCH/files")"
done

# 2. Control data: conffile, maintainer scripts with the systemd snippets.
mkdir "$SCRATCH/control"
dpkg-deb -e "$deb" "$SCRATCH/control"
grep -qxF /etc/anomalyd/anomalyd.toml "$SCRATCH/control/conffiles" || fail "anomalyd.toml is not a conffile"
grep -q 'install -m 0600 /dev/null' "$SCRATCH/control/postinst" || fail "postinst does not create the credential files"
grep -q 'deb-systemd-helper' "$SCRATCH/control/postinst" || fail "postinst lacks the systemd enable snippet"
grep -q 'deb-systemd-helper purge' "$SCRATCH/control/postrm" || fail "postrm lacks the systemd purge snippet"
if grep -q 'deb-systemd-invoke start' "$SCRATCH/control/postinst"; then
  fail "postinst starts the unit on first install; it must only be enabled"
fi

# 3. Unpacked: the pieces work together.
ROOT="$SCRATCH/root"
dpkg -x "$deb" "$ROOT"
[ "$(stat -c %a "$ROOT/usr/bin/anomalyd")" = 755 ] || fail "/usr/bin/anomalyd is not 0755"
sed -e "s|\"/usr/|\"$ROOT/usr/|g" "$ROOT/etc/anomalyd/anomalyd.toml" > "$SCRATCH/check.toml"
"$ROOT/usr/bin/anomalyd" check-config --config "$SCRATCH/check.toml" > "$SCRATCH/check.log" 2>&1 ||
  fail "the packaged config does not check:
$(cat "$SCRATCH/check.log")"
sed -e "s|^ExecStart=/usr/bin/anomalyd|ExecStart=$ROOT/usr/bin/anomalyd|" \
  "$ROOT/usr/lib/systemd/system/anomalyd.service" > "$SCRATCH/anomalyd.service"
verify=$(systemd-analyze verify "$SCRATCH/anomalyd.service" 2>&1) || fail "systemd-analyze verify: $verify"
[ -z "$verify" ] || fail "systemd-analyze verify: $verify"

# 4. Installed, removed and purged by dpkg in a scratch root, maintainer
#    scripts included: they run outside a chroot and honour $DPKG_ROOT, as
#    does deb-systemd-helper since init-system-helpers 1.62 (needed, or the
#    enable snippet would touch this machine's /etc).
DPKG="$SCRATCH/dpkg"
if grep -q DPKG_ROOT /usr/bin/deb-systemd-helper 2>/dev/null; then
  mkdir -p "$DPKG/var/lib/dpkg/updates" "$DPKG/var/lib/dpkg/info"
  touch "$DPKG/var/lib/dpkg/status"
  # The scratch database has no libc6: only that is forced.
  dpkg_root() { dpkg --root="$DPKG" --force-script-chrootless --force-depends "$@" >"$SCRATCH/dpkg.log" 2>&1 ||
    fail "dpkg $*: $(cat "$SCRATCH/dpkg.log")"; }
  dpkg_root -i "$deb"
  [ -L "$DPKG/etc/systemd/system/multi-user.target.wants/anomalyd.service" ] || fail "dpkg -i did not enable the unit"
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
  installed="install, remove and purge in a scratch root"
else
  installed="no dpkg --root check (deb-systemd-helper without DPKG_ROOT support)"
fi

size=$(stat -c %s "$deb")
echo "build-deb: $deb ($((size / 1024)) KiB, $(wc -l < "$SCRATCH/files") paths); layout, conffiles, scripts, check-config, unit, $installed: OK"
