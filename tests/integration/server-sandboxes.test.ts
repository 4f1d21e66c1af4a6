import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { agentUpload, readEvents, startTestServer, type TestServer } from "../helpers/server";
import { startFakeModel } from "../fake-model/fake-model.mjs";
import { countClaudeProcesses, sampleMax } from "../helpers/processes";

describe("sandbox pool and eviction", () => {
  let server: TestServer;
  let model: Awaited<ReturnType<typeof startFakeModel>>;

  beforeAll(async () => {
    model = await startFakeModel();
    // No demand spares: this suite counts the sessions' own sandboxes.
    server = await startTestServer({ modelUrl: model.url, env: { ASH_MAX_SANDBOXES: "2", ASH_IDLE_TIMEOUT_MS: "1500", ASH_WARM_DEMAND_MS: "0" } });
    await server.api("/api/agents", { method: "POST", json: agentUpload("pooled") });
  });
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
  });

  const turn = async (id: string, content: string) => {
    const r = await server.api(`/api/sessions/${id}/messages`, { method: "POST", json: { content } });
    expect(r.status).toBe(200);
    return readEvents(r);
  };
  const health = async (): Promise<any> => (await fetch(`${server.url}/health`)).json();

  it("runs 5 sessions in turn on 2 sandboxes, each keeping its memory and files", async () => {
    const sampler = sampleMax(() => countClaudeProcesses(server.dataDir));
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const r = await server.api("/api/sessions", { method: "POST", json: { agent: "pooled" } });
      expect(r.status).toBe(201);
      ids.push((await r.json()).session.id);
    }
    for (let round = 0; round < 2; round++) {
      for (const [i, id] of ids.entries()) {
        const events = await turn(id, `#bash echo session${i}-round${round} >> notes.txt && cat notes.txt`);
        expect(events.map((e) => e.event)).toContain("turn_complete");
        const result = events.find((e) => e.event === "tool_result")!.data.content as string;
        const expected = Array.from({ length: round + 1 }, (_, r) => `session${i}-round${r}`).join("\n");
        expect(result.trim()).toBe(expected);
        // The model saw this session's earlier turns, and only this session's.
        const texts = model.userTexts();
        if (round === 1) expect(texts.some((t) => t.includes(`session${i}-round0`))).toBe(true);
        expect(texts.some((t) => t.includes(`session${(i + 1) % 5}-round`))).toBe(false);
        expect((await health()).activeSandboxes).toBeLessThanOrEqual(2);
      }
    }
    expect(await sampler.stop()).toBeLessThanOrEqual(2);
  });

  it("evicts idle sandboxes after the idle timeout and resumes them on the next message", async () => {
    const { session } = await (await server.api("/api/sessions", { method: "POST", json: { agent: "pooled" } })).json();
    await turn(session.id, "#bash echo before-eviction > state.txt");
    const sandboxId = (await (await server.api(`/api/sessions/${session.id}`)).json()).session.sandboxId;
    expect(sandboxId).toBeTruthy();
    // Bounded wait for the sweeper (timeout 1.5 s, sweeps every second).
    let h = await health();
    for (let i = 0; i < 100 && h.activeSandboxes > 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
      h = await health();
    }
    expect(h.activeSandboxes).toBe(0);
    expect(await countClaudeProcesses(server.dataDir)).toBe(0);
    expect(await readdir(join(server.dataDir, "sandboxes"))).not.toContain(sandboxId);
    // Its folder went to the trash at once and is removed in the background (bounded wait).
    const trashed = async () => (await readdir(join(server.dataDir, "trash")).catch(() => [] as string[])).filter((name) => name.startsWith(`${sandboxId}.`));
    for (let i = 0; i < 100 && (await trashed()).length > 0; i++) await new Promise((r) => setTimeout(r, 100));
    expect(await trashed()).toEqual([]);
    expect((await (await server.api(`/api/sessions/${session.id}`)).json()).session.sandboxId).toBeNull();

    const events = await turn(session.id, "#bash cat state.txt");
    expect(events.find((e) => e.event === "tool_result")!.data.content).toContain("before-eviction");
    expect(model.userTexts().some((t) => t.includes("echo before-eviction"))).toBe(true);
  });

  it("answers 503 with Retry-After when every sandbox is busy", async () => {
    const a = (await (await server.api("/api/sessions", { method: "POST", json: { agent: "pooled" } })).json()).session;
    const b = (await (await server.api("/api/sessions", { method: "POST", json: { agent: "pooled" } })).json()).session;
    const slowA = await server.api(`/api/sessions/${a.id}/messages`, { method: "POST", json: { content: "#slow 4000" } });
    const slowB = await server.api(`/api/sessions/${b.id}/messages`, { method: "POST", json: { content: "#slow 4000" } });
    const third = await server.api("/api/sessions", { method: "POST", json: { agent: "pooled" } });
    expect(third.status).toBe(503);
    expect(third.headers.get("retry-after")).toMatch(/^\d+$/);
    expect((await third.json()).error).toMatch(/busy/);
    // Nothing was created by the refused request.
    const sessions = (await (await server.api("/api/sessions?limit=500")).json()).sessions;
    expect(sessions.length).toBe(8);
    await Promise.all([slowA.text(), slowB.text()]);
    expect((await server.api("/api/sessions", { method: "POST", json: { agent: "pooled" } })).status).toBe(201);
  });
});
