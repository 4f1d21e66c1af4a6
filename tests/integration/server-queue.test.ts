import { afterAll, beforeAll, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { startTestBucket, type TestBucket } from "../helpers/s3";
import pg from "pg";
import { join } from "node:path";
import { agentUpload, startTestServer, type TestServer } from "../helpers/server";
import { createPostgresDatabase, describeWithPostgres, type TestDatabase } from "../helpers/postgres";
import { ashInProcess } from "../helpers/cli";
import { startFakeModel, type FakeModel } from "../fake-model/fake-model.mjs";

/** The last text a person typed in a model request (the CLI's reminder blocks left out). */
function lastUserText(body: any): string {
  const messages: any[] = body?.messages ?? [];
  for (let i = messages.length - 1; i >= 0; i--) {
    if (messages[i].role !== "user") continue;
    const content = messages[i].content;
    const texts = (typeof content === "string" ? [content] : Array.isArray(content) ? content.filter((b: any) => b.type === "text").map((b: any) => b.text as string) : []).filter(
      (t: string) => !/^\s*<(system-reminder|command-name|local-command)/.test(t),
    );
    if (texts.length > 0) return texts[texts.length - 1]!.trim();
  }
  return "";
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls until `check` answers something truthy; a bounded number of rounds, not a clock. */
async function until<T>(what: string, check: () => Promise<T | undefined | false | null>, rounds = 900): Promise<T> {
  for (let i = 0; i < rounds; i++) {
    const value = await check();
    if (value) return value;
    await sleep(100);
  }
  throw new Error(`gave up waiting for ${what}`);
}

// Two servers on one PostgreSQL database take prompts from one queue.
describeWithPostgres("the queue, shared by two servers", () => {
  let database: TestDatabase;
  let model: FakeModel;
  let a: TestServer;
  let b: TestServer;
  let bucket: TestBucket;
  /** Texts whose first model request fails (500) or hangs; later ones are answered. */
  const failFirst = new Set<string>();
  const hangFirst = new Set<string>();
  const seen = new Map<string, number>();

  const item = async (server: TestServer, id: string) => (await (await server.api(`/api/queue/${id}`)).json()).item;
  const requestsFor = (text: string) => model.requests.filter((r) => lastUserText(r.body) === text);
  const finished = (server: TestServer, id: string) => until(`item ${id} to finish`, async () => {
    const now = await item(server, id);
    return ["completed", "failed", "cancelled"].includes(now.status) ? now : undefined;
  });

  beforeAll(async () => {
    model = await startFakeModel({
      respond: (request) => {
        const text = lastUserText(request);
        const n = (seen.get(text) ?? 0) + 1;
        seen.set(text, n);
        if (n === 1 && failFirst.has(text)) return { status: 500 };
        if (n === 1 && hangFirst.has(text)) return { hang: true };
        return undefined;
      },
    });
    database = await createPostgresDatabase();
    // Servers that share a database share a snapshot store, as in production: a session continued
    // on the other server finds its files there.
    bucket = await startTestBucket();
    const env = {
      ASH_DATABASE_URL: database.url,
      ...bucket.env,
      ASH_QUEUE_CONCURRENCY: "2",
      ASH_QUEUE_LEASE_MS: "1500",
      ASH_QUEUE_POLL_MS: "100",
      ASH_QUEUE_RETRY_BASE_MS: "100",
    };
    a = await startTestServer({ modelUrl: model.url, env });
    b = await startTestServer({ modelUrl: model.url, env });
    expect((await a.api("/api/agents", { method: "POST", json: agentUpload("worker") })).status).toBe(201);
  }, 180_000);
  afterAll(async () => {
    await a?.dispose();
    await b?.dispose();
    await model?.close();
    await database?.drop();
    await bucket?.close();
  });

  it("runs every item exactly once, on both servers, and keeps each result", async () => {
    const prompts = Array.from({ length: 8 }, (_, i) => `job number ${i + 1}`);
    const ids: string[] = [];
    for (const [i, prompt] of prompts.entries()) {
      const response = await (i % 2 ? b : a).api("/api/queue", { method: "POST", json: { agent: "worker", prompt } });
      expect(response.status).toBe(201);
      const { item: queued } = await response.json();
      expect(queued).toMatchObject({ agent: "worker", prompt, status: "pending", attempts: 0, maxRetries: 3, priority: 0 });
      ids.push(queued.id);
    }
    const results = await Promise.all(ids.map((id) => finished(a, id)));
    for (const [i, done] of results.entries()) {
      expect(done).toMatchObject({ status: "completed", attempts: 1, error: null, result: `Echo: ${prompts[i]} [turns seen: 1]` });
      // The session it ran in holds the turn.
      const session = (await (await b.api(`/api/sessions/${done.sessionId}`)).json()).session;
      expect(session.agentName).toBe("worker");
      // Exactly one model call carried the prompt: nobody ran it twice.
      expect(requestsFor(prompts[i]!)).toHaveLength(1);
    }
    // Both servers took part: the sandboxes of the items' sessions ran on each.
    const db = new pg.Client({ connectionString: database.url });
    await db.connect();
    try {
      const { rows } = await db.query(`SELECT DISTINCT b.server_id FROM sandboxes b JOIN queue_items q ON q.session_id = b.session_id`);
      expect(rows).toHaveLength(2);
    } finally {
      await db.end();
    }
    const stats = await (await b.api("/api/queue/stats")).json();
    expect(stats).toMatchObject({ completed: 8, pending: 0, running: 0, total: 8, concurrency: 2 });
    const listed = await (await a.api("/api/queue?status=completed&limit=5")).json();
    expect(listed.items).toHaveLength(5);
    const rest = await (await a.api(`/api/queue?status=completed&limit=5&cursor=${listed.nextCursor}`)).json();
    expect(rest.nextCursor).toBeNull();
    expect([...listed.items, ...rest.items].map((i: any) => i.id).sort()).toEqual([...ids].sort());
  });

  it("retries a failed attempt after a backoff, and gives up after its retries", async () => {
    failFirst.add("flaky once");
    const flaky = (await (await a.api("/api/queue", { method: "POST", json: { agent: "worker", prompt: "flaky once", maxRetries: 2 } })).json()).item;
    const broken = (await (await b.api("/api/queue", { method: "POST", json: { agent: "worker", prompt: "#fail 500", maxRetries: 1 } })).json()).item;
    const [recovered, failed] = await Promise.all([finished(b, flaky.id), finished(a, broken.id)]);
    expect(recovered).toMatchObject({ status: "completed", attempts: 2, result: "Echo: flaky once [turns seen: 1]", error: null });
    expect(requestsFor("flaky once")).toHaveLength(2);
    expect(failed.status).toBe("failed");
    expect(failed.attempts).toBe(2);
    expect(failed.error).toMatch(/model call failed/i);
    expect(requestsFor("#fail 500")).toHaveLength(2);
  });

  it("cancels a pending item, which then never runs; a finished one cannot be cancelled", async () => {
    // Four slow prompts fill both servers' two slots.
    const slow = await Promise.all(
      [1, 2, 3, 4].map(async (n) => (await (await a.api("/api/queue", { method: "POST", json: { agent: "worker", prompt: `#slow 1500 busy ${n}` } })).json()).item.id as string),
    );
    await until("both servers to be full", async () => ((await (await a.api("/api/queue/stats")).json()).running === 4 ? true : undefined));
    const waiting = (await (await b.api("/api/queue", { method: "POST", json: { agent: "worker", prompt: "never run me", priority: -5 } })).json()).item;
    const cancel = await b.api(`/api/queue/${waiting.id}`, { method: "DELETE" });
    expect(cancel.status).toBe(200);
    expect((await cancel.json()).item).toMatchObject({ status: "cancelled", attempts: 0 });
    for (const id of slow) expect((await finished(a, id)).status).toBe("completed");
    // One more item gets through after the slow ones: the servers were free to take the cancelled one, and did not.
    const after = (await (await a.api("/api/queue", { method: "POST", json: { agent: "worker", prompt: "after the cancel", priority: -10 } })).json()).item;
    expect((await finished(b, after.id)).status).toBe("completed");
    expect((await item(a, waiting.id)).status).toBe("cancelled");
    expect(requestsFor("never run me")).toHaveLength(0);
    const again = await a.api(`/api/queue/${after.id}`, { method: "DELETE" });
    expect(again.status).toBe(409);
    expect((await again.json()).error).toMatch(/completed already/);
  });

  it("refuses bad input with a clear 4xx and changes nothing", async () => {
    // The items of the tests before have finished; their servers may still be putting their sessions to sleep.
    const before = await until("the queue to be quiet", async () => {
      const stats = await (await a.api("/api/queue/stats")).json();
      const other = await (await b.api("/api/queue/stats")).json();
      return stats.running === 0 && stats.runningHere === 0 && other.runningHere === 0 ? stats : undefined;
    });
    const bad: Array<[unknown, number, RegExp]> = [
      [{ prompt: "hi" }, 400, /"agent" is required/],
      [{ agent: "worker" }, 400, /"prompt" is required/],
      [{ agent: "worker", prompt: "" }, 400, /prompt/],
      [{ agent: "worker", prompt: "hi", priority: 5000 }, 400, /priority/],
      [{ agent: "worker", prompt: "hi", maxRetries: -1 }, 400, /maxRetries/],
      [{ agent: "worker", prompt: "hi", colour: "red" }, 400, /Unknown field: colour/],
      [{ agent: "nobody", prompt: "hi" }, 404, /No agent named "nobody"/],
      [{ agent: "worker", prompt: "hi", sessionId: "no-such-session" }, 404, /No session/],
      ["not an object", 400, /./],
    ];
    for (const [json, status, message] of bad) {
      const response = await a.api("/api/queue", { method: "POST", json });
      expect(response.status, JSON.stringify(json)).toBe(status);
      expect((await response.json()).error).toMatch(message);
    }
    expect((await a.api("/api/queue?status=waiting")).status).toBe(400);
    expect((await a.api("/api/queue?limit=0")).status).toBe(400);
    expect((await a.api("/api/queue?cursor=nonsense")).status).toBe(400);
    expect((await a.api("/api/queue/no-such-item")).status).toBe(404);
    expect((await a.api("/api/queue/no-such-item", { method: "DELETE" })).status).toBe(404);
    expect(await (await a.api("/api/queue/stats")).json()).toEqual(before);
  });

  it("continues a named session, and the CLI adds, shows and counts items", async () => {
    const { session } = await (await a.api("/api/sessions", { method: "POST", json: { agent: "worker" } })).json();
    const flags = ["--url", a.url, "--api-key", a.apiKey];
    const added = await ashInProcess(["queue", "add", "worker", "first words", "--session", session.id, ...flags]);
    expect(added.code).toBe(0);
    const id = added.stdout.trim();
    expect((await finished(a, id)).result).toBe("Echo: first words [turns seen: 1]");
    const second = await ashInProcess(["queue", "add", "worker", "second words", "--session", session.id, "--priority", "3", ...flags]);
    const done = await finished(b, second.stdout.trim());
    // The same conversation: the model saw both turns.
    expect(done).toMatchObject({ sessionId: session.id, priority: 3, result: "Echo: second words [turns seen: 2]" });
    const shown = await ashInProcess(["queue", "get", second.stdout.trim(), ...flags]);
    expect(shown.code).toBe(0);
    expect(shown.stdout).toContain("Echo: second words [turns seen: 2]");
    const stats = await ashInProcess(["queue", "stats", "--json", ...flags]);
    expect(JSON.parse(stats.stdout).completed).toBeGreaterThanOrEqual(13);
    const listed = await ashInProcess(["queue", "list", "--status", "cancelled", ...flags]);
    expect(listed.stdout).toContain("never run me");
    expect((await ashInProcess(["queue", "list", "--status", "soon", ...flags])).code).toBe(2);
    expect((await ashInProcess(["queue", "add", "worker", "x", "--priority", "high", ...flags])).code).toBe(2);
  });

  it("runs an item again on the other server after the one running it dies, never both at once", async () => {
    hangFirst.add("survive a crash");
    const queued = (await (await a.api("/api/queue", { method: "POST", json: { agent: "worker", prompt: "survive a crash" } })).json()).item;
    const running = await until("the item to be running", async () => {
      const now = await item(a, queued.id);
      return now.status === "running" && requestsFor("survive a crash").length === 1 ? now : undefined;
    });
    const serverId = (s: TestServer) => readFileSync(join(s.dataDir, "server-id"), "utf8").trim();
    const [victim, survivor] = running.claimedBy === serverId(a) ? [a, b] : [b, a];
    expect(running.claimedBy).toBe(serverId(victim));
    await victim.kill();
    const killedAt = Date.now();
    const done = await finished(survivor, queued.id);
    expect(done).toMatchObject({ status: "completed", attempts: 2, result: "Echo: survive a crash [turns seen: 1]" });
    const calls = requestsFor("survive a crash");
    expect(calls).toHaveLength(2);
    // The second run started only after the first server was gone.
    expect(calls[1]!.receivedAt).toBeGreaterThanOrEqual(killedAt);
  });
});
