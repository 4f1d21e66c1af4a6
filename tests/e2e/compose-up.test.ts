/**
 * The Compose file `ash compose generate` writes, brought up for real with
 * docker-compose 1.29: the database first, the server only once it is healthy,
 * the server's own node-based healthcheck, the API key from .env, data kept
 * across `down` + `up`.
 *
 * Needs `docker info`, docker-compose and ASH_TEST_IMAGE. The PostgreSQL variant
 * uses `postgres:16` when that image is on the machine; otherwise it builds a
 * stand-in from ASH_TEST_IMAGE (Debian) with apt's PostgreSQL and an entrypoint
 * that honours the same POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB contract,
 * and swaps only the `image:` line of the database service. The CockroachDB
 * variant runs only when `cockroachdb/cockroach:v24.1.0` is on the machine.
 */
import { execFile, execFileSync } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseDotEnv } from "../../src/runspec";
import { dockerImageProblem, skipUnlessReady } from "../helpers/requirements";
import { freePort } from "../helpers/ports";

const root = resolve(import.meta.dirname, "../..");
const tsx = join(root, "node_modules/.bin/tsx");
const main = join(root, "src/cli/main.ts");
const image = process.env.ASH_TEST_IMAGE;
const STANDIN = "ash-e2e/postgres-standin:16";

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(command: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<Run> {
  return new Promise((done) => {
    execFile(
      command,
      args,
      { cwd: options.cwd ?? root, env: options.env ?? process.env, timeout: options.timeoutMs ?? 300_000, maxBuffer: 64 << 20 },
      (error: any, stdout, stderr) => done({ code: error ? (typeof error.code === "number" ? error.code : 1) : 0, stdout: String(stdout), stderr: String(stderr) }),
    );
  });
}

/** The environment without variables that would override .env (Compose prefers the shell's). */
const cleanEnv = () => Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(ASH_|POSTGRES_|ANTHROPIC_|COMPOSE_)/.test(k)));

const has = (command: string, args: string[]) => {
  try {
    execFileSync(command, args, { stdio: "ignore", timeout: 20_000 });
    return true;
  } catch {
    return false;
  }
};

function skipReason(): string | undefined {
  const docker = dockerImageProblem(image);
  if (docker) return docker;
  if (!has("docker-compose", ["version"])) return "docker-compose is not installed";
  return undefined;
}

const reason = skipUnlessReady("The Compose tests", skipReason());

const PG_ENTRYPOINT = `#!/bin/sh
# Stand-in for the official postgres image's entrypoint: first start creates the
# cluster with POSTGRES_USER / POSTGRES_PASSWORD and the POSTGRES_DB database.
set -eu
PATH="$(echo /usr/lib/postgresql/*/bin):$PATH"
: "\${POSTGRES_USER:=postgres}"
: "\${POSTGRES_DB:=$POSTGRES_USER}"
as_pg() { setpriv --reuid postgres --regid postgres --init-groups "$@"; }
mkdir -p "$PGDATA" /var/run/postgresql
chown -R postgres:postgres "$PGDATA" /var/run/postgresql
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pw="$(mktemp)"
  printf '%s\\n' "$POSTGRES_PASSWORD" >"$pw"
  chown postgres "$pw"
  as_pg initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pw" --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pw"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
  if [ "$POSTGRES_DB" != postgres ]; then
    as_pg pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    as_pg psql -q -U "$POSTGRES_USER" -d postgres -c "CREATE DATABASE \\"$POSTGRES_DB\\""
    as_pg pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  fi
fi
exec setpriv --reuid postgres --regid postgres --init-groups postgres -D "$PGDATA"
`;

async function postgresImage(): Promise<string> {
  if (has("docker", ["image", "inspect", "postgres:16"])) return "postgres:16";
  if (has("docker", ["image", "inspect", STANDIN])) return STANDIN;
  const context = await mkdtemp(join(tmpdir(), "ash-pg-standin-"));
  try {
    await writeFile(join(context, "pg-entrypoint.sh"), PG_ENTRYPOINT, { mode: 0o755 });
    await writeFile(
      join(context, "Dockerfile"),
      [
        `FROM ${image}`,
        "RUN apt-get update && apt-get install -y --no-install-recommends postgresql && rm -rf /var/lib/apt/lists/*",
        "COPY pg-entrypoint.sh /usr/local/bin/pg-entrypoint.sh",
        "ENV PGDATA=/var/lib/postgresql/data",
        "HEALTHCHECK NONE",
        'ENTRYPOINT ["/usr/local/bin/pg-entrypoint.sh"]',
        "CMD []",
        "",
      ].join("\n"),
    );
    const built = await run("docker", ["build", "-q", "-t", STANDIN, context], { timeoutMs: 900_000 });
    if (built.code !== 0) throw new Error(`building the PostgreSQL stand-in failed: ${built.stderr}`);
    return STANDIN;
  } finally {
    await rm(context, { recursive: true, force: true });
  }
}

