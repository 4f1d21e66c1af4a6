import { afterAll, beforeAll, expect, it } from "vitest";
import pg from "pg";
import { request as httpRequest } from "node:http";
import { startTestBucket, type TestBucket } from "../helpers/s3";
import { agentUpload, parseFrames, readEvents, readUntilDone, startTestServer, type TestServer } from "../helpers/server";
import { createPostgresDatabase, describeWithPostgres, type TestDatabase } from "../helpers/postgres";
import { countClaudeProcesses } from "../helpers/processes";
import { startFakeModel } from "../fake-model/fake-model.mjs";
import { signForward } from "../../src/cluster/signing";

// Three servers on one PostgreSQL database and one bucket, each called
// directly: a live session has one owner (a lease in the database), every
// other server passes its requests on over a signed hop, a killed owner's
// sessions move after their lease runs out, and a draining one lets go.

const SECRET = "cluster-secret-for-tests-0123456789abcdef";
const TTL_MS = 3000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describeWithPostgres("several servers, one owner per live session", () => {
  let database: TestDatabase;
  let bucket: TestBucket;
  let servers: TestServer[] = [];
  let ids: string[] = [];
  let model: Awaited<ReturnType<typeof startFakeModel>>;
  let sql: pg.Client;

  const start = () => startTestServer({ modelUrl: model.url, env: { ASH_DATABASE_URL: database.url, ...bucket.env, ASH_CLUSTER_SECRET: SECRET, ASH_LEASE_TTL_MS: String(TTL_MS), ASH_WARM_DEMAND_MS: "0" } });
  const idOf = async (server: TestServer) => ((await (await fetch(`${server.url}/health`)).json()) as any).server.id as string;
  const lease = async (sessionId: string) => (await sql.query("SELECT server_id, expires_at FROM session_leases WHERE session_id = $1", [sessionId])).rows[0] as { server_id: string; expires_at: string } | undefined;
  /** Agent processes of every server, summed (no warm spares here): one session must never have two. */
  const agents = async () => (await Promise.all(servers.map((s) => countClaudeProcesses(s.dataDir)))).reduce((a, b) => a + b, 0);

  beforeAll(async () => {
    model = await startFakeModel();
    database = await createPostgresDatabase();
    bucket = await startTestBucket();
    servers = [await start(), await start(), await start()];
    ids = await Promise.all(servers.map(idOf));
    sql = new pg.Client({ connectionString: database.url });
    await sql.connect();
    expect((await servers[0]!.api("/api/agents", { method: "POST", json: agentUpload("shared") })).status).toBe(201);
  }, 180_000);
  afterAll(async () => {
    await sql?.end();
    for (const server of servers) await server.dispose();
    await bucket?.close();
    await model?.close();
    await database?.drop();
  });

  it("runs a session on the server that won its lease and passes every other server's requests to it", async () => {
    const [a, b, c] = servers as [TestServer, TestServer, TestServer];
    const { session } = await (await a.api("/api/sessions", { method: "POST", json: { agent: "shared" } })).json();
    expect((await lease(session.id))?.server_id).toBe(ids[0]);

    // A message sent to B runs on A, streamed back through B.
    const viaB = await b.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "remember the word osprey" } });
    expect(viaB.status).toBe(200);
    expect(viaB.headers.get("x-ash-forwarded-to")).toBe(ids[0]);
    const events = parseFrames(await viaB.text());
    expect(events.map((e) => e.event)).toContain("turn_complete");
    expect(events.at(-1)?.event).toBe("done");

    // exec through C writes into A's sandbox; A reads the file back.
    const exec = await c.api(`/api/sessions/${session.id}/exec`, { method: "POST", json: { command: "echo from-c > c.txt" } });
    expect(exec.status).toBe(200);
    expect(await (await a.api(`/api/sessions/${session.id}/files/c.txt`)).text()).toContain("from-c");
    // An upload through C with `Expect: 100-continue` (what curl sends for large bodies) reaches A's sandbox too.
    const upload = JSON.stringify({ files: [{ path: "up.txt", content: "uploaded through c", encoding: "utf8" }] });
    const uploaded = await new Promise<number>((resolve, reject) => {
      const req = httpRequest(`${c.url}/api/sessions/${session.id}/files`, {
        method: "POST",
        headers: { authorization: `Bearer ${c.apiKey}`, "content-type": "application/json", "content-length": Buffer.byteLength(upload), expect: "100-continue" },
      });
      req.on("continue", () => req.end(upload));
      req.on("response", (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode ?? 0));
      });
      req.on("error", reject);
    });
    expect(uploaded).toBe(201);
    expect(await (await a.api(`/api/sessions/${session.id}/files/up.txt`)).text()).toContain("uploaded through c");
    // Only A has a sandbox, and one agent process runs in all.
    expect(await countClaudeProcesses(b.dataDir)).toBe(0);
    expect(await countClaudeProcesses(c.dataDir)).toBe(0);

    // The Managed Agents API is passed on the same way (its key as x-api-key, which never travels).
    const managed = await fetch(`${c.url}/v1/sessions/${session.id}`, { headers: { "x-api-key": c.apiKey, "anthropic-version": "2023-06-01" } });
    expect(managed.status).toBe(200);
    expect(managed.headers.get("x-ash-forwarded-to")).toBe(ids[0]);
    expect(((await managed.json()) as any).id).toBe(session.id);

    // A stream resumed through C with Last-Event-ID gets exactly what came after it.
    const last = events[1]!.id;
    const resumed = await c.api(`/api/sessions/${session.id}/stream`, { headers: { "last-event-id": String(last) } });
    const next = b.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "and one more" } });
    // The rest of the first turn, then all of the second, live: two `done`s.
    const seen = (await readUntilDone(resumed, 2)).map((e) => e.id);
    await readEvents(await next);
    expect(seen[0]).toBe(last + 1);
    expect(seen).toEqual(seen.map((_, i) => last + 1 + i));
  });

  it("lets exactly one server bring a sleeping session up when many ask at once", async () => {
    const [a] = servers as [TestServer];
    const { session } = await (await a.api("/api/sessions", { method: "POST", json: { agent: "shared" } })).json();
    await readEvents(await a.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "count me" } }));
    for (let round = 0; round < 3; round++) {
      expect((await servers[round % 3]!.api(`/api/sessions/${session.id}/pause`, { method: "POST" })).status).toBe(200);
      expect(await lease(session.id)).toBeUndefined();
      // Other tests' sessions keep their agent processes: only more than one over them is this session's second.
      const others = await agents();
      const peak = { agents: 0 };
      let sampling = true;
      const sampler = (async () => {
        while (sampling) {
          peak.agents = Math.max(peak.agents, await agents());
          await sleep(50);
        }
      })();
      // Twelve resumes, four to each server, at the same moment.
      const answers = await Promise.all(Array.from({ length: 12 }, (_, i) => servers[i % 3]!.api(`/api/sessions/${session.id}/resume`, { method: "POST" })));
      for (const answer of answers) {
        // Won, passed on to the winner, or lost the race by a hair and told to send it again.
        expect([200, 503]).toContain(answer.status);
        if (answer.status === 503) expect(answer.headers.get("retry-after")).toBe("1");
      }
      expect(answers.filter((r) => r.status === 200).length).toBeGreaterThan(0);
      const owner = (await lease(session.id))!.server_id;
      const health = await Promise.all(servers.map(async (s) => (await (await fetch(`${s.url}/health`)).json()) as any));
      const hosting = health.filter((h) => h.activeSessions > 0 && h.server.id === owner);
      expect(hosting).toHaveLength(1);
      // The turn after runs on the owner, whoever is asked.
      const turn = parseFrames(await (await servers[(round + 1) % 3]!.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "again" } })).text());
      expect(turn.find((e) => e.event === "turn_complete")?.data.result).toContain(`[turns seen: ${round + 2}]`);
      sampling = false;
      await sampler;
      expect(peak.agents - others).toBeLessThanOrEqual(1);
    }
  });

  it("refuses a forwarded request whose signature does not hold, and changes nothing", async () => {
    const [a, b] = servers as [TestServer, TestServer];
    const { session } = await (await a.api("/api/sessions", { method: "POST", json: { agent: "shared" } })).json();
    const target = `/api/sessions/${session.id}/pause`;
    const caller = { keyId: "env", tenantId: "default", scope: "admin", operator: true, limits: {}, tenantLimits: {} };
    const forged = signForward("not-the-cluster-secret-but-long-enough-0000", { method: "POST", target, serverId: ids[1]! }, caller);
    const wrongServer = signForward(SECRET, { method: "POST", target, serverId: ids[2]! }, caller);
    const stale = signForward(SECRET, { method: "POST", target, serverId: ids[1]! }, caller, Date.now() - 120_000);
    const otherPath = signForward(SECRET, { method: "POST", target: `/api/sessions/${session.id}/stop`, serverId: ids[1]! }, caller);
    // The target server's id travels in the clear too; without it the signature still names the server.
    const { ["x-ash-forwarded-server"]: _, ...wrongServerUnnamed } = wrongServer;
    for (const headers of [forged, wrongServerUnnamed, stale, otherPath, { "x-ash-forwarded-identity": "e30", "x-ash-forwarded-signature": "v1.1.zz" }]) {
      const answer = await fetch(`${b.url}${target}`, { method: "POST", headers });
      expect(answer.status).toBe(401);
      expect(((await answer.json()) as any).error).toMatch(/passed on by another server/);
    }
    // Meant for another server (whose address this one took over): 421, which the sender turns into "try again".
    const misdirected = await fetch(`${b.url}${target}`, { method: "POST", headers: wrongServer });
    expect(misdirected.status).toBe(421);
    expect((await (await a.api(`/api/sessions/${session.id}`)).json()).session.status).toBe("active");
    // A caller's own key never reaches the owner: B signs what it authenticated.
    const right = signForward(SECRET, { method: "GET", target: `/api/sessions/${session.id}`, serverId: ids[0]! }, caller);
    expect((await fetch(`${a.url}/api/sessions/${session.id}`, { headers: right })).status).toBe(200);
  });

  it("keeps a stream opened while the session slept up to date when another server wakes it", async () => {
    const [a, , c] = servers as [TestServer, TestServer, TestServer];
    const { session } = await (await a.api("/api/sessions", { method: "POST", json: { agent: "shared" } })).json();
    const first = parseFrames(await (await a.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "first" } })).text());
    expect((await a.api(`/api/sessions/${session.id}/pause`, { method: "POST" })).status).toBe(200);
    // Asleep: nobody holds it, so C serves the stream itself; then A wakes the session and runs a turn.
    const last = (await (await c.api(`/api/sessions/${session.id}/events?limit=1000`)).json() as any).events.at(-1).sequence as number;
    expect(last).toBeGreaterThanOrEqual(first.at(-1)!.id);
    const stream = await c.api(`/api/sessions/${session.id}/stream`, { headers: { "last-event-id": String(last) } });
    expect(stream.headers.get("x-ash-forwarded-to")).toBeNull();
    const turn = parseFrames(await (await a.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "second" } })).text());
    expect((await readUntilDone(stream)).map((e) => e.id)).toEqual(turn.map((e) => e.id));
  });

  it("places a new session on another server when the one asked is full", async () => {
    const full = await startTestServer({ modelUrl: model.url, env: { ASH_DATABASE_URL: database.url, ...bucket.env, ASH_CLUSTER_SECRET: SECRET, ASH_LEASE_TTL_MS: String(TTL_MS), ASH_WARM_DEMAND_MS: "0", ASH_MAX_SANDBOXES: "1" } });
    try {
      const first = await full.api("/api/sessions", { method: "POST", json: { agent: "shared" } });
      expect(first.status).toBe(201);
      expect(first.headers.get("x-ash-forwarded-to")).toBeNull();
      // Its one slot is taken: the next session goes to the least loaded other server, and the first keeps its sandbox.
      const second = await full.api("/api/sessions", { method: "POST", json: { agent: "shared" } });
      expect(second.status).toBe(201);
      expect(ids).toContain(second.headers.get("x-ash-forwarded-to"));
      const placed = ((await second.json()) as any).session.id;
      expect((await lease(placed))?.server_id).toBe(second.headers.get("x-ash-forwarded-to"));
      expect(((await (await fetch(`${full.url}/health`)).json()) as any).activeSessions).toBe(1);
    } finally {
      await full.dispose();
    }
  }, 120_000);

  it("moves a killed server's sessions after their lease runs out: the cut turn ends with server_lost, memory goes on", async () => {
    const [a, b, c] = servers as [TestServer, TestServer, TestServer];
    // On B this time, so A and C stay for the last test.
    const { session } = await (await b.api("/api/sessions", { method: "POST", json: { agent: "shared" } })).json();
    await readEvents(await b.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "remember the word heron" } }));
    const cut = await a.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "#slow 20000" } });
    const reader = cut.body!.getReader();
    let seen = "";
    while (!seen.includes("event: session_start")) {
      const chunk = await reader.read();
      if (chunk.done) break;
      seen += new TextDecoder().decode(chunk.value);
    }
    const lastSeen = Math.max(...parseFrames(seen.slice(0, seen.lastIndexOf("\n\n") + 2)).map((e) => e.id));
    await b.kill();
    // The stream through A breaks with its owner; the client reconnects through C.
    await reader.read().catch(() => undefined);
    await reader.cancel().catch(() => undefined);
    let events: ReturnType<typeof parseFrames> = [];
    for (let round = 0; round < 100; round++) {
      const answer = await c.api(`/api/sessions/${session.id}/events?after=${lastSeen}&limit=100`);
      if (answer.status === 200) {
        events = (await answer.json()).events.map((e: any) => ({ id: e.sequence, event: e.type, data: e.data }));
        if (events.some((e) => e.event === "done")) break;
      }
      await sleep(200);
    }
    const error = events.find((e) => e.event === "error");
    expect(error?.data.code).toBe("server_lost");
    expect(events.at(-1)?.event).toBe("done");
    // The next message wakes it on a live server, from what was saved, with its conversation.
    const next = parseFrames(await (await c.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "what word?" } })).text());
    // The turn before the cut one is in its conversation (the cut one never finished).
    expect(next.find((e) => e.event === "turn_complete")?.data.result).toContain("[turns seen: 2]");
    expect([ids[0], ids[2]]).toContain((await lease(session.id))?.server_id);
    const sandboxes = (await sql.query("SELECT status, end_reason FROM sandboxes WHERE session_id = $1 ORDER BY created_at", [session.id])).rows;
    expect(sandboxes[0]).toMatchObject({ status: "evicted", end_reason: "server_lost" });
  }, 120_000);

  it("lets go of its sessions when it drains, and another server takes them on the next request", async () => {
    const [a, , c] = servers as [TestServer, TestServer, TestServer];
    const { session } = await (await c.api("/api/sessions", { method: "POST", json: { agent: "shared" } })).json();
    await readEvents(await c.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "#bash echo kept > kept.txt" } }));
    expect((await lease(session.id))?.server_id).toBe(ids[2]);
    // A client following a session of A through C: C ends that stream between two frames when it stops,
    // rather than having its connection cut, and the client goes on through A from its last event.
    const { session: followedSession } = await (await a.api("/api/sessions", { method: "POST", json: { agent: "shared" } })).json();
    await readEvents(await a.api(`/api/sessions/${followedSession.id}/messages`, { method: "POST", json: { content: "hello" } }));
    const follower = await c.api(`/api/sessions/${followedSession.id}/stream`);
    expect(follower.headers.get("x-ash-forwarded-to")).toBe(ids[0]);
    const following = (async () => {
      const reader = follower.body!.getReader();
      let text = "";
      for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) text += new TextDecoder().decode(chunk.value);
      return text;
    })();
    expect(await c.stop()).toBe(0);
    const followed = await following;
    expect(followed.endsWith("\n\n")).toBe(true);
    const frames = parseFrames(followed);
    expect(frames.at(-1)?.event).toBe("done");
    const more = a.api(`/api/sessions/${followedSession.id}/stream`, { headers: { "last-event-id": String(frames.at(-1)!.id) } });
    await readEvents(await a.api(`/api/sessions/${followedSession.id}/messages`, { method: "POST", json: { content: "again" } }));
    expect((await readUntilDone(await more))[0]?.id).toBe(frames.at(-1)!.id + 1);
    expect(await lease(session.id)).toBeUndefined();
    const onA = parseFrames(await (await a.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "#bash cat kept.txt" } })).text());
    expect(onA.find((e) => e.event === "tool_result")?.data.content).toContain("kept");
    expect((await lease(session.id))?.server_id).toBe(ids[0]);
  }, 120_000);

  it("serves a stream, once it is the last server, of what another server wrote since its own stay", async () => {
    // B and C are gone by now (killed, drained): A and a new server.
    const a = servers[0]!;
    const b = await start();
    servers.push(b);
    const { session } = await (await a.api("/api/sessions", { method: "POST", json: { agent: "shared" } })).json();
    const onA = parseFrames(await (await a.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "first, on A" } })).text());
    expect((await a.api(`/api/sessions/${session.id}/pause`, { method: "POST" })).status).toBe(200);
    // B runs the next turn and goes; A, whose copy of the log stops at its own turn, is all that is left.
    const onB = parseFrames(await (await b.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "second, on B" } })).text());
    expect(onB.at(-1)?.event).toBe("done");
    expect(await b.stop()).toBe(0);
    // A's next heartbeats find no other server (a drained server's row goes at once).
    await sleep(TTL_MS);
    const stream = await a.api(`/api/sessions/${session.id}/stream`, { headers: { "last-event-id": String(onA.at(-1)!.id) }, signal: AbortSignal.timeout(60_000) });
    const reader = stream.body!.getReader();
    let text = "";
    try {
      for (let round = 0; round < 1000 && !text.includes("event: done"); round++) {
        const chunk = await reader.read();
        if (chunk.done) break;
        text += new TextDecoder().decode(chunk.value);
      }
    } catch (error) {
      throw new Error(`the stream on A stopped short of B's turn (${(error as Error).name}); it had: ${JSON.stringify(parseFrames(text).map((e) => e.id))}`);
    }
    await reader.cancel().catch(() => undefined);
    expect(parseFrames(text).map((e) => e.id)).toEqual(onB.map((e) => e.id));
  }, 120_000);
});
