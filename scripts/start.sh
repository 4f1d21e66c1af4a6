#!/usr/bin/env bash
# Sets up and runs Ash from this checkout on a fresh Debian/Ubuntu machine:
# installs the system and npm packages, builds the CLI and the image
# (offline-capable), and starts the server with `ash start` at
# http://localhost:4100. Every argument is passed on to `ash start`.
#
#   export ANTHROPIC_API_KEY=sk-ant-...
#   scripts/start.sh [ash start flags...]     e.g. scripts/start.sh --port 8080
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
phase() { printf '== %s\n' "$*"; }
took() { printf '   done in %s s\n' "$(( $(date +%s) - $1 ))"; }

s=$(date +%s); phase "system packages (docker.io, debootstrap, bubblewrap, ...)"
infra/host-packages.sh start; took "$s"

s=$(date +%s); phase "npm packages"
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
took "$s"

s=$(date +%s); phase "building the CLI"
npm run build >"${TMPDIR:-/tmp}/ash-build.log" 2>&1 || { cat "${TMPDIR:-/tmp}/ash-build.log" >&2; exit 1; }
took "$s"

s=$(date +%s); phase "Docker engine"
infra/docker-engine.sh; took "$s"

if ! docker image inspect ash-dev >/dev/null 2>&1 || [ -n "$(find src templates Dockerfile entrypoint.sh package-lock.json -newer .ash-dev-built 2>/dev/null | head -1)" ]; then
  # With a registry at hand this is just `docker build -t ash-dev .`;
  # the scripts also work on machines without one.
  s=$(date +%s); phase "base image (the first time: a few minutes)"
  infra/base-image.sh; took "$s"
  s=$(date +%s); phase "image ash-dev (the first time: several minutes)"
  infra/build-image.sh ash-dev; took "$s"
  touch .ash-dev-built
fi

phase "ash start --image ash-dev --no-pull $*"
node bin/ash.mjs start --image ash-dev --no-pull "$@"
cat <<MSG

Set up in $(( $(date +%s) - t0 )) s. To use the CLI from this checkout:
  npm link                  # once: puts \`ash\` on your PATH (or run: node bin/ash.mjs ...)
  ash status                # the server, its URL and health
  ash deploy ./my-agent     # a folder with CLAUDE.md
  ash session create my-agent
  ash stop                  # stops the server; ~/.ash keeps every agent and session
The image is ash-dev: after \`ash stop\`, start it again with \`ash start --image ash-dev --no-pull\`.
MSG
