import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { agentUpload, readEvents, runServerExpectingFailure, startTestServer, type TestServer } from "../helpers/server";
import { startFakeModel } from "../fake-model/fake-model.mjs";

type Model = Awaited<ReturnType<typeof startFakeModel>>;

async function health(server: TestServer): Promise<any> {
  return (await fetch(`${server.url}/health`)).json();
}

/** Polls /health (bounded: 60 s) until `ok` holds; returns the last body. */
async function waitForHealth(server: TestServer, ok: (h: any) => boolean): Promise<any> {
  let h = await health(server);
  for (let i = 0; i < 300 && !ok(h); i++) {
    await new Promise((r) => setTimeout(r, 200));
    h = await health(server);
  }
  return h;
}

async function createSession(server: TestServer, body: Record<string, unknown>) {
  const r = await server.api("/api/sessions", { method: "POST", json: body });
  expect(r.status).toBe(201);
  return (await r.json()).session;
}

async function turn(server: TestServer, id: string, content: string) {
  const r = await server.api(`/api/sessions/${id}/messages`, { method: "POST", json: { content } });
  expect(r.status).toBe(200);
  return readEvents(r);
}

/** Ids of the sandboxes the server has on disk right now. */
async function sandboxDirs(server: TestServer): Promise<string[]> {
  return readdir(`${server.dataDir}/sandboxes`).catch(() => []);
}

