#!/usr/bin/env bash
# A private PostgreSQL cluster for tests and CI, on 127.0.0.1 only.
#
#   infra/postgres.sh start     install PostgreSQL if missing, create and start the cluster, print its URL
#   infra/postgres.sh stop      stop this cluster (and only this one)
#   infra/postgres.sh restart   stop and start it again (tests use this to prove reconnection)
#   infra/postgres.sh url       print the URL
#   infra/postgres.sh status    exit 0 when running
#   infra/postgres.sh purge     stop it and delete its data directory
#
# Environment:
#   ASH_PG_PORT   port to listen on (default 54329)
#   ASH_PG_DIR    where the cluster lives (default /tmp/ash-postgres-<port>); run as root, the
#                 postgres user must be able to enter its parent folders
#
# The cluster has a role `ash` (password `ash`, allowed to create databases) that owns
# the database `ash`; tests create throw-away databases through it. `fsync` stays on so
# the durability behaviour matches a real deployment.
set -euo pipefail

PORT="${ASH_PG_PORT:-54329}"
DIR="${ASH_PG_DIR:-/tmp/ash-postgres-${PORT}}"
DATA="$DIR/data"
SOCKETS="$DIR/run"
LOG="$DIR/postgres.log"
URL="postgresql://ash:ash@127.0.0.1:${PORT}/ash"

die() { echo "postgres.sh: $*" >&2; exit 1; }

find_bin_dir() {
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  [ -n "$dir" ] && [ -x "$dir/initdb" ] && echo "$dir"
}

ensure_installed() {
  if [ -z "$(find_bin_dir)" ]; then
    [ "$(id -u)" = 0 ] || die "PostgreSQL is not installed and installing it needs root"
    echo "postgres.sh: installing PostgreSQL" >&2
    apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql >&2
  fi
  BIN="$(find_bin_dir)" || die "no initdb found under /usr/lib/postgresql after installing"
}

# Runs a command as the owner of the cluster: the postgres user when we are root
# (PostgreSQL refuses to run as root), ourselves otherwise.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

is_running() {
  [ -f "$DATA/PG_VERSION" ] && as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

init_cluster() {
  mkdir -p "$DIR"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$DIR"
  as_owner test -w "$DIR" || die "$DIR is not reachable by the postgres user; pick an ASH_PG_DIR whose parent folders it can enter"
  as_owner mkdir -p "$SOCKETS"
  as_owner "$BIN/initdb" -D "$DATA" -U postgres -E UTF8 --no-locale \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  cat >>"$DATA/postgresql.conf" <<EOF

# Written by infra/postgres.sh
listen_addresses = '127.0.0.1'
port = ${PORT}
unix_socket_directories = '${SOCKETS}'
fsync = on
synchronous_commit = on
max_connections = 200
EOF
}

psql_admin() {
  as_owner "$BIN/psql" -h "$SOCKETS" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtAc "$1"
}

ensure_role_and_database() {
  if [ -z "$(psql_admin "SELECT 1 FROM pg_roles WHERE rolname = 'ash'")" ]; then
    psql_admin "CREATE ROLE ash LOGIN PASSWORD 'ash' CREATEDB"
  fi
  if [ -z "$(psql_admin "SELECT 1 FROM pg_database WHERE datname = 'ash'")" ]; then
    psql_admin "CREATE DATABASE ash OWNER ash"
  fi
}

# A new cluster gets its role and database while it listens on its unix socket
# only: a client that connects over TCP meanwhile (a server waiting for the
# database) would otherwise see "password authentication failed" for a role
# not made yet, and rightly give up.
prepare_new_cluster() {
  # Until it is prepared, a failure takes the new cluster away again (stopped, its data removed),
  # so the next start prepares it anew instead of finding it half made.
  trap 'as_owner "$BIN/pg_ctl" -D "$DATA" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$DATA"' EXIT
  init_cluster
  as_owner "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 -o "-c listen_addresses=''" start >/dev/null \
    || die "the new cluster did not start; see $LOG"
  ensure_role_and_database
  as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null
  trap - EXIT
}

start() {
  ensure_installed
  [ -f "$DATA/PG_VERSION" ] || prepare_new_cluster
  if ! is_running; then
    as_owner "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start >/dev/null \
      || die "the cluster did not start; see $LOG"
  fi
  ensure_role_and_database
  echo "$URL"
}

stop() {
  BIN="$(find_bin_dir)" || return 0
  if is_running; then
    as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart)
    stop
    start >/dev/null
    echo "$URL"
    ;;
  url) echo "$URL" ;;
  status)
    BIN="$(find_bin_dir)" || exit 1
    is_running
    ;;
  purge)
    stop
    rm -rf "$DIR"
    ;;
  *)
    echo "usage: infra/postgres.sh start|stop|restart|url|status|purge" >&2
    exit 2
    ;;
esac
