#!/usr/bin/env bash
# The one test command (README): sets up everything the suites need on a fresh
# Debian machine and runs unit, integration and end-to-end tests.
#
#   scripts/test.sh                 everything
#   scripts/test.sh tests/unit      only what is named (vitest filters)
#
# Ends with one line "N passed, N failed[, N skipped]" and a non-zero exit when
# anything failed. What it finds running (a Docker engine, the PostgreSQL
# cluster) it leaves running; it stops only what it started itself.
set -uo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
phase() { printf '\n== %s (%s s)\n' "$*" "$(( $(date +%s) - t0 ))"; }

summary=""
started_postgres=""
started_engine=""
cleanup() {
  phase "cleaning up"
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    ids=$(docker ps -aq --filter label=ash.test 2>/dev/null)
    [ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1
  fi
  [ -n "$started_postgres" ] && { infra/postgres.sh stop >/dev/null 2>&1 || true; }
  [ -n "$started_engine" ] && { infra/docker-engine-stop.sh >/dev/null 2>&1 || true; }
  # The summary line closes the output, where CI reads it.
  [ -n "$summary" ] && echo "$summary"
}
trap cleanup EXIT
fail_setup() { echo "$*" >&2; summary="0 passed, 1 failed"; exit 1; }

phase "system packages"
infra/host-packages.sh test || fail_setup "the system packages could not be installed"

phase "npm packages"
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund || fail_setup "npm ci failed"
fi

phase "building and type-checking (src, tests, bench)"
npm run build >/dev/null || fail_setup "build failed"
npm run typecheck || fail_setup "type check failed"

phase "starting PostgreSQL"
infra/postgres.sh status >/dev/null 2>&1 || started_postgres=1
if infra/postgres.sh start; then
  export ASH_TEST_POSTGRES_URL="$(infra/postgres.sh url)"
else
  echo "PostgreSQL could not be started: its suites will fail"
fi

phase "starting the Docker engine and building the image"
docker info >/dev/null 2>&1 || started_engine=1
if infra/docker-engine.sh; then
  if infra/base-image.sh && infra/build-image.sh ash:test; then
    export ASH_TEST_IMAGE=ash:test
  else
    echo "the image could not be built: end-to-end suites will fail"
  fi
else
  echo "no Docker engine: end-to-end suites will fail"
fi

# Everything was set up above: a suite that finds something missing fails instead of skipping.
export ASH_TEST_REQUIRE_ALL=1
export TESTCONTAINERS_RYUK_DISABLED=true
export TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1

phase "running tests"
report="$(mktemp)"
npx vitest run --reporter=default --reporter=json --outputFile.json="$report" "$@"
status=$?
summary="$(node scripts/summarize-vitest.mjs "$report")"
summary_status=$?
rm -f "$report"
[ $status -ne 0 ] && exit $status
exit $summary_status