describe("warm pool (ASH_WARM_POOL)", () => {
  let server: TestServer;
  let model: Model;

  beforeAll(async () => {
    model = await startFakeModel();
    server = await startTestServer({ modelUrl: model.url, env: { ASH_WARM_POOL: "fast=1", ASH_IDLE_TIMEOUT_MS: "1500" } });
    expect((await health(server)).pool.warm).toEqual({ total: 0, agents: { fast: 0 } });
    const r = await server.api("/api/agents", {
      method: "POST",
      json: agentUpload("fast", { "CLAUDE.md": "You are the fast agent. Marker: warm-marker-v1." }, { env: { AGENT_VAR: "from-agent" } }),
    });
    expect(r.status).toBe(201);
  });
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
  });

  let spareId: string;

  it("keeps a ready sandbox for the agent once it is deployed", async () => {
    const h = await waitForHealth(server, (b) => b.pool.warm.agents.fast === 1);
    expect(h.pool.warm).toEqual({ total: 1, agents: { fast: 1 } });
    expect(h.pool.live).toBe(1);
    expect(h.activeSessions).toBe(0);
    const dirs = await sandboxDirs(server);
    expect(dirs).toHaveLength(1);
    spareId = dirs[0]!;
  });

  it("gives the spare to a new session, whose first turn runs tools and sees the agent's files and env", async () => {
    const session = await createSession(server, { agent: "fast" });
    expect(session.sandboxId).toBe(spareId);
    expect(session.status).toBe("active");
    // The spare was primed (ASH_WARM_PRIME, on by default) without a model call: the gateway answered it.
    expect(model.requests).toHaveLength(0);
    const events = await turn(server, session.id, "#bash echo $AGENT_VAR && cat CLAUDE.md");
    // Its conversation starts with this message: nothing of the priming question is in it.
    expect(model.userTexts(0).filter((t) => !t.startsWith("<system-reminder>"))).toEqual(["#bash echo $AGENT_VAR && cat CLAUDE.md"]);
    expect(events.map((e) => e.event)).toContain("turn_complete");
    const result = events.find((e) => e.event === "tool_result")!.data.content as string;
    expect(result).toContain("from-agent");
    expect(result).toContain("warm-marker-v1");
    // The CLI read the agent's CLAUDE.md into what it sent the model.
    expect(JSON.stringify(model.requests.at(-1)!.body)).toContain("warm-marker-v1");
    // Its conversation is its own: a second turn remembers the first.
    const second = await turn(server, session.id, "and now?");
    expect(second.find((e) => e.event === "text_delta")).toBeTruthy();
    expect(model.userTexts().some((t) => t.includes("echo $AGENT_VAR"))).toBe(true);
    // The transcript was stored under this session: it survives a pause and resume.
    expect((await server.api(`/api/sessions/${session.id}/pause`, { method: "POST" })).status).toBe(200);
    const after = await turn(server, session.id, "still there?");
    expect(after.map((e) => e.event)).toContain("turn_complete");
    expect(model.userTexts().some((t) => t.includes("echo $AGENT_VAR"))).toBe(true);
    // Resumed from the stored transcript, still without the priming exchange.
    expect(model.userTexts().filter((t) => t.trim() === "ok")).toEqual([]);
    await server.api(`/api/sessions/${session.id}`, { method: "DELETE" });
  });

  it("refills the pool after a spare is taken, and does not evict spares for idleness", async () => {
    const h = await waitForHealth(server, (b) => b.pool.warm.agents.fast === 1 && b.activeSessions === 0);
    expect(h.pool.warm.agents.fast).toBe(1);
    const dirs = await sandboxDirs(server);
    expect(dirs).toHaveLength(1);
    expect(dirs[0]).not.toBe(spareId);
    spareId = dirs[0]!;
    // Twice the idle timeout: a session would have been evicted, the spare stays.
    await new Promise((r) => setTimeout(r, 3000));
    expect(await sandboxDirs(server)).toEqual([spareId]);
    expect((await health(server)).pool.warm.agents.fast).toBe(1);
  });

  it("starts sessions with extraEnv or mcpServers cold, with their own settings", async () => {
    const withEnv = await createSession(server, { agent: "fast", extraEnv: { MY_VAR: "mine-only" } });
    expect(withEnv.sandboxId).not.toBe(spareId);
    const events = await turn(server, withEnv.id, "#bash echo $MY_VAR-$AGENT_VAR");
    expect(events.find((e) => e.event === "tool_result")!.data.content).toContain("mine-only-from-agent");

    const withMcp = await createSession(server, { agent: "fast", mcpServers: { none: { command: "/bin/true" } } });
    expect(withMcp.sandboxId).not.toBe(spareId);
    expect((await health(server)).pool.warm.agents.fast).toBe(1);
    // The spare is still the one from before.
    expect(await sandboxDirs(server)).toContain(spareId);
    await server.api(`/api/sessions/${withEnv.id}`, { method: "DELETE" });
    await server.api(`/api/sessions/${withMcp.id}`, { method: "DELETE" });
  });

  it("applies a session's model on a spare", async () => {
    await waitForHealth(server, (b) => b.pool.warm.agents.fast === 1);
    const session = await createSession(server, { agent: "fast", model: "claude-test-model" });
    expect(session.sandboxId).toBe(spareId);
    const events = await turn(server, session.id, "which model?");
    expect(events.map((e) => e.event)).toContain("turn_complete");
    expect(model.requests.at(-1)!.body.model).toBe("claude-test-model");
    await server.api(`/api/sessions/${session.id}`, { method: "DELETE" });
  });

  it("replaces the spare when the agent is redeployed", async () => {
    let h = await waitForHealth(server, (b) => b.pool.warm.agents.fast === 1 && b.activeSessions === 0);
    const old = (await sandboxDirs(server))[0]!;
    const r = await server.api("/api/agents", {
      method: "POST",
      json: agentUpload("fast", { "CLAUDE.md": "You are the fast agent. Marker: warm-marker-v2." }, { env: { AGENT_VAR: "from-agent" } }),
    });
    expect(r.status).toBe(201);
    // Bounded wait until the old spare is gone and a new one is ready.
    let dirs: string[] = [];
    for (let i = 0; i < 300; i++) {
      dirs = await sandboxDirs(server);
      h = await health(server);
      if (!dirs.includes(old) && dirs.length === 1 && h.pool.warm.agents.fast === 1) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(dirs).not.toContain(old);
    expect(dirs).toHaveLength(1);
    expect(h.pool.warm.agents.fast).toBe(1);
    const session = await createSession(server, { agent: "fast" });
    expect(session.sandboxId).toBe(dirs[0]);
    const events = await turn(server, session.id, "#bash cat CLAUDE.md");
    expect(events.find((e) => e.event === "tool_result")!.data.content).toContain("warm-marker-v2");
    expect(JSON.stringify(model.requests.at(-1)!.body)).toContain("warm-marker-v2");
    expect(JSON.stringify(model.requests.at(-1)!.body)).not.toContain("warm-marker-v1");
    await server.api(`/api/sessions/${session.id}`, { method: "DELETE" });
  });

  it("makes the next spare between turns, not during the first turn of the session that took the last one", async () => {
    await waitForHealth(server, (b) => b.pool.warm.agents.fast === 1 && b.activeSessions === 0);
    const [spare] = await sandboxDirs(server);
    const session = await createSession(server, { agent: "fast" });
    expect(session.sandboxId).toBe(spare);
    const sent = performance.now();
    let done = false;
    const running = turn(server, session.id, "#bash sleep 2; echo slept").finally(() => (done = true));
    // While that turn runs (and for less than the longest a spare waits for a pause), no new spare's
    // sandbox is made: only the session's own folder is there.
    const seen = new Set<number>();
    while (!done && performance.now() - sent < 3000) {
      seen.add((await sandboxDirs(server)).length);
      await new Promise((r) => setTimeout(r, 50));
    }
    expect([...seen]).toEqual([1]);
    const events = await running;
    expect(events.find((e) => e.event === "tool_result")!.data.content).toContain("slept");
    // Once the turn is over, the pool fills again (the session itself may be asleep by then: its idle timeout is short here).
    const h = await waitForHealth(server, (b) => b.pool.warm.agents.fast === 1);
    expect(h.pool.warm.agents.fast).toBe(1);
    expect((await sandboxDirs(server)).filter((dir) => dir !== spare)).toHaveLength(1);
    await server.api(`/api/sessions/${session.id}`, { method: "DELETE" });
  });

  it("leaves no spare behind after a kill -9: the restart removes it and makes a fresh one", async () => {
    const before = await waitForHealth(server, (b) => b.pool.warm.agents.fast === 1);
    expect(before.pool.warm.agents.fast).toBe(1);
    const old = await sandboxDirs(server);
    expect(old.length).toBeGreaterThanOrEqual(1);
    await server.kill();
    await server.restart();
    const after = await waitForHealth(server, (b) => b.pool.warm.agents.fast === 1);
    expect(after.pool.warm.agents.fast).toBe(1);
    const dirs = await sandboxDirs(server);
    for (const id of old) expect(dirs).not.toContain(id);
    expect(dirs).toHaveLength(1);
  });
});

