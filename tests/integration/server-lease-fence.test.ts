import { afterAll, beforeAll, expect, it } from "vitest";
import pgDriver from "pg";
import { agentUpload, parseFrames, readEvents, startTestServer, type TestServer } from "../helpers/server";
import { describeWithPostgres } from "../helpers/postgres";
import { privatePostgres, type PrivatePostgres } from "../helpers/private-postgres";
import { countClaudeProcesses } from "../helpers/processes";
import { startFakeModel } from "../fake-model/fake-model.mjs";

// A server that cannot renew its leases must stop its agent processes before
// another server may start them; one that finds a lease taken away must drop
// that session's sandbox without saving over the new owner's work.

const TTL_MS = 3000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describeWithPostgres("a server that loses its leases", () => {
  let pg: PrivatePostgres;
  let server: TestServer;
  let model: Awaited<ReturnType<typeof startFakeModel>>;

  beforeAll(async () => {
    model = await startFakeModel();
    pg = await privatePostgres();
    await pg.start();
    server = await startTestServer({ modelUrl: model.url, env: { ASH_DATABASE_URL: pg.url, ASH_LEASE_TTL_MS: String(TTL_MS), ASH_WARM_DEMAND_MS: "0" } });
    expect((await server.api("/api/agents", { method: "POST", json: agentUpload("fenced") })).status).toBe(201);
  }, 180_000);
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
    await pg?.purge().catch(() => undefined);
  });

  const until = async (what: string, check: () => Promise<boolean>) => {
    for (let round = 0; round < 150; round++) {
      if (await check()) return;
      await sleep(200);
    }
    throw new Error(`${what} did not happen`);
  };

  it("stops its agent processes when the database is gone past the lease, and goes on when it is back", async () => {
    const { session } = await (await server.api("/api/sessions", { method: "POST", json: { agent: "fenced" } })).json();
    await readEvents(await server.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "remember 4411" } }));
    expect(await countClaudeProcesses(server.dataDir)).toBe(1);

    await pg.stop();
    // Within the lease's life, no agent process of this server is left to race another server's.
    await until("the agent process stopping", async () => (await countClaudeProcesses(server.dataDir)) === 0);
    expect(server.output()).toMatch(/could not renew its leases/);

    await pg.start();
    await until("the database answering", async () => (await fetch(`${server.url}/health`)).status === 200);
    // Until its next heartbeat renews the leases, the server starts nothing and says to try again.
    let answer = await server.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "what number?" } });
    for (let round = 0; round < 50 && answer.status === 503; round++) {
      expect(answer.headers.get("retry-after")).toBe("1");
      await sleep(200);
      answer = await server.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "what number?" } });
    }
    expect(answer.status).toBe(200);
    const next = parseFrames(await answer.text());
    expect(next.find((e) => e.event === "turn_complete")?.data.result).toContain("[turns seen: 2]");
  }, 120_000);

  it("drops a session's sandbox, unsaved, when another server took its lease", async () => {
    const { session } = await (await server.api("/api/sessions", { method: "POST", json: { agent: "fenced" } })).json();
    await readEvents(await server.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "#bash echo mine > mine.txt" } }));
    await server.api(`/api/sessions/${session.id}/exec`, { method: "POST", json: { command: "echo unsaved > late.txt" } });
    const sql = new pgDriver.Client({ connectionString: pg.url });
    await sql.connect();
    try {
      const versionBefore = (await sql.query("SELECT workspace_version FROM sessions WHERE id = $1", [session.id])).rows[0].workspace_version;
      const liveBefore = ((await (await fetch(`${server.url}/health`)).json()) as any).activeSessions;
      // As if this server had been cut off while another one took the session over.
      await sql.query("UPDATE session_leases SET server_id = 'another-server', address = 'http://127.0.0.1:9' WHERE session_id = $1", [session.id]);
      await until("the sandbox going", async () => (await sql.query("SELECT 1 FROM sandboxes WHERE session_id = $1 AND status = 'live'", [session.id])).rowCount === 0);
      const ended = (await sql.query("SELECT end_reason FROM sandboxes WHERE session_id = $1", [session.id])).rows[0];
      expect(ended.end_reason).toBe("lease_lost");
      // Nothing was saved over the other server's work, and its lease is untouched.
      expect((await sql.query("SELECT workspace_version FROM sessions WHERE id = $1", [session.id])).rows[0].workspace_version).toBe(versionBefore);
      expect((await sql.query("SELECT server_id FROM session_leases WHERE session_id = $1", [session.id])).rows[0].server_id).toBe("another-server");
      expect(((await (await fetch(`${server.url}/health`)).json()) as any).activeSessions).toBe(liveBefore - 1);
    } finally {
      await sql.end();
    }
  }, 120_000);

  it("ends a message accepted while its session was taken over with server_lost, not as a crash", async () => {
    const { session } = await (await server.api("/api/sessions", { method: "POST", json: { agent: "fenced" } })).json();
    await readEvents(await server.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "first" } }));
    const holder = new pgDriver.Client({ connectionString: pg.url });
    const sql = new pgDriver.Client({ connectionString: pg.url });
    await holder.connect();
    await sql.connect();
    try {
      // Events can be read but not written: the next message is claimed and then waits to be logged.
      await holder.query("BEGIN");
      await holder.query("LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE");
      const answer = server.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "second" } });
      await until("the message waiting to be logged", async () => (await sql.query("SELECT 1 FROM pg_locks WHERE NOT granted")).rowCount! > 0);
      // Meanwhile another server takes the session over, and this one drops its sandbox.
      await sql.query("UPDATE session_leases SET server_id = 'another-server', address = 'http://127.0.0.1:9' WHERE session_id = $1", [session.id]);
      await until("the sandbox going", async () => (await sql.query("SELECT 1 FROM sandboxes WHERE session_id = $1 AND status = 'live'", [session.id])).rowCount === 0);
      await holder.query("COMMIT");

      const events = parseFrames(await (await answer).text());
      const errors = events.filter((e) => e.event === "error").map((e) => e.data.code);
      expect(errors).toEqual(["server_lost"]);
      expect(events.at(-1)?.event).toBe("done");
      expect(events.some((e) => e.event === "turn_complete")).toBe(false);
    } finally {
      await holder.query("ROLLBACK").catch(() => undefined);
      await holder.end();
      await sql.end();
    }
  }, 120_000);
});
