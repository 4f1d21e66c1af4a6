#!/bin/sh
# Installs the Debian packages that the README's two commands need on the host,
# each only when it is missing, with one `apt-get update` at most. Quiet when
# everything is present.
#
#   infra/host-packages.sh start     what scripts/start.sh needs
#   infra/host-packages.sh test      what scripts/test.sh needs (a superset)
#
# What each package is for:
#   docker.io        the Docker engine (dockerd); the machine may have only a client
#   debootstrap      infra/base-image.sh makes the offline base image with it
#   bubblewrap       sandboxes on the host (bwrap): the server and its tests
#   docker-compose   the Compose suites (the standalone tool; no plugin is packaged)
#   docker-registry  a local registry for the `ash start` pull tests
#   postgresql       the PostgreSQL suites (infra/postgres.sh runs a private cluster)
#   zstd             workspace snapshots stream through it
#   iproute2         per-sandbox network namespaces (ip)
#   socat            bridges each sandbox's loopback ports to the model gateway and egress proxies
#   chromium         the web console's end-to-end tests drive it (headless, through playwright-core)
#   haproxy          the load balancer in front of several servers in the multi-server tests
set -eu

say() { printf 'host packages: %s\n' "$*"; }
die() { printf 'host packages: %s\n' "$*" >&2; exit 1; }

case "${1:-}" in
  start) wanted="docker.io:dockerd debootstrap:debootstrap bubblewrap:bwrap zstd:zstd iproute2:ip socat:socat" ;;
  test) wanted="docker.io:dockerd debootstrap:debootstrap bubblewrap:bwrap zstd:zstd iproute2:ip socat:socat docker-compose:docker-compose docker-registry:docker-registry postgresql:/usr/lib/postgresql chromium:chromium haproxy:haproxy" ;;
  *) die "usage: infra/host-packages.sh start|test" ;;
esac

# A package counts as present when the command (or folder) it provides is there.
present() {
  case "$1" in
    /*) [ -n "$(ls -d "$1"/*/bin/initdb 2>/dev/null | head -n 1)" ] ;;
    *) command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ] ;;
  esac
}

missing=""
for pair in $wanted; do
  pkg=${pair%%:*}
  provides=${pair#*:}
  present "$provides" || missing="$missing $pkg"
done
[ -z "$missing" ] && exit 0

[ "$(id -u)" -eq 0 ] || die "missing:$missing; installing them needs root (sudo $0 $1)"
command -v apt-get >/dev/null 2>&1 || die "missing:$missing; this script installs with apt-get (Debian/Ubuntu)"

start=$(date +%s)
say "installing$missing"
export DEBIAN_FRONTEND=noninteractive
log="${TMPDIR:-/tmp}/ash-host-packages.log"
# Each list in full (apt-get leaves what is there as it is), so every package the
# commands need is named here in the open.
install_all() {
  case "$1" in
    start) apt-get install -y -qq --no-install-recommends --no-upgrade docker.io debootstrap bubblewrap zstd iproute2 socat ;;
    test) apt-get install -y -qq --no-install-recommends --no-upgrade docker.io debootstrap bubblewrap zstd iproute2 socat docker-compose docker-registry postgresql chromium haproxy ;;
  esac
}
if ! { apt-get update -qq && install_all "$1"; } >"$log" 2>&1; then
  tail -n 20 "$log" >&2
  die "apt-get could not install$missing (log: $log)"
fi
for pair in $wanted; do
  present "${pair#*:}" || die "${pair%%:*} was installed but ${pair#*:} is still missing"
done
say "installed$missing in $(( $(date +%s) - start )) s"