describe("warm pool at the sandbox cap", () => {
  let server: TestServer;
  let model: Model;

  beforeAll(async () => {
    model = await startFakeModel();
    server = await startTestServer({ modelUrl: model.url, env: { ASH_WARM_POOL: "fast=1", ASH_MAX_SANDBOXES: "2" } });
    await server.api("/api/agents", { method: "POST", json: agentUpload("fast") });
    await server.api("/api/agents", { method: "POST", json: agentUpload("other") });
  });
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
  });

  it("gives the spare's slot to real sessions before anything else", async () => {
    await waitForHealth(server, (b) => b.pool.warm.agents.fast === 1);
    // Two busy sessions of another agent: the second needs the spare's slot.
    const a = await createSession(server, { agent: "other" });
    const b = await createSession(server, { agent: "other" });
    const slowA = server.api(`/api/sessions/${a.id}/messages`, { method: "POST", json: { content: "#slow 3000" } });
    const slowB = server.api(`/api/sessions/${b.id}/messages`, { method: "POST", json: { content: "#slow 3000" } });
    const [ra, rb] = await Promise.all([slowA, slowB]);
    expect(ra.status).toBe(200);
    expect(rb.status).toBe(200);
    const h = await health(server);
    expect(h.pool.live).toBeLessThanOrEqual(2);
    expect(h.pool.warm.agents.fast).toBe(0);
    expect((await readEvents(ra)).map((e) => e.event)).toContain("turn_complete");
    expect((await readEvents(rb)).map((e) => e.event)).toContain("turn_complete");
    // While both are busy the spare does not come back (it would have no slot).
    expect((await health(server)).pool.live).toBeLessThanOrEqual(2);
    // Ending a session frees a slot and the spare returns.
    await server.api(`/api/sessions/${a.id}`, { method: "DELETE" });
    const after = await waitForHealth(server, (x) => x.pool.warm.agents.fast === 1);
    expect(after.pool.warm.agents.fast).toBe(1);
    expect(after.pool.live).toBe(2);
  });
});

describe("ASH_WARM_POOL values", () => {
  it.each([
    ["fast", /ASH_WARM_POOL must be a comma-separated list of agent=count, got "fast"/],
    ["fast=two", /ASH_WARM_POOL must be a comma-separated list/],
    ["fast=0", /ASH_WARM_POOL count for "fast" must be between 1 and 100, got 0/],
    ["fast=1,fast=2", /ASH_WARM_POOL names agent "fast" twice/],
  ])("refuses %s with a line that names the variable", async (value, message) => {
    const dataDir = await mkdtemp(join(tmpdir(), "ash-warm-"));
    try {
      const { code, output } = await runServerExpectingFailure({ ASH_WARM_POOL: value, ASH_HOST: "127.0.0.1", ASH_PORT: "0", ASH_DATA_DIR: dataDir, ASH_API_KEY: "k".repeat(16) });
      expect(code).toBe(2);
      expect(output).toMatch(message);
      // Refused before anything was made.
      expect(await readdir(dataDir)).toEqual([]);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

describe("warm spares an agent asks for (PATCH /api/agents/:name/config)", () => {
  let server: TestServer;
  let model: Model;

  beforeAll(async () => {
    model = await startFakeModel();
    // No ASH_WARM_POOL and no spares by demand: only the agent's own setting makes them.
    server = await startTestServer({ modelUrl: model.url, env: { ASH_WARM_DEMAND_MS: "0" } });
    expect((await server.api("/api/agents", { method: "POST", json: agentUpload("asks") })).status).toBe(201);
  });
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
  });

  it("keeps as many spares as the agent's warmSpares says, and none once it is 0", async () => {
    expect((await health(server)).pool.warm.total).toBe(0);
    const r = await server.api("/api/agents/asks/config", { method: "PATCH", json: { warmSpares: 1 } });
    expect(r.status).toBe(200);
    const h = await waitForHealth(server, (b) => b.pool.warm.agents.asks === 1);
    expect(h.pool.warm).toEqual({ total: 1, agents: { asks: 1 } });
    expect((await server.api("/api/agents/asks/config", { method: "PATCH", json: { warmSpares: 0 } })).status).toBe(200);
    const after = await waitForHealth(server, (b) => b.pool.warm.total === 0);
    expect(after.pool.warm.total).toBe(0);
  });
});