/** Polls `docker inspect` until the container's healthcheck says healthy (or unhealthy), at most `seconds`. */
async function waitHealthy(container: string, seconds: number): Promise<string> {
  let status = "";
  for (let i = 0; i < seconds; i++) {
    const inspect = await run("docker", ["inspect", "-f", "{{if .State.Health}}{{.State.Health.Status}}{{end}}", container]);
    status = inspect.stdout.trim();
    if (status === "healthy" || status === "unhealthy") return status;
    await new Promise((r) => setTimeout(r, 1000));
  }
  return status;
}

describe.skipIf(reason)("docker-compose up with the generated PostgreSQL file", () => {
  let dir: string;
  let port: number;
  let project: string;
  let apiKey: string;
  const env = () => ({ ...cleanEnv(), ANTHROPIC_API_KEY: "sk-ant-compose-e2e", COMPOSE_PROJECT_NAME: project });
  const compose = (args: string[], timeoutMs?: number) => run("docker-compose", ["-f", "docker-compose.yml", ...args], { cwd: dir, env: env(), timeoutMs });

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "ash-compose-up-"));
    port = await freePort();
    project = `ashe2e${process.pid}`;
    // The model is the fake one, in a container on the stack's network (see the agent-flow test).
    const generated = await run(tsx, [main, "compose", "generate", "--database", "postgres", "--image", image!, "--port", String(port), "--max-sandboxes", "5", "-e", "ANTHROPIC_BASE_URL=http://model:8080"], {
      cwd: dir,
      env: { ...process.env, NO_COLOR: "1" },
    });
    expect(generated.code, generated.stderr).toBe(0);
    const pg = await postgresImage();
    const file = join(dir, "docker-compose.yml");
    const text = await readFile(file, "utf8");
    expect(text).toContain('image: "postgres:16"');
    await writeFile(file, text.replace('image: "postgres:16"', `image: ${JSON.stringify(pg)}`));
    apiKey = parseDotEnv(await readFile(join(dir, ".env"), "utf8")).ASH_API_KEY;
  }, 1_200_000);

  afterAll(async () => {
    if (dir) {
      await compose(["down", "--volumes", "--remove-orphans", "--timeout", "20"]);
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("starts the database, then the server, which becomes healthy on its own healthcheck", async () => {
    const up = await compose(["up", "-d"], 600_000);
    expect(up.code, up.stderr).toBe(0);
    expect(await waitHealthy(`${project}_ash_1`, 180)).toBe("healthy");

    // The server started only after the database's healthcheck first passed.
    const db = JSON.parse((await run("docker", ["inspect", `${project}_postgres_1`])).stdout)[0];
    const ash = JSON.parse((await run("docker", ["inspect", `${project}_ash_1`])).stdout)[0];
    const firstHealthy = Math.min(...db.State.Health.Log.filter((l: any) => l.ExitCode === 0).map((l: any) => Date.parse(l.End)));
    expect(Date.parse(ash.State.StartedAt)).toBeGreaterThanOrEqual(firstHealthy);

    expect(ash.HostConfig.Privileged).toBe(false);
    expect(ash.HostConfig.Init).toBe(true);
    expect(ash.HostConfig.CapAdd).toEqual(["SYS_ADMIN"]);
    expect(ash.Config.Env).toContain("ASH_MAX_SANDBOXES=5");
    expect(ash.Config.Env).toContain(`ASH_API_KEY=${apiKey}`);

    const health = await fetch(`http://127.0.0.1:${port}/health`);
    expect(health.status).toBe(200);
    const body = (await health.json()) as { status: string; database: string };
    expect(body).toMatchObject({ status: "ok", database: "postgres" });
  });

  it("requires the key from .env and keeps agents when the containers are recreated", async () => {
    expect((await fetch(`http://127.0.0.1:${port}/api/agents`)).status).toBe(401);
    const deploy = await fetch(`http://127.0.0.1:${port}/api/agents`, {
      method: "POST",
      headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" },
      body: JSON.stringify({ name: "compose-agent", files: [{ path: "CLAUDE.md", content: Buffer.from("You persist.").toString("base64") }] }),
    });
    expect(deploy.status).toBe(201);

    // Every container goes (like `down`), the named volumes stay; -v drops only anonymous
    // volumes, which the stand-in database image would otherwise leave behind.
    expect((await compose(["rm", "--stop", "--force", "-v"])).code).toBe(0);
    expect((await run("docker", ["ps", "-aq", "--filter", `label=com.docker.compose.project=${project}`])).stdout.trim()).toBe("");
    const up = await compose(["up", "-d"], 600_000);
    expect(up.code, up.stderr).toBe(0);
    expect(await waitHealthy(`${project}_ash_1`, 180)).toBe("healthy");
    const agents = await fetch(`http://127.0.0.1:${port}/api/agents`, { headers: { authorization: `Bearer ${apiKey}` } });
    expect(agents.status).toBe(200);
    expect(((await agents.json()) as { agents: { name: string }[] }).agents.map((a) => a.name)).toContain("compose-agent");
  });
  it("runs the agent flow, and keeps every session and message through `restart ash`, a database restart and a recreate", async () => {
    const api = (path: string, init: RequestInit & { json?: unknown } = {}) =>
      fetch(`http://127.0.0.1:${port}${path}`, {
        ...init,
        headers: { authorization: `Bearer ${apiKey}`, ...(init.json !== undefined ? { "content-type": "application/json" } : {}) },
        body: init.json !== undefined ? JSON.stringify(init.json) : init.body,
      });
    const turn = async (sessionId: string, content: string) => {
      const r = await api(`/api/sessions/${sessionId}/messages`, { method: "POST", json: { content } });
      expect(r.status).toBe(200);
      return r.text();
    };
    const waitFor = async (status: number, seconds: number) => {
      let last = 0;
      for (let i = 0; i < seconds * 2; i++) {
        last = await fetch(`http://127.0.0.1:${port}/health`).then((r) => r.status, () => 0);
        if (last === status) return last;
        await new Promise((r) => setTimeout(r, 500));
      }
      return last;
    };
    const model = await run("docker", [
      "run", "-d", "--label", "ash.test=1", "--network", `${project}_default`, "--network-alias", "model",
      "--entrypoint", "node", "-v", `${join(root, "tests/fake-model/fake-model.mjs")}:/fake/fake-model.mjs:ro`,
      image!, "/fake/fake-model.mjs", "--port", "8080", "--host", "0.0.0.0",
    ]);
    expect(model.code, model.stderr).toBe(0);
    try {
      const created = await api("/api/sessions", { method: "POST", json: { agent: "compose-agent" } });
      expect(created.status).toBe(201);
      const sessionId = ((await created.json()) as any).session.id as string;
      const first = await turn(sessionId, "#bash echo composed > c.txt && echo ok");
      expect(first).toContain("event: tool_result");
      expect(first).toContain("event: turn_complete");
      const history = async () => {
        const r = await api(`/api/sessions/${sessionId}/messages?limit=100`);
        expect(r.status).toBe(200);
        return ((await r.json()) as any).messages as unknown[];
      };
      const before = await history();
      expect(before.length).toBeGreaterThanOrEqual(3);

      expect((await compose(["restart", "ash"], 300_000)).code).toBe(0);
      expect(await waitFor(200, 120)).toBe(200);
      expect(await history()).toEqual(before);
      expect(await turn(sessionId, "#bash cat c.txt")).toContain("composed");

      // The database goes away and comes back: the server recovers by itself.
      expect((await compose(["restart", "postgres"], 300_000)).code).toBe(0);
      expect(await waitFor(200, 120)).toBe(200);
      const afterDb = await turn(sessionId, "#bash cat c.txt");
      expect(afterDb).toContain("composed");
      const kept = await history();
      expect(kept.slice(0, before.length)).toEqual(before);

      expect((await compose(["rm", "--stop", "--force", "-v"])).code).toBe(0);
      expect((await compose(["up", "-d"], 600_000)).code).toBe(0);
      expect(await waitHealthy(`${project}_ash_1`, 180)).toBe("healthy");
      expect(await history()).toEqual(kept);
      expect(await turn(sessionId, "#bash cat c.txt")).toContain("composed");
    } finally {
      await run("docker", ["rm", "-f", model.stdout.trim()]);
    }
  });
});

const cockroach = "cockroachdb/cockroach:v24.1.0";
const cockroachReason = reason ?? (has("docker", ["image", "inspect", cockroach]) ? undefined : `${cockroach} is not on this machine (no registry to pull it from)`);
if (!reason && cockroachReason) console.warn(`The CockroachDB Compose test is skipped: ${cockroachReason}.`);

describe.skipIf(cockroachReason)("docker-compose up with the generated CockroachDB file", () => {
  let dir: string;
  let port: number;
  let project: string;
  const compose = (args: string[], timeoutMs?: number) =>
    run("docker-compose", ["-f", "docker-compose.yml", ...args], { cwd: dir, env: { ...cleanEnv(), COMPOSE_PROJECT_NAME: project, ANTHROPIC_API_KEY: "x" }, timeoutMs });

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "ash-compose-crdb-"));
    port = await freePort();
    project = `ashcrdb${process.pid}`;
    const generated = await run(tsx, [main, "compose", "generate", "--image", image!, "--port", String(port)], { cwd: dir });
    expect(generated.code, generated.stderr).toBe(0);
  });

  afterAll(async () => {
    if (dir) {
      await compose(["down", "--volumes", "--remove-orphans", "--timeout", "20"]);
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("creates the ash database first, then the server becomes healthy on it", async () => {
    const up = await compose(["up", "-d"], 600_000);
    expect(up.code, up.stderr).toBe(0);
    expect(await waitHealthy(`${project}_ash_1`, 180)).toBe("healthy");
    const init = JSON.parse((await run("docker", ["inspect", `${project}_cockroach-init_1`])).stdout)[0];
    expect(init.State.ExitCode).toBe(0);
    const body = (await (await fetch(`http://127.0.0.1:${port}/health`)).json()) as { database: string };
    expect(body.database).toBe("postgres");
  });
});
