import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { agentUpload, parseFrames, readEvents, startTestServer, type TestServer } from "../helpers/server";
import { backends } from "../helpers/backends";
import { startFakeModel } from "../fake-model/fake-model.mjs";

type Frame = { id: number; event: string; data: any };

/** Reads an event stream frame by frame, so a test can answer in the middle of a turn. */
function frames(response: Response) {
  const reader = response.body!.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  const seen: Frame[] = [];
  let ended = false;
  return {
    seen,
    /** Reads until a frame of `type` arrives (or the stream ends); the frame, or undefined. */
    async until(type: string): Promise<Frame | undefined> {
      const already = seen.find((f) => f.event === type);
      if (already) return already;
      // Bounded: a turn's stream is far shorter than this many chunks.
      for (let i = 0; i < 100_000 && !ended; i++) {
        const { value, done } = await reader.read();
        if (done) {
          ended = true;
          break;
        }
        buffer += decoder.decode(value, { stream: true });
        const cut = buffer.lastIndexOf("\n\n");
        if (cut < 0) continue;
        const fresh = parseFrames(buffer.slice(0, cut + 2));
        buffer = buffer.slice(cut + 2);
        seen.push(...fresh);
        const hit = fresh.find((f) => f.event === type);
        if (hit) return hit;
      }
      return undefined;
    },
  };
}

