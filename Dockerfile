# The Ash server image: the built server, its production dependencies (including
# the Agent SDK's native Claude Code CLI) and the tools sandboxes need
# (bubblewrap, setpriv, prlimit).
#
#   docker build -t ash-dev .                  with network access
#   infra/build-image.sh ash-dev               without (offline npm cache, local base image)
#
# Only classic Dockerfile features: the default docker client here has no buildx.

ARG BASE_IMAGE=node:20-bookworm-slim

# ---------------------------------------------------------------------------
# deps: every package of the lockfile, native addons (better-sqlite3) compiled.
FROM ${BASE_IMAGE} AS deps
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
# node-gyp compiles against the headers that ship next to node instead of downloading them.
ENV npm_config_nodedir=/usr/local \
    npm_config_update_notifier=false \
    npm_config_fund=false \
    npm_config_audit=false
WORKDIR /app
COPY package.json package-lock.json ./
# An npm cache made by infra/build-image.sh, when the context has one; the glob
# matches nothing in a plain checkout (package.json keeps the source list non-empty).
COPY package.jso[n] .npm-cach[e] /tmp/npm-cache/
RUN if [ -d /tmp/npm-cache/_cacache ]; then \
      npm_config_build_from_source=true npm ci --offline --cache /tmp/npm-cache; \
    else \
      npm ci; \
    fi \
 && rm -rf /tmp/npm-cache /root/.npm

# ---------------------------------------------------------------------------
# build: TypeScript sources into dist/, the web console into dist/console. Only this stage reruns after a source change.
FROM deps AS build
COPY build.config.ts tsconfig.json ./
COPY bin ./bin
COPY templates ./templates
COPY src ./src
COPY console ./console
# Type declarations are for the npm package, not the image: skip them here.
RUN ASH_BUILD_DECLARATIONS=0 npm run build

# ---------------------------------------------------------------------------
# prod-deps: the same node_modules without development packages. Kept apart from
# the build so a source change does not redo it. The hidden lockfile goes too:
# it records download addresses that have no place in the image. So do the
# compiler intermediates of native addons (only the .node files are loaded).
FROM deps AS prod-deps
RUN npm prune --omit=dev --offline \
 && rm -f node_modules/.package-lock.json \
 && find node_modules -path '*/build/Release/*' \( -name obj -o -name obj.target -o -name .deps -o -name '*.a' \) \
      -prune -exec rm -rf {} + \
 && rm -rf node_modules/better-sqlite3/deps node_modules/better-sqlite3/src

# ---------------------------------------------------------------------------
# runtime
FROM ${BASE_IMAGE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends bubblewrap procps util-linux ca-certificates socat \
 && rm -rf /var/lib/apt/lists/*
# Sandboxes run as this user (bubblewrap + setpriv); the server itself stays root
# so it can build namespaces and cgroups for them.
RUN groupadd --gid 10001 ash-sandbox \
 && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/ash-sandbox \
      --shell /bin/sh ash-sandbox

WORKDIR /app
COPY --from=prod-deps /app/node_modules ./node_modules
COPY package.json ./
COPY bin ./bin
COPY templates ./templates
COPY --from=build /app/dist ./dist
COPY entrypoint.sh /usr/local/bin/entrypoint.sh
RUN chmod 0755 /usr/local/bin/entrypoint.sh

ENV NODE_ENV=production \
    ASH_DATA_DIR=/data \
    ASH_PORT=4100 \
    ASH_HOST=0.0.0.0
VOLUME /data
EXPOSE 4100

# node has fetch built in, so no curl is needed; /health answers 503 while degraded.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.ASH_PORT || 4100) + '/health').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]

ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
CMD ["node", "/app/bin/ash-server.mjs"]
