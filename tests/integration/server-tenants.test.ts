import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { agentUpload, parseFrames, readEvents, startTestServer, type ApiResponse, type TestServer } from "../helpers/server";
import { backends } from "../helpers/backends";
import { startFakeModel } from "../fake-model/fake-model.mjs";

// Two tenants on one server: each key sees only its tenant's agents, sessions,
// events, files, checkpoints, usage and queue; anything else is 404 (the same
// answer as for nothing at all), and the limits hold at exactly their numbers.
describe.each(backends)("tenants on $name", (backend) => {
  let server: TestServer;
  let model: Awaited<ReturnType<typeof startFakeModel>>;
  let cleanup: () => Promise<void>;
  let acme: string;
  let globex: string;

  const as = (key: string, path: string, init: { method?: string; json?: unknown; headers?: Record<string, string> } = {}): Promise<ApiResponse> =>
    fetch(`${server.url}${path}`, {
      method: init.method ?? "GET",
      headers: { authorization: `Bearer ${key}`, ...(init.json === undefined ? {} : { "content-type": "application/json" }), ...init.headers },
      body: init.json === undefined ? undefined : JSON.stringify(init.json),
    });
  const makeKey = async (body: Record<string, unknown>) => {
    const r = await server.api("/api/api-keys", { method: "POST", json: body });
    expect(r.status).toBe(201);
    return (await r.json()) as { id: string; key: string };
  };

  beforeAll(async () => {
    model = await startFakeModel();
    const prepared = await backend.prepare();
    cleanup = prepared.cleanup;
    server = await startTestServer({ env: prepared.env, modelUrl: model.url });
    acme = (await makeKey({ tenant: "acme", scope: "admin" })).key;
    globex = (await makeKey({ tenant: "globex", scope: "admin" })).key;
  });
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
    await cleanup?.();
  });

  it("keeps agents apart: the same name in two tenants is two agents, and another's is not there", async () => {
    expect((await as(acme, "/api/agents", { method: "POST", json: agentUpload("support", { "CLAUDE.md": "acme support" }) })).status).toBe(201);
    expect((await as(globex, "/api/agents", { method: "POST", json: agentUpload("support", { "CLAUDE.md": "globex support" }) })).status).toBe(201);
    expect((await as(acme, "/api/agents", { method: "POST", json: agentUpload("only-acme") })).status).toBe(201);
    const names = async (key: string) => ((await (await as(key, "/api/agents")).json()).agents as any[]).map((a) => a.name).sort();
    expect(await names(acme)).toEqual(["only-acme", "support"]);
    expect(await names(globex)).toEqual(["support"]);
    expect((await (await as(globex, "/api/agents/support")).json()).agent.path).toBe("tenants/globex/agents/support");
    expect((await as(globex, "/api/agents/only-acme")).status).toBe(404);
    expect((await as(globex, "/api/agents/only-acme", { method: "DELETE" })).status).toBe(404);
    expect((await as(globex, "/api/sessions", { method: "POST", json: { agent: "only-acme" } })).status).toBe(404);
    const file = async (key: string) => (await (await as(key, "/api/agents/support/files/CLAUDE.md")).json()).content;
    expect(await file(acme)).toBe("acme support");
    expect(await file(globex)).toBe("globex support");
    // The operator (tenant default) does not see tenants' agents either.
    expect((await (await server.api("/api/agents")).json()).agents.map((a: any) => a.name)).not.toContain("only-acme");
    // Nor does the public /health name them (its warm pool lists the default tenant's agents only).
    const created = await as(acme, "/api/sessions", { method: "POST", json: { agent: "only-acme" } });
    expect(created.status).toBe(201);
    const health = await (await fetch(`${server.url}/health`)).text();
    expect(health).not.toContain("only-acme");
    expect(health).not.toContain("acme/");
  });

  it("answers 404 for another tenant's session on every session route, streams included", async () => {
    const session = (await (await as(acme, "/api/sessions", { method: "POST", json: { agent: "support" } })).json()).session;
    const events = await readEvents(await as(acme, `/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "#bash echo secret > s.txt" } }));
    expect(events.at(-1)?.event).toBe("done");

    const routes: Array<[string, string, unknown?]> = [
      ["GET", ""],
      ["PATCH", "", { maxTokens: 5 }],
      ["DELETE", ""],
      ["POST", "/messages", { content: "steal" }],
      ["GET", "/messages"],
      ["GET", "/events"],
      ["GET", "/stream"],
      ["GET", "/files"],
      ["GET", "/files/s.txt"],
      ["DELETE", "/files/s.txt"],
      ["POST", "/files", { files: [{ path: "x.txt", content: "x" }] }],
      ["GET", "/workspace"],
      ["POST", "/exec", { command: "cat s.txt" }],
      ["GET", "/logs"],
      ["POST", "/pause"],
      ["POST", "/resume"],
      ["POST", "/stop"],
      ["POST", "/fork"],
      ["POST", "/interrupt"],
      ["GET", "/checkpoints"],
      ["POST", "/rewind", { checkpoint: 1 }],
    ];
    for (const [method, path, json] of routes) {
      const r = await as(globex, `/api/sessions/${session.id}${path}`, { method, json });
      expect([method, path, r.status]).toEqual([method, path, 404]);
      expect(await r.text()).not.toContain("secret");
    }
    // Replay with Last-Event-ID from another tenant gets nothing either.
    expect((await as(globex, `/api/sessions/${session.id}/stream`, { headers: { "last-event-id": "0" } })).status).toBe(404);
    // Listing, usage and the queue show nothing of acme's to globex.
    expect((await (await as(globex, "/api/sessions")).json()).sessions).toEqual([]);
    expect((await (await as(globex, "/api/usage")).json()).usage).toEqual([]);
    expect((await (await as(acme, "/api/usage")).json()).usage.length).toBeGreaterThan(0);
    expect((await as(globex, "/api/queue", { method: "POST", json: { agent: "only-acme", prompt: "x" } })).status).toBe(404);
    expect((await as(globex, "/api/queue", { method: "POST", json: { agent: "support", prompt: "x", sessionId: session.id } })).status).toBe(404);
    // The owner still has it all, unchanged.
    const owned = await as(acme, `/api/sessions/${session.id}/files/s.txt?format=json`);
    expect((await owned.json()).content).toBe("secret\n");
    const stream = await as(acme, `/api/sessions/${session.id}/stream`, { headers: { "last-event-id": "0" } });
    expect(stream.status).toBe(200);
    const reader = stream.body!.getReader();
    let text = "";
    while (!parseFrames(text).some((e) => e.event === "done")) {
      const chunk = await reader.read();
      if (chunk.done) break;
      text += new TextDecoder().decode(chunk.value);
    }
    await reader.cancel();
    expect(parseFrames(text).map((e) => e.event)).toContain("turn_complete");
  });

  it("admits live sessions and running turns exactly up to a key's limits, and refusals change nothing", async () => {
    const limited = (await makeKey({ tenant: "acme", scope: "sessions", limits: { liveSessions: 2, runningTurns: 1 } })).key;
    const before = (await (await as(acme, "/api/sessions")).json()).sessions.length;
    const tries = await Promise.all(Array.from({ length: 5 }, () => as(limited, "/api/sessions", { method: "POST", json: { agent: "support" } })));
    const statuses = tries.map((r) => r.status).sort();
    expect(statuses).toEqual([201, 201, 429, 429, 429]);
    const refused = tries.find((r) => r.status === 429)!;
    expect(refused.headers.get("retry-after")).toMatch(/^\d+$/);
    expect((await refused.json()).error).toMatch(/Too many live sessions: this key may have 2 at once/);
    expect((await (await as(acme, "/api/sessions")).json()).sessions.length).toBe(before + 2);

    const ids = await Promise.all(tries.filter((r) => r.status === 201).map(async (r) => (await r.json()).session.id as string));
    // One turn at a time for this key: a slow turn holds the slot (its answer's headers mean it was
    // admitted), so the other session's message is refused until it is done.
    const slow = await as(limited, `/api/sessions/${ids[0]}/messages`, { method: "POST", json: { content: "#slow 3000" } });
    expect(slow.status).toBe(200);
    const second = await as(limited, `/api/sessions/${ids[1]}/messages`, { method: "POST", json: { content: "hello" } });
    expect(second.status).toBe(429);
    expect((await second.json()).error).toMatch(/Too many turns at once: this key may run 1 at a time/);
    await readEvents(slow);
    const after = await as(limited, `/api/sessions/${ids[1]}/messages`, { method: "POST", json: { content: "now it fits" } });
    expect(after.status).toBe(200);
    expect((await readEvents(after)).map((e) => e.event)).toContain("turn_complete");
    // Pausing one frees a live slot.
    expect((await as(limited, `/api/sessions/${ids[0]}/pause`, { method: "POST" })).status).toBe(200);
    expect((await as(limited, "/api/sessions", { method: "POST", json: { agent: "support" } })).status).toBe(201);
  });

  it("counts a session woken by exec or a file write against the key's live sessions, like one woken by a message", async () => {
    const limited = (await makeKey({ tenant: "acme", scope: "sessions", limits: { liveSessions: 1 } })).key;
    const first = (await (await as(limited, "/api/sessions", { method: "POST", json: { agent: "support" } })).json()).session;
    expect((await as(limited, `/api/sessions/${first.id}/pause`, { method: "POST" })).status).toBe(200);
    const second = await as(limited, "/api/sessions", { method: "POST", json: { agent: "support" } });
    expect(second.status).toBe(201);
    const secondId = (await second.json()).session.id as string;
    // The paused one would be a second live session: every way of waking it is refused, and it stays paused.
    for (const [path, json] of [
      [`/api/sessions/${first.id}/exec`, { command: "echo woke" }],
      [`/api/sessions/${first.id}/files`, { files: [{ path: "note.txt", content: "x", encoding: "utf8" }] }],
      [`/api/sessions/${first.id}/messages`, { content: "hello" }],
    ] as const) {
      const r = await as(limited, path, { method: "POST", json });
      expect(r.status, path).toBe(429);
      expect((await r.json()).error).toMatch(/Too many live sessions: this key may have 1 at once/);
    }
    expect((await (await as(limited, `/api/sessions/${first.id}`)).json()).session.status).toBe("paused");
    // With the other one paused, exec wakes it.
    expect((await as(limited, `/api/sessions/${secondId}/pause`, { method: "POST" })).status).toBe(200);
    const exec = await as(limited, `/api/sessions/${first.id}/exec`, { method: "POST", json: { command: "echo woke" } });
    expect(exec.status).toBe(200);
    expect((await exec.json()).stdout).toBe("woke\n");
    expect((await (await as(limited, `/api/sessions/${first.id}`)).json()).session.status).toBe("active");
  });

  it("limits requests a minute per key exactly", async () => {
    const limited = (await makeKey({ tenant: "globex", scope: "read", limits: { requestsPerMinute: 5 } })).key;
    const results = await Promise.all(Array.from({ length: 8 }, () => as(limited, "/api/agents")));
    expect(results.map((r) => r.status).sort()).toEqual([200, 200, 200, 200, 200, 429, 429, 429]);
    const refused = results.find((r) => r.status === 429)!;
    expect(Number(refused.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect((await refused.json()).error).toMatch(/this key may make 5 a minute/);
  });

  it("refuses new turns past a key's daily tokens", async () => {
    const limited = (await makeKey({ tenant: "globex", scope: "sessions", limits: { tokensPerDay: 1 } })).key;
    const session = (await (await as(limited, "/api/sessions", { method: "POST", json: { agent: "support" } })).json()).session;
    const first = await as(limited, `/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "spend" } });
    expect(first.status).toBe(200);
    await readEvents(first);
    // The usage of that turn is stored in the background; the next turn is refused once it is.
    let status = 200;
    for (let i = 0; i < 50 && status === 200; i++) {
      const r = await as(limited, `/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "more" } });
      status = r.status;
      if (status === 200) await readEvents(r);
      else expect((await r.json()).error).toMatch(/Daily token limit reached: this key used \d+ of its 1 tokens today/);
    }
    expect(status).toBe(429);
    // Nor can the key have its prompts run later in its name.
    const queued = await as(limited, "/api/queue", { method: "POST", json: { agent: "support", prompt: "run this later" } });
    expect(queued.status).toBe(429);
    expect((await queued.json()).error).toMatch(/Daily token limit reached: this key used \d+ of its 1 tokens today/);
    expect((await as(limited, "/api/agents/support/evals/runs", { method: "POST" })).status).toBe(429);
  });

  it("a revoked key's next request on a session is refused, its open stream's reconnect too", async () => {
    const key = await makeKey({ tenant: "acme", scope: "sessions" });
    const session = (await (await as(key.key, "/api/sessions", { method: "POST", json: { agent: "support" } })).json()).session;
    await readEvents(await as(key.key, `/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "hi" } }));
    expect((await server.api(`/api/api-keys/${key.id}`, { method: "DELETE" })).status).toBe(204);
    expect((await as(key.key, `/api/sessions/${session.id}/stream`, { headers: { "last-event-id": "0" } })).status).toBe(401);
    expect((await as(key.key, `/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "again" } })).status).toBe(401);
  });
});