// Long enough for a loaded machine's first model answer, short enough to outwait in one test.
const IDLE_MS = 15_000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe.each(backends)("tool confirmation on $name", (backend) => {
  let server: TestServer;
  let model: Awaited<ReturnType<typeof startFakeModel>>;
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    model = await startFakeModel();
    const prepared = await backend.prepare();
    cleanup = prepared.cleanup;
    // A short idle watchdog: a person who takes longer than it to decide must not end the turn.
    server = await startTestServer({ env: { ...prepared.env, ASH_TURN_IDLE_TIMEOUT_MS: String(IDLE_MS) }, modelUrl: model.url });
    expect((await server.api("/api/agents", { method: "POST", json: agentUpload("plain") })).status).toBe(201);
    // The agent's own policy: its sessions ask before Bash runs.
    expect((await server.api("/api/agents", { method: "POST", json: agentUpload("careful", {}, { confirmTools: ["Bash"] }) })).status).toBe(201);
  });
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
    await cleanup?.();
  });

  const newSession = async (agent: string, extra: Record<string, unknown> = {}) => {
    const r = await server.api("/api/sessions", { method: "POST", json: { agent, ...extra } });
    expect(r.status).toBe(201);
    return (await r.json()).session as { id: string };
  };
  const send = (id: string, content: string) => server.api(`/api/sessions/${id}/messages`, { method: "POST", json: { content } });
  const decide = (id: string, body: Record<string, unknown>) => server.api(`/api/sessions/${id}/tool-confirmations`, { method: "POST", json: body });
  const exists = async (id: string, path: string) => (await server.api(`/api/sessions/${id}/files/${path}?format=json`)).status === 200;

  it("allow: the held Bash command runs after the decision and its output is the tool result", async () => {
    const session = await newSession("careful");
    const stream = frames(await send(session.id, "#bash echo allowed-run > made.txt && cat made.txt"));
    const asked = await stream.until("tool_confirmation");
    expect(asked?.data).toMatchObject({ name: "Bash", input: { command: expect.stringContaining("allowed-run") } });
    const toolUse = stream.seen.find((f) => f.event === "tool_use")!;
    expect(asked!.data.toolUseId).toBe(toolUse.data.id);
    // Nothing ran yet: the CLI waits for the decision.
    expect(await exists(session.id, "made.txt")).toBe(false);
    // A reconnecting reader sees the question too.
    const stored = (await (await server.api(`/api/sessions/${session.id}/events?type=tool_confirmation`)).json()).events;
    expect(stored).toMatchObject([{ type: "tool_confirmation", data: { toolUseId: asked!.data.toolUseId, name: "Bash" } }]);

    // The person thinks for longer than the idle watchdog allows the model: the turn still waits.
    await sleep(IDLE_MS + 1500);
    expect((await decide(session.id, { toolUseId: "toolu_other", decision: "allow" })).status).toBe(404);
    const r = await decide(session.id, { toolUseId: asked!.data.toolUseId, decision: "allow" });
    expect(r.status).toBe(200);
    expect(await r.json()).toMatchObject({ toolUseId: asked!.data.toolUseId, name: "Bash", decision: "allow" });
    await stream.until("done");
    // Every reader learns the decision, before what came of it.
    const decided = stream.seen.findIndex((f) => f.event === "tool_decision");
    expect(stream.seen[decided]?.data).toEqual({ toolUseId: asked!.data.toolUseId, decision: "allow" });
    expect(decided).toBeLessThan(stream.seen.findIndex((f) => f.event === "tool_result"));
    const result = stream.seen.find((f) => f.event === "tool_result")!;
    expect(result.data).toMatchObject({ tool_use_id: asked!.data.toolUseId, is_error: false });
    expect(JSON.stringify(result.data.content)).toContain("allowed-run");
    expect(stream.seen.map((f) => f.event)).toContain("turn_complete");
    expect(await exists(session.id, "made.txt")).toBe(true);

    // Deciding it again is a conflict and changes nothing.
    const again = await decide(session.id, { toolUseId: asked!.data.toolUseId, decision: "deny" });
    expect(again.status).toBe(409);
    expect((await again.json()).error).toMatch(/already decided/);
  });

  it("deny: the command never runs and the model is told it was denied, with the user's message", async () => {
    const session = await newSession("plain", { confirmTools: "all" });
    const stream = frames(await send(session.id, "#bash touch denied.txt && echo ran"));
    const asked = await stream.until("tool_confirmation");
    expect(asked?.data.name, JSON.stringify(stream.seen.filter((f) => f.event === "error"))).toBe("Bash");

    // Bad decisions first: each a clear error, the tool still waiting.
    const unknown = await decide(session.id, { toolUseId: "toolu_nope", decision: "allow" });
    expect(unknown.status).toBe(404);
    expect((await unknown.json()).error).toContain(asked!.data.toolUseId);
    expect((await decide(session.id, { toolUseId: asked!.data.toolUseId, decision: "maybe" })).status).toBe(400);
    expect((await decide(session.id, { toolUseId: asked!.data.toolUseId })).status).toBe(400);
    expect((await decide("00000000-0000-0000-0000-000000000000", { toolUseId: asked!.data.toolUseId, decision: "allow" })).status).toBe(404);

    const r = await decide(session.id, { toolUseId: asked!.data.toolUseId, decision: "deny", message: "not in this folder" });
    expect(r.status).toBe(200);
    await stream.until("done");
    const result = stream.seen.find((f) => f.event === "tool_result")!;
    expect(result.data).toMatchObject({ tool_use_id: asked!.data.toolUseId, is_error: true });
    expect(JSON.stringify(result.data.content)).toContain("not in this folder");
    expect(await exists(session.id, "denied.txt")).toBe(false);
    expect((await decide(session.id, { toolUseId: asked!.data.toolUseId, decision: "allow" })).status).toBe(409);
    expect(await exists(session.id, "denied.txt")).toBe(false);
  });

  it("interrupt while a tool waits ends the turn cleanly, the tool not run, and the session goes on", async () => {
    const session = await newSession("careful");
    const stream = frames(await send(session.id, "#bash touch interrupted.txt"));
    const asked = await stream.until("tool_confirmation");
    expect(asked).toBeDefined();
    const r = await server.api(`/api/sessions/${session.id}/interrupt`, { method: "POST" });
    expect(await r.json()).toEqual({ interrupted: true });
    await stream.until("done");
    expect(stream.seen.find((f) => f.event === "error")?.data).toMatchObject({ code: "interrupted" });
    expect(await exists(session.id, "interrupted.txt")).toBe(false);
    expect((await decide(session.id, { toolUseId: asked!.data.toolUseId, decision: "allow" })).status).toBe(409);
    expect(await exists(session.id, "interrupted.txt")).toBe(false);

    const next = await readEvents(await send(session.id, "hello again"));
    expect(next.map((e) => e.event)).toContain("turn_complete");
  });

  it("ending the session while a tool waits denies it: the stream finishes and nothing ran", async () => {
    const session = await newSession("careful");
    const stream = frames(await send(session.id, "#bash touch ended.txt"));
    const asked = await stream.until("tool_confirmation");
    expect(asked).toBeDefined();
    expect((await server.api(`/api/sessions/${session.id}`, { method: "DELETE" })).status).toBe(200);
    expect(await stream.until("done")).toBeDefined();
    // The CLI may report the denial before it is stopped, with our reason or, when its control channel
    // closed first, with its own rejection; a result that is anything else means the tool ran.
    for (const result of stream.seen.filter((f) => f.event === "tool_result")) {
      expect(result.data).toMatchObject({ tool_use_id: asked!.data.toolUseId, is_error: true });
      expect(JSON.stringify(result.data.content)).toMatch(/The session has ended\.|doesn't want to proceed with this tool use/);
    }
    expect((await decide(session.id, { toolUseId: asked!.data.toolUseId, decision: "allow" })).status).toBe(410);
    const files = await (await server.api(`/api/sessions/${session.id}/files`)).json();
    expect(JSON.stringify(files)).not.toContain("ended.txt");
  });

  it("holds a tool the CLI would run without asking (a read) when the policy names it", async () => {
    const session = await newSession("plain", { confirmTools: ["Read"] });
    const stream = frames(await send(session.id, '#tool Read {"file_path":"CLAUDE.md"}'));
    const asked = await stream.until("tool_confirmation");
    expect(asked?.data, JSON.stringify(stream.seen.filter((f) => f.event === "error"))).toMatchObject({ name: "Read", input: { file_path: expect.stringMatching(/CLAUDE\.md$/) } });
    expect((await decide(session.id, { toolUseId: asked!.data.toolUseId, decision: "allow" })).status).toBe(200);
    await stream.until("done");
    expect(JSON.stringify(stream.seen.find((f) => f.event === "tool_result")?.data.content)).toContain("test agent");
  });

  it("a tool the policy does not name, and a session without a policy, run at once as before", async () => {
    const named = await newSession("plain", { confirmTools: ["Write"] });
    const events = await readEvents(await send(named.id, "#bash echo free > free.txt && cat free.txt"));
    expect(events.map((e) => e.event)).not.toContain("tool_confirmation");
    expect(JSON.stringify(events.find((e) => e.event === "tool_result")?.data.content)).toContain("free");

    const plain = await newSession("plain");
    const plainEvents = await readEvents(await send(plain.id, "#bash echo plain > p.txt && cat p.txt"));
    expect(plainEvents.map((e) => e.event)).not.toContain("tool_confirmation");
    expect(plainEvents.find((e) => e.event === "tool_result")?.data).toMatchObject({ is_error: false });
    expect(await exists(plain.id, "p.txt")).toBe(true);
    // No turn waits: a decision is for nothing.
    expect((await decide(plain.id, { toolUseId: "toolu_x", decision: "allow" })).status).toBe(404);
  });

  it("rejects a bad policy and names it on the agent", async () => {
    const before = (await (await server.api("/api/sessions")).json()).sessions.length;
    expect((await server.api("/api/sessions", { method: "POST", json: { agent: "plain", confirmTools: "some" } })).status).toBe(400);
    expect((await server.api("/api/sessions", { method: "POST", json: { agent: "plain", confirmTools: [""] } })).status).toBe(400);
    const bypass = await server.api("/api/sessions", { method: "POST", json: { agent: "plain", confirmTools: "all", permissionMode: "bypassPermissions" } });
    expect(bypass.status).toBe(400);
    expect((await bypass.json()).error).toMatch(/bypassPermissions/);
    // Nothing was made.
    expect((await (await server.api("/api/sessions")).json()).sessions.length).toBe(before);
    const agent = (await (await server.api("/api/agents/careful")).json()).agent;
    expect(agent.confirmTools).toEqual(["Bash"]);
    // ash.json names it too; PATCH changes it (a new version), null takes it away, bad input changes nothing.
    const fromManifest = await server.api("/api/agents", { method: "POST", json: agentUpload("manifested", { "ash.json": JSON.stringify({ confirmTools: "all" }) }) });
    expect((await fromManifest.json()).agent.confirmTools).toBe("all");
    expect((await server.api("/api/agents/manifested", { method: "PATCH", json: { confirmTools: "some" } })).status).toBe(400);
    const patched = await (await server.api("/api/agents/manifested", { method: "PATCH", json: { confirmTools: ["Write"] } })).json();
    expect(patched.agent).toMatchObject({ confirmTools: ["Write"], version: 2 });
    const cleared = await (await server.api("/api/agents/manifested", { method: "PATCH", json: { confirmTools: null } })).json();
    expect(cleared.agent).toMatchObject({ confirmTools: null, version: 3 });
  });
});
