#!/bin/sh
# Container entry point: prepares cgroups for per-sandbox limits, then becomes the
# server (exec), so signals from `docker stop` reach it directly.
#
# cgroup v2 (unified /sys/fs/cgroup, writable): the container's own cgroup is split
# into a leaf for the server and a delegated subtree for sandboxes, and the server is
# told where that subtree is (ASH_CGROUP_ROOT). With --cgroupns=host the container's
# cgroup is a path below /sys/fs/cgroup (read from /proc/self/cgroup); only that
# subtree is touched, never the host's other cgroups.
# cgroup v1 (memory + pids writable): nothing to prepare, the server detects it.
# Otherwise: the server limits sandboxes with rlimits.
#
# Nothing here may stop the server from starting: every cgroup step is allowed to fail.
set -eu

log() { printf 'ash-entrypoint: %s\n' "$*" >&2; }

cgroup_fs=/sys/fs/cgroup
wanted_controllers="memory cpu pids"

fs_type() { stat -fc %T "$1" 2>/dev/null || echo none; }

# Path of this process's cgroup v2 below the mount ("/" in a private cgroup namespace).
own_v2_cgroup() {
  sed -n 's/^0::\(.*\)$/\1/p' /proc/self/cgroup 2>/dev/null | head -n 1
}

# Moves every process of cgroup $1 into cgroup $2; processes that exit meanwhile are fine.
move_processes() {
  while read -r pid; do
    echo "$pid" >"$2/cgroup.procs" 2>/dev/null || true
  done <"$1/cgroup.procs"
}

# Enables, in $1's subtree_control, each wanted controller $1 offers; prints those enabled.
enable_controllers() {
  enabled=""
  for c in $wanted_controllers; do
    if grep -qw "$c" "$1/cgroup.controllers" 2>/dev/null \
      && echo "+$c" >"$1/cgroup.subtree_control" 2>/dev/null; then
      enabled="$enabled $c"
    fi
  done
  echo "${enabled# }"
}

delegate_v2() {
  rel="$(own_v2_cgroup)"
  [ -n "$rel" ] || return 1
  base="$cgroup_fs${rel%/}"
  [ -w "$base/cgroup.subtree_control" ] || return 1
  # Without memory and pids to hand down there is nothing worth changing.
  for c in memory pids; do
    grep -qw "$c" "$base/cgroup.controllers" 2>/dev/null || return 1
  done

  # A cgroup with processes in it cannot hand controllers to children
  # ("no internal processes"), so the server moves into a leaf of its own first.
  mkdir -p "$base/ash-server" 2>/dev/null || return 1
  move_processes "$base" "$base/ash-server"

  base_enabled="$(enable_controllers "$base")"
  case " $base_enabled " in *" memory "*) ;; *) return 1 ;; esac
  case " $base_enabled " in *" pids "*) ;; *) return 1 ;; esac

  mkdir -p "$base/ash-sandboxes" 2>/dev/null || return 1
  sandbox_enabled="$(enable_controllers "$base/ash-sandboxes")"
  case " $sandbox_enabled " in *" memory "*) ;; *) return 1 ;; esac
  case " $sandbox_enabled " in *" pids "*) ;; *) return 1 ;; esac

  ASH_CGROUP_ROOT="$base/ash-sandboxes"
  export ASH_CGROUP_ROOT
  log "cgroup v2 delegated: sandboxes under $ASH_CGROUP_ROOT ($sandbox_enabled)"
}

v1_writable() {
  for c in memory pids; do
    [ "$(fs_type "$cgroup_fs/$c")" = cgroupfs ] || return 1
    [ -w "$cgroup_fs/$c" ] || return 1
  done
}

if [ "$(fs_type "$cgroup_fs")" = cgroup2fs ] && delegate_v2; then
  :
elif v1_writable; then
  log "cgroup v1 (memory, pids) is writable: the server uses cgroup v1 limits"
else
  log "no writable cgroups: sandbox limits fall back to rlimits"
fi

exec "$@"
