import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdir, symlink, writeFile, readdir, stat, readFile } from "node:fs/promises";
import { join } from "node:path";
import { agentUpload, startTestServer, type TestServer } from "../helpers/server";
import { backends } from "../helpers/backends";

describe.each(backends)("HTTP API on $name", (backend) => {
  let server: TestServer;
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    const prepared = await backend.prepare();
    cleanup = prepared.cleanup;
    server = await startTestServer({ env: prepared.env });
  });
  afterAll(async () => {
    await server?.dispose();
    await cleanup?.();
  });

  const agentNames = async () => ((await (await server.api("/api/agents")).json()) as any).agents.map((a: any) => a.name);

  it("answers /health without a key, with the database and limits", async () => {
    const r = await fetch(`${server.url}/health`);
    expect(r.status).toBe(200);
    const body = (await r.json()) as any;
    expect(body).toMatchObject({ status: "ok", version: expect.any(String), database: backend.name, activeSessions: 0 });
    expect(body.limits).toBeTypeOf("object");
    expect(body.pool).toMatchObject({ max: expect.any(Number) });
  });

  it("refuses /api without the right key, in the contract's error shape", async () => {
    const none = await fetch(`${server.url}/api/agents`);
    expect(none.status).toBe(401);
    expect(await none.json()).toEqual({ error: expect.stringMatching(/key/i), statusCode: 401 });
    const wrong = await server.api("/api/agents", { method: "POST", headers: { authorization: "Bearer nope-nope-nope" }, json: agentUpload("sneaky") });
    expect(wrong.status).toBe(401);
    expect(await agentNames()).not.toContain("sneaky");
  });

  it("deploys an agent, makes a new version on redeploy, lists, reads and deletes it", async () => {
    const first = await server.api("/api/agents", { method: "POST", json: agentUpload("helper", { "data/notes.txt": "one" }, { env: { SECRET_TOKEN: "abc" } }) });
    expect(first.status).toBe(201);
    const { agent } = await first.json();
    expect(agent).toMatchObject({ name: "helper", version: 1, env: { SECRET_TOKEN: "***" } });
    expect(JSON.stringify(agent)).not.toContain("abc");
    expect(await readFile(join(server.dataDir, "agents/helper/data/notes.txt"), "utf8")).toBe("one");

    const second = await server.api("/api/agents", { method: "POST", json: agentUpload("helper", { "data/notes.txt": "two" }) });
    expect((await second.json()).agent.version).toBe(2);
    expect(await readFile(join(server.dataDir, "agents/helper/data/notes.txt"), "utf8")).toBe("two");

    expect(await agentNames()).toContain("helper");
    expect((await (await server.api("/api/agents/helper")).json()).agent.version).toBe(2);
    const del = await server.api("/api/agents/helper", { method: "DELETE" });
    expect(del.status).toBe(200);
    expect((await server.api("/api/agents/helper")).status).toBe(404);
    await expect(stat(join(server.dataDir, "agents/helper"))).rejects.toThrow();
  });

  it.each([
    ["malformed JSON", { body: "{not json", headers: { "content-type": "application/json" } }, 400, /not valid JSON/],
    ["a wrong type", { json: { name: 42, files: [] } }, 400, /name/],
    ["an unknown field", { json: { ...agentUpload("typo"), flies: [] } }, 400, /Unknown field.*flies/],
    ["a bad name", { json: agentUpload("bad name!") }, 400, /name/],
    ["a path with ..", { json: agentUpload("evil", { "../escape.txt": "x" }) }, 400, /\.\./],
    ["an absolute path", { json: agentUpload("evil", { "/etc/cron.d/x": "x" }) }, 400, /relative/],
    ["no CLAUDE.md", { json: { name: "nope", files: [{ path: "README.md", content: "eA==" }] } }, 422, /CLAUDE\.md/],
    ["content that is not base64", { json: { name: "nope", files: [{ path: "CLAUDE.md", content: "%%%" }] } }, 400, /base64/],
  ])("rejects an upload with %s and writes nothing", async (_what, init, status, message) => {
    const before = await agentNames();
    const r = await server.api("/api/agents", { method: "POST", ...(init as any) });
    expect(r.status).toBe(status);
    const body = await r.json();
    expect(body.statusCode).toBe(status);
    expect(body.error).toMatch(message);
    expect(await agentNames()).toEqual(before);
    const onDisk = await readdir(join(server.dataDir, "agents")).catch(() => []);
    expect(onDisk.filter((n) => !n.startsWith(".")).sort()).toEqual([...before].sort());
  });

  it("rejects a 50 MB body with 413 and keeps serving", async () => {
    const big = "A".repeat(50 * 1024 * 1024);
    const r = await server.api("/api/agents", { method: "POST", json: { name: "huge", files: [{ path: "CLAUDE.md", content: big }] } });
    expect(r.status).toBe(413);
    expect((await r.json()).error).toMatch(/limit/);
    expect(await agentNames()).not.toContain("huge");
    expect((await fetch(`${server.url}/health`)).status).toBe(200);
  });

  it("deploys from a folder inside the data directory, refusing symlinks that leave it", async () => {
    const folder = join(server.dataDir, "incoming", "byfolder");
    await mkdir(join(folder, ".claude"), { recursive: true });
    await writeFile(join(folder, "CLAUDE.md"), "From a folder.");
    await writeFile(join(folder, ".claude", "settings.json"), "{}");
    const ok = await server.api("/api/agents", { method: "POST", json: { name: "byfolder", path: "incoming/byfolder" } });
    expect(ok.status).toBe(201);

    const evil = join(server.dataDir, "incoming", "leaky");
    await mkdir(evil, { recursive: true });
    await writeFile(join(evil, "CLAUDE.md"), "x");
    await symlink("/etc/passwd", join(evil, "passwd"));
    const bad = await server.api("/api/agents", { method: "POST", json: { name: "leaky", path: "incoming/leaky" } });
    expect(bad.status).toBe(400);
    expect((await bad.json()).error).toMatch(/symlink/);
    const outside = await server.api("/api/agents", { method: "POST", json: { name: "outside", path: "../../etc" } });
    expect(outside.status).toBe(400);
    expect(await agentNames()).not.toContain("leaky");
  });

  it("answers 404 for unknown agents and sessions, listing what is deployed", async () => {
    await server.api("/api/agents", { method: "POST", json: agentUpload("known") });
    const r = await server.api("/api/sessions", { method: "POST", json: { agent: "unknown-agent" } });
    expect(r.status).toBe(404);
    expect((await r.json()).error).toMatch(/Deployed agents: .*known/);
    for (const path of ["/api/sessions/nope", "/api/sessions/nope/messages", "/api/sessions/nope/events"]) {
      expect((await server.api(path)).status).toBe(404);
    }
    expect((await server.api("/api/sessions/nope/pause", { method: "POST" })).status).toBe(404);
  });

  it("validates session creation and list queries", async () => {
    const bad = await server.api("/api/sessions", { method: "POST", json: { agent: "known", permissionMode: "yolo" } });
    expect(bad.status).toBe(400);
    expect((await bad.json()).error).toMatch(/permissionMode/);
    const unknown = await server.api("/api/sessions", { method: "POST", json: { agnet: "known" } });
    expect(unknown.status).toBe(400);
    expect((await server.api("/api/sessions?limit=0")).status).toBe(400);
    expect((await server.api("/api/sessions?cursor=garbage")).status).toBe(400);
    const list = await (await server.api("/api/sessions")).json();
    expect(list).toMatchObject({ sessions: [], nextCursor: null });
  });

  it("serves its API reference as OpenAPI", async () => {
    const doc = (await (await fetch(`${server.url}/openapi.json`)).json()) as any;
    expect(doc.openapi).toMatch(/^3\./);
    expect(Object.keys(doc.paths)).toContain("/api/sessions/{id}/messages");
  });
});
