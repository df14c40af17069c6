#!/usr/bin/env bash
# Removes what scripts/install.sh installed, as listed in its manifest
# (/usr/share/anomalyd/install.manifest), and nothing else:
#   - files it installed are removed;
#   - the config, the credential files and the CUDA drop-in are removed only
#     while they are unchanged; an edited one is kept (and its directory)
#     unless --purge is given;
#   - directories it created are removed once empty.
# --purge also removes the daemon's state (spool, alert state) that systemd
# keeps in /var/lib/private/anomalyd. With systemd running, the unit is
# stopped and disabled first.
#
#   scripts/uninstall.sh [--root DIR] [--purge] [--no-systemctl]
set -euo pipefail

ROOT="${DESTDIR:-/}"
PURGE=0
SYSTEMCTL=1
while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT="${2:?--root needs a directory}"; shift 2 ;;
    --purge) PURGE=1; shift ;;
    --no-systemctl) SYSTEMCTL=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "uninstall: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
ROOT="${ROOT%/}"
if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
  echo "uninstall: run as root (or pass --root DIR)" >&2
  exit 1
fi

MANIFEST=/usr/share/anomalyd/install.manifest
if [ ! -f "$ROOT$MANIFEST" ]; then
  echo "uninstall: no $ROOT$MANIFEST: nothing was installed by scripts/install.sh under ${ROOT:-/}" >&2
  exit 1
fi
mapfile -t ENTRIES < "$ROOT$MANIFEST"

systemd_here=0
if [ -z "$ROOT" ] && [ "$SYSTEMCTL" -eq 1 ] && [ -d /run/systemd/system ]; then
  systemd_here=1
  systemctl disable --now anomalyd.service || true
  # Instances of the template unit (several daemons on one host).
  systemctl stop 'anomalyd@*.service' || true
fi

rm -f "$ROOT$MANIFEST"
kept=0
LEFT=() # manifest lines of what stays, so a later --purge can finish
for (( i=${#ENTRIES[@]}-1; i>=0; i-- )); do
  read -r kind sum path <<< "${ENTRIES[$i]}"
  target="$ROOT$path"
  case "$kind" in
    file)
      rm -f "$target"
      ;;
    conf)
      [ -e "$target" ] || continue
      if [ "$PURGE" -eq 1 ] || [ "$(sha256sum "$target" | cut -d' ' -f1)" = "$sum" ]; then
        rm -f "$target"
      else
        echo "uninstall: keeping $path (changed since install; --purge removes it)"
        kept=$((kept + 1))
        LEFT=("${ENTRIES[$i]}" "${LEFT[@]}")
      fi
      ;;
    dir)
      [ -d "$target" ] || continue
      if ! rmdir "$target" 2>/dev/null; then
        echo "uninstall: keeping $path (not empty)"
        LEFT=("${ENTRIES[$i]}" "${LEFT[@]}")
      fi
      ;;
    *)
      echo "uninstall: ignoring unknown manifest line: ${ENTRIES[$i]}" >&2
      ;;
  esac
done

if [ "${#LEFT[@]}" -gt 0 ]; then
  # Like dpkg's "removed, config kept" state: the manifest stays with what
  # is left (and the directories the manifest needs) for `--purge` later.
  dir=$(dirname "$MANIFEST")
  missing=()
  while [ "$dir" != / ] && [ ! -d "$ROOT$dir" ]; do
    missing=("dir - $dir" "${missing[@]}")
    dir=$(dirname "$dir")
  done
  mkdir -p "$ROOT$(dirname "$MANIFEST")"
  printf '%s\n' "${LEFT[@]}" "${missing[@]}" > "$ROOT$MANIFEST"
  echo "uninstall: what is left is listed in $MANIFEST; 'uninstall.sh --purge' removes it"
fi
if [ "$PURGE" -eq 1 ]; then
  # DynamicUser keeps the state in /var/lib/private/anomalyd, with
  # /var/lib/anomalyd a symlink to it.
  rm -rf "$ROOT/var/lib/private/anomalyd" "$ROOT/var/lib/anomalyd"
fi
if [ "$systemd_here" -eq 1 ]; then
  systemctl daemon-reload
fi
if [ "$kept" -gt 0 ]; then
  echo "uninstall: removed anomalyd from ${ROOT:-/} ($kept changed file(s) kept)"
else
  echo "uninstall: removed anomalyd from ${ROOT:-/}"
fi
