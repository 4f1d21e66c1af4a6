#!/bin/sh
# Builds the Ash image on a machine whose containers cannot reach the npm registry
# and which cannot pull images:
#   - the base image is the local stand-in from infra/base-image.sh (unless the real
#     node:20-bookworm-slim is present),
#   - npm packages reach the build as an npm cache filled on this machine, inside a
#     throw-away build context outside the repository.
# The committed Dockerfile is the same one `docker build .` uses with network access.
# See docs/decisions/image-build-context.md.
#
#   infra/build-image.sh [tag]           tag defaults to ash-dev
#   ASH_BASE_IMAGE=<image>               base image to build from
#   ASH_IMAGE_BUILD_DIR=<dir>            where context and npm cache live between runs
#   ASH_IMAGE_NO_CACHE=1                 rebuild every layer (docker build --no-cache)
set -eu

tag="${1:-ash-dev}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${ASH_IMAGE_BUILD_DIR:-${TMPDIR:-/tmp}/ash-image-build}"
ctx="$work/context"
cache="$ctx/.npm-cache"

say() { printf 'build image: %s\n' "$*"; }
die() { printf 'build image: %s\n' "$*" >&2; exit 1; }

case "$work/" in
  "$repo"/*) die "ASH_IMAGE_BUILD_DIR must be outside the repository ($repo)" ;;
esac
command -v docker >/dev/null 2>&1 || die "docker is not installed (infra/docker-engine.sh installs it)"
docker info >/dev/null 2>&1 || die "no Docker engine answers (infra/docker-engine.sh starts one)"

mkdir -p "$work"
# One build at a time per work directory: two would rewrite each other's context.
exec 9>"$work/lock"
flock -w 1800 9 || die "another build holds $work/lock"

start=$(date +%s)

# --- base image -------------------------------------------------------------
base="${ASH_BASE_IMAGE:-}"
if [ -z "$base" ]; then
  if docker image inspect node:20-bookworm-slim >/dev/null 2>&1; then
    base=node:20-bookworm-slim
  else
    base=ash-local/node:20-bookworm-slim
  fi
fi
if ! docker image inspect "$base" >/dev/null 2>&1; then
  ASH_BASE_IMAGE="$base" sh "$repo/infra/base-image.sh"
fi

# --- build context ----------------------------------------------------------
# Everything but the npm cache is replaced, so deleted sources do not linger.
mkdir -p "$ctx"
find "$ctx" -mindepth 1 -maxdepth 1 ! -name .npm-cache -exec rm -rf {} +
for path in Dockerfile .dockerignore entrypoint.sh package.json build.config.ts tsconfig.json bin src console templates; do
  [ -e "$repo/$path" ] || die "missing $path in $repo"
  cp -Rp "$repo/$path" "$ctx/"
done

# The committed lockfile carries no download addresses (they name a registry);
# npm needs them to install offline from a cache, so they are written into the
# context's copy only, from the registry this machine's npm is configured with.
registry="$(cd "$repo" && npm config get registry)"
node - "$repo/package-lock.json" "$ctx/package-lock.json" "$registry" <<'EOF'
const fs = require("node:fs");
const [from, to, registryArg] = process.argv.slice(2);
const registry = registryArg.endsWith("/") ? registryArg : registryArg + "/";
const lock = JSON.parse(fs.readFileSync(from, "utf8"));
for (const [location, entry] of Object.entries(lock.packages ?? {})) {
  // The root, workspace links, bundled packages and non-registry sources keep what they have.
  if (location === "" || entry.link || entry.inBundle || entry.resolved || !entry.version) continue;
  const name = entry.name ?? location.slice(location.lastIndexOf("node_modules/") + "node_modules/".length);
  const file = name.startsWith("@") ? name.slice(name.indexOf("/") + 1) : name;
  entry.resolved = `${registry}${name}/-/${file}-${entry.version}.tgz`;
}
fs.writeFileSync(to, JSON.stringify(lock, null, 2) + "\n");
EOF

# --- npm cache --------------------------------------------------------------
# Filled once per lockfile (and registry); later runs reuse it as it is.
# The cache is content-addressed, so keeping older entries is harmless.
stamp="$(sha256sum "$ctx/package-lock.json" | cut -d' ' -f1)"
if [ -d "$cache/_cacache" ] && [ "$(cat "$work/npm-cache.stamp" 2>/dev/null)" = "$stamp" ]; then
  say "npm cache up to date"
else
  fill="$work/fill"
  rm -rf "$fill" && mkdir -p "$fill"
  cp "$ctx/package.json" "$ctx/package-lock.json" "$fill/"
  say "filling npm cache"
  if ! (cd "$fill" && npm ci --cache "$cache" --ignore-scripts --prefer-offline \
        --no-audit --no-fund --loglevel=error >"$work/npm-cache.log" 2>&1); then
    tail -n 20 "$work/npm-cache.log" >&2
    die "npm ci could not fill the cache"
  fi
  rm -rf "$fill"
  echo "$stamp" >"$work/npm-cache.stamp"
fi
rm -rf "$cache/_logs" "$cache/_npx" "$cache/_update-notifier-last-checked"

# --- docker build -----------------------------------------------------------
# Debian's 20.10 client runs the engine's built-in BuildKit (faster, pulls nothing);
# newer clients need buildx for that; without either, the classic builder.
set -- docker build
if [ -x /usr/bin/docker ]; then
  case "$(/usr/bin/docker version --format '{{.Client.Version}}' 2>/dev/null)" in
    1[0-9].* | 20.*) set -- env DOCKER_BUILDKIT=1 /usr/bin/docker build --progress=plain ;;
  esac
fi
if [ "$1" = docker ] && docker buildx version >/dev/null 2>&1; then
  set -- env DOCKER_BUILDKIT=1 docker build --progress=plain
fi

# apt inside the build still needs the Debian mirror, so the build keeps the
# default network; npm runs with --offline and never leaves the container.
[ "${ASH_IMAGE_NO_CACHE:-}" = 1 ] && set -- "$@" --no-cache
log="$work/docker-build.log"
if ! "$@" --build-arg BASE_IMAGE="$base" -t "$tag" "$ctx" >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  die "docker build failed (full log: $log)"
fi

size="$(docker image inspect --format '{{.Size}}' "$tag")"
say "$tag from $base in $(( $(date +%s) - start )) s, $(( size / 1000000 )) MB"
