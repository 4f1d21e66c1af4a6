#!/bin/sh
# Makes sure a Docker engine answers: installs docker.io when dockerd is missing,
# starts dockerd in the background when none runs, and waits for it (bounded).
# A dockerd that already answers is left alone. infra/docker-engine-stop.sh stops
# only an engine this script started.
#
#   infra/docker-engine.sh
#   ASH_DOCKER_STATE_DIR=<dir>     pid file and log (default: $TMPDIR/ash-docker-engine)
#   ASH_DOCKER_WAIT_SECONDS=<n>    how long to wait for `docker info` (default 60)
set -eu

state="${ASH_DOCKER_STATE_DIR:-${TMPDIR:-/tmp}/ash-docker-engine}"
wait_seconds="${ASH_DOCKER_WAIT_SECONDS:-60}"
system_pid_file=/var/run/docker.pid

say() { printf 'docker engine: %s\n' "$*"; }
die() { printf 'docker engine: %s\n' "$*" >&2; exit 1; }

# True when $1 is the pid of a running dockerd.
is_dockerd() {
  [ -n "$1" ] && [ -r "/proc/$1/comm" ] && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = dockerd ]
}

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  say "already running"
  exit 0
fi

[ "$(id -u)" -eq 0 ] || die "starting dockerd needs root"

if ! command -v dockerd >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq docker.io >/dev/null
fi

# An engine that was killed leaves its pid file behind, and a new dockerd
# refuses to start while it exists.
if [ -f "$system_pid_file" ] && ! is_dockerd "$(cat "$system_pid_file" 2>/dev/null)"; then
  rm -f "$system_pid_file"
fi

mkdir -p "$state"
log="$state/dockerd.log"
if [ -f "$system_pid_file" ]; then
  # A dockerd runs but does not answer yet (still starting): wait for it, do not start another.
  started_here=""
else
  setsid dockerd >"$log" 2>&1 </dev/null &
  started_here=$!
fi

waited=0
until docker info >/dev/null 2>&1; do
  if [ -n "$started_here" ] && ! kill -0 "$started_here" 2>/dev/null; then
    tail -n 20 "$log" >&2
    die "dockerd exited during start-up (log: $log)"
  fi
  if [ "$waited" -ge "$wait_seconds" ]; then
    [ -n "$started_here" ] && tail -n 20 "$log" >&2
    die "no answer from dockerd after ${wait_seconds} s"
  fi
  sleep 1
  waited=$((waited + 1))
done

if [ -n "$started_here" ]; then
  # dockerd writes its own pid; that is the process the stop script may end.
  cat "$system_pid_file" >"$state/dockerd.pid" 2>/dev/null || echo "$started_here" >"$state/dockerd.pid"
  say "started (pid $(cat "$state/dockerd.pid"), ${waited} s, log $log)"
else
  say "running (started elsewhere)"
fi
