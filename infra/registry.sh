#!/bin/sh
# A private container registry on 127.0.0.1 (Debian's docker-registry, i.e.
# Distribution 2.x), for tests that exercise `docker pull`. Docker trusts a
# registry on localhost without TLS, so `docker push 127.0.0.1:5000/ash:test`
# and a later pull of that name just work.
#
#   infra/registry.sh start|stop|status
#   ASH_REGISTRY_PORT=<port>        (default 5000)
#   ASH_REGISTRY_DIR=<dir>          config, storage, pid and log (default: $TMPDIR/ash-registry)
set -eu

port="${ASH_REGISTRY_PORT:-5000}"
dir="${ASH_REGISTRY_DIR:-${TMPDIR:-/tmp}/ash-registry}"
pid_file="$dir/registry.pid"
url="http://127.0.0.1:$port/v2/"

say() { printf 'registry: %s\n' "$*"; }
die() { printf 'registry: %s\n' "$*" >&2; exit 1; }

running_pid() {
  pid="$(cat "$pid_file" 2>/dev/null || true)"
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = docker-registry ] && echo "$pid"
}

answers() { curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; }

start() {
  if pid="$(running_pid)"; then
    say "already running on 127.0.0.1:$port (pid $pid)"
    return 0
  fi
  if ! command -v docker-registry >/dev/null 2>&1; then
    [ "$(id -u)" -eq 0 ] || die "docker-registry is not installed (apt-get install docker-registry)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry >/dev/null
  fi
  if answers; then
    die "something else already answers on 127.0.0.1:$port"
  fi

  mkdir -p "$dir/storage"
  cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
  setsid docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 </dev/null &
  echo $! >"$pid_file"

  waited=0
  until answers; do
    if ! running_pid >/dev/null; then
      tail -n 20 "$dir/registry.log" >&2
      rm -f "$pid_file"
      die "docker-registry exited during start-up"
    fi
    [ "$waited" -lt 100 ] || die "no answer on $url after 20 s"
    sleep 0.2
    waited=$((waited + 1))
  done
  say "running on 127.0.0.1:$port (pid $(cat "$pid_file"))"
}

stop() {
  if ! pid="$(running_pid)"; then
    rm -f "$pid_file"
    say "not running"
    return 0
  fi
  kill -TERM "$pid"
  waited=0
  while [ -d "/proc/$pid" ] && [ "$waited" -lt 50 ]; do
    sleep 0.2
    waited=$((waited + 1))
  done
  [ -d "/proc/$pid" ] && kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pid_file"
  # Pushed images live only as long as the registry.
  rm -rf "$dir/storage"
  say "stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status)
    if pid="$(running_pid)"; then say "running on 127.0.0.1:$port (pid $pid)"; else say "not running"; exit 1; fi
    ;;
  *) die "usage: infra/registry.sh start|stop|status" ;;
esac
