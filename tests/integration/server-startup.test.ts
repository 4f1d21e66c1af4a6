import { afterAll, describe, expect, it } from "vitest";
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runServerExpectingFailure, startTestServer, type TestServer } from "../helpers/server";
import { freePort } from "../helpers/ports";

describe("start-up", () => {
  const dirs: string[] = [];
  const tempDir = async () => {
    const dir = await mkdtemp(join(tmpdir(), "ash-startup-"));
    dirs.push(dir);
    return dir;
  };
  afterAll(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  it.each([
    ["ASH_PORT", "not-a-port"],
    ["ASH_PORT", "70000"],
    ["ASH_MAX_SANDBOXES", "0"],
    ["ASH_IDLE_TIMEOUT_MS", "-5"],
    ["ASH_DATABASE_URL", "mysql://nope"],
    ["ANTHROPIC_BASE_URL", "not a url"],
    ["ASH_SANDBOX_STRICT", "maybe"],
  ])("stops with one line naming %s=%s", async (name, value) => {
    const dataDir = await tempDir();
    const { code, output } = await runServerExpectingFailure({ ASH_DATA_DIR: dataDir, ASH_API_KEY: "k".repeat(16), [name]: value });
    expect(code).not.toBe(0);
    const lines = output.trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(name);
    // Nothing was created.
    await expect(stat(join(dataDir, "ash.db"))).rejects.toThrow();
  });

  it("refuses a port that is taken, saying so", async () => {
    const port = await freePort();
    const blocker = createServer().listen(port, "127.0.0.1");
    await new Promise((r) => blocker.once("listening", r));
    try {
      const { code, output } = await runServerExpectingFailure({ ASH_DATA_DIR: await tempDir(), ASH_HOST: "127.0.0.1", ASH_PORT: String(port), ASH_API_KEY: "k".repeat(16) });
      expect(code).not.toBe(0);
      expect(output).toContain(`Port ${port} is already in use`);
    } finally {
      blocker.close();
    }
  });

  it("keeps the data folder and the database readable by their owner only, also a folder that was open before", async () => {
    const dataDir = await tempDir();
    await chmod(dataDir, 0o755);
    // A database from an earlier version, created world-readable.
    await writeFile(join(dataDir, "ash.db"), "");
    await chmod(join(dataDir, "ash.db"), 0o644);
    const server = await startTestServer({ dataDir });
    try {
      const agent = await server.api("/api/agents", { method: "POST", json: { name: "perm-agent", files: [{ path: "CLAUDE.md", content: Buffer.from("hi").toString("base64") }], env: { SECRET: "s" } } });
      expect(agent.status).toBe(201);
      expect((await stat(dataDir)).mode & 0o777).toBe(0o700);
      for (const name of ["ash.db", "ash.db-wal", "ash.db-shm", "server-id"]) {
        const info = await stat(join(dataDir, name)).catch(() => undefined);
        expect(info, name).toBeDefined();
        expect(info!.mode & 0o777, name).toBe(0o600);
      }
    } finally {
      await server.stop();
    }
  });

  describe("first-boot key", () => {
    let server: TestServer;
    afterAll(async () => server?.dispose());

    it("generates a key once, writes it 0600, and accepts only it", async () => {
      server = await startTestServer({ env: { ASH_API_KEY: "" } });
      const file = join(server.dataDir, "initial-api-key");
      const key = (await readFile(file, "utf8")).trim();
      expect(key.length).toBeGreaterThanOrEqual(32);
      expect((await stat(file)).mode & 0o777).toBe(0o600);
      expect((await fetch(`${server.url}/api/agents`, { headers: { authorization: `Bearer ${key}` } })).status).toBe(200);
      expect((await fetch(`${server.url}/api/agents`, { headers: { authorization: `Bearer ${key}x` } })).status).toBe(401);
      // The database keeps only a hash.
      const db = await readFile(join(server.dataDir, "ash.db")).catch(() => Buffer.alloc(0));
      expect(db.includes(Buffer.from(key))).toBe(false);

      const mtime = (await stat(file)).mtimeMs;
      await server.restart({ ASH_API_KEY: "" });
      expect((await readFile(file, "utf8")).trim()).toBe(key);
      expect((await stat(file)).mtimeMs).toBe(mtime);
      expect((await fetch(`${server.url}/api/agents`, { headers: { authorization: `Bearer ${key}` } })).status).toBe(200);
    });

    it("is the operator's alone: an admin key of its tenant cannot see, throttle or revoke it", async () => {
      const key = (await readFile(join(server.dataDir, "initial-api-key"), "utf8")).trim();
      const as = (k: string, path: string, init: { method?: string; json?: unknown } = {}) =>
        fetch(`${server.url}${path}`, { method: init.method ?? "GET", headers: { authorization: `Bearer ${k}`, "content-type": "application/json" }, body: init.json === undefined ? undefined : JSON.stringify(init.json) });
      const made = await as(key, "/api/api-keys", { method: "POST", json: { scope: "admin", tenant: "default" } });
      expect(made.status).toBe(201);
      const admin = ((await made.json()) as { key: string }).key;
      const listed = ((await (await as(admin, "/api/api-keys")).json()) as { keys: Array<{ id: string }> }).keys;
      expect(listed.map((k) => k.id)).not.toContain("initial");
      expect((await as(admin, "/api/api-keys/initial", { method: "PATCH", json: { limits: { requestsPerMinute: 1 } } })).status).toBe(404);
      expect((await as(admin, "/api/api-keys/initial", { method: "DELETE" })).status).toBe(404);
      // Untouched: the operator still manages tenants, unthrottled.
      for (let i = 0; i < 3; i++) expect((await as(key, "/api/tenants")).status).toBe(200);
      expect(((await (await as(key, "/api/api-keys")).json()) as { keys: Array<{ id: string }> }).keys.find((k) => k.id === "initial")).toMatchObject({ scope: "operator", revoked: false, limits: {} });
    });

    it("lets ASH_API_KEY replace the generated key", async () => {
      await server.restart({ ASH_API_KEY: "operator-chosen-key" });
      const old = (await readFile(join(server.dataDir, "initial-api-key"), "utf8")).trim();
      expect((await fetch(`${server.url}/api/agents`, { headers: { authorization: "Bearer operator-chosen-key" } })).status).toBe(200);
      expect((await fetch(`${server.url}/api/agents`, { headers: { authorization: `Bearer ${old}` } })).status).toBe(401);
    });
  });
});
