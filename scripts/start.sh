#!/usr/bin/env bash
# Sets up and runs Ash from this checkout on a fresh Debian/Ubuntu machine:
# installs the packages, builds the CLI and the image (offline-capable), and
# starts the server with `ash start` at http://localhost:4100.
#
#   scripts/start.sh [ash start flags...]     e.g. scripts/start.sh --port 8080
set -euo pipefail
cd "$(dirname "$0")/.."

[ -d node_modules ] || npm ci --no-audit --no-fund
npm run build >/dev/null
infra/docker-engine.sh
if ! docker image inspect ash-dev >/dev/null 2>&1 || [ -n "$(find src templates Dockerfile entrypoint.sh package-lock.json -newer .ash-dev-built 2>/dev/null | head -1)" ]; then
  # With a registry at hand this is just `docker build -t ash-dev .`;
  # the script also works on machines without one.
  infra/base-image.sh
  infra/build-image.sh ash-dev
  touch .ash-dev-built
fi
exec node bin/ash.mjs start --image ash-dev --no-pull "$@"
