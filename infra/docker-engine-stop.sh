#!/bin/sh
# Stops the dockerd that infra/docker-engine.sh started, and nothing else: an
# engine started some other way has no pid file here and keeps running.
set -eu

state="${ASH_DOCKER_STATE_DIR:-${TMPDIR:-/tmp}/ash-docker-engine}"
pid_file="$state/dockerd.pid"

say() { printf 'docker engine: %s\n' "$*"; }

pid="$(cat "$pid_file" 2>/dev/null || true)"
if [ -z "$pid" ]; then
  say "not started by infra/docker-engine.sh; left alone"
  exit 0
fi
if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != dockerd ]; then
  rm -f "$pid_file"
  say "pid $pid is no longer dockerd; nothing to stop"
  exit 0
fi

kill -TERM "$pid"
# dockerd gives running containers up to 15 s to stop before it exits itself.
waited=0
while [ -d "/proc/$pid" ] && [ "$waited" -lt 40 ]; do
  sleep 1
  waited=$((waited + 1))
done
if [ -d "/proc/$pid" ]; then
  kill -KILL "$pid" 2>/dev/null || true
  rm -f /var/run/docker.pid
  say "killed pid $pid (did not stop within ${waited} s)"
else
  say "stopped (pid $pid)"
fi
rm -f "$pid_file"
