# shellcheck shell=bash
# Sourced by the set-up scripts. `apt_need TAG PACKAGE...` installs the
# Debian/Ubuntu packages that are missing and fails, naming each one and
# what to do instead, when one has no installable candidate in this
# distribution; `apt_want TAG PACKAGE...` does the same for optional
# packages and only warns. Quiet unless something goes wrong; sudo unless
# root. Which package exists where: docs/distribution.md §2.

# This distribution and release, e.g. "debian 12" or "ubuntu 24.04".
apt_distro() {
  if [ -r /etc/os-release ]; then
    # shellcheck disable=SC1091 # the system's file, read at run time
    (. /etc/os-release && echo "${ID:-unknown} ${VERSION_ID:-}")
  else
    echo "unknown"
  fi
}

# What to do when PACKAGE cannot be installed from this distribution.
apt_hint() {
  case "$1" in
    chromium) echo "Ubuntu ships Chromium only as a snap (chromium-browser installs the snap): 'snap install chromium && ln -s /snap/bin/chromium /usr/bin/chromium'; without /usr/bin/chromium the status-page test skips (and fails under CI=true)" ;;
    victoria-metrics) echo "install VictoriaMetrics' single-node binary from its own release page as /usr/bin/victoria-metrics (any 1.79 or newer)" ;;
    shellcheck) echo "the shellcheck test skips without it (and fails under CI=true)" ;;
    *) echo "install it by other means" ;;
  esac
}

_apt_sudo() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Installed as a package, or (for the two that may come from elsewhere) as
# the binary the tests and the demo run.
_apt_present() {
  dpkg -s "$1" >/dev/null 2>&1 && return 0
  case "$1" in
    victoria-metrics) [ -x /usr/bin/victoria-metrics ] ;;
    chromium) [ -x /usr/bin/chromium ] ;;
    *) return 1 ;;
  esac
}

# Not `grep -q`: it exits at the first match, and under `set -o pipefail`
# the SIGPIPE apt-cache then gets fails the pipeline.
_apt_has_candidate() {
  apt-cache policy "$1" 2>/dev/null | grep 'Candidate: [^(]' >/dev/null
}

# _apt_install TAG REQUIRED(0|1) PACKAGE...
_apt_install() {
  local tag=$1 required=$2 p
  shift 2
  local need=()
  for p in "$@"; do
    _apt_present "$p" || need+=("$p")
  done
  [ "${#need[@]}" -gt 0 ] || return 0
  export DEBIAN_FRONTEND=noninteractive
  local avail=() missing=() refreshed=0
  for p in "${need[@]}"; do
    if ! _apt_has_candidate "$p" && [ "$refreshed" = 0 ]; then
      _apt_sudo apt-get update -qq
      refreshed=1
    fi
    if _apt_has_candidate "$p"; then avail+=("$p"); else missing+=("$p"); fi
  done
  if [ "${#avail[@]}" -gt 0 ]; then
    echo "$tag: installing ${avail[*]}"
    _apt_sudo apt-get install -y --no-install-recommends "${avail[@]}" >/dev/null 2>&1 || {
      _apt_sudo apt-get update -qq
      _apt_sudo apt-get install -y --no-install-recommends "${avail[@]}"
    }
  fi
  for p in "${missing[@]}"; do
    echo "$tag: package '$p' is not available on $(apt_distro): $(apt_hint "$p")" >&2
  done
  [ "${#missing[@]}" -eq 0 ] || [ "$required" = 0 ]
}

apt_need() {
  local tag=$1
  shift
  _apt_install "$tag" 1 "$@"
}

apt_want() {
  local tag=$1
  shift
  _apt_install "$tag" 0 "$@"
}
