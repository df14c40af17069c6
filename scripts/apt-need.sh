# shellcheck shell=bash
# Sourced by the set-up scripts: `apt_need TAG PACKAGE...` installs the
# Debian packages that are missing (quietly; on failure it refreshes the
# package lists and retries, showing apt's output), using sudo unless root.
apt_need() {
  local tag=$1 p
  shift
  local need=()
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
  done
  [ "${#need[@]}" -gt 0 ] || return 0
  local sudo=()
  [ "$(id -u)" -ne 0 ] && sudo=(sudo)
  echo "$tag: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get install -y --no-install-recommends "${need[@]}" >/dev/null 2>&1 || {
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y --no-install-recommends "${need[@]}"
  }
}
