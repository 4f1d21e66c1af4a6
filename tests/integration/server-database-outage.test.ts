import { afterAll, beforeAll, expect, it } from "vitest";
import { agentUpload, readEvents, startTestServer, type TestServer } from "../helpers/server";
import { describeWithPostgres } from "../helpers/postgres";
import { privatePostgres, type PrivatePostgres } from "../helpers/private-postgres";
import { startFakeModel } from "../fake-model/fake-model.mjs";

describeWithPostgres("the server when PostgreSQL goes away", () => {
  let pg: PrivatePostgres;
  let server: TestServer;
  let model: Awaited<ReturnType<typeof startFakeModel>>;

  beforeAll(async () => {
    model = await startFakeModel();
    pg = await privatePostgres();
    // The server starts first and waits for the database, as under Compose.
    const starting = startTestServer({ modelUrl: model.url, env: { ASH_DATABASE_URL: pg.url }, startTimeoutMs: 90_000 });
    await new Promise((r) => setTimeout(r, 3000));
    await pg.start();
    server = await starting;
  }, 180_000);
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
    await pg?.purge().catch(() => undefined);
  });

  const waitForHealth = async (status: number) => {
    let last = 0;
    for (let i = 0; i < 150; i++) {
      last = (await fetch(`${server.url}/health`)).status;
      if (last === status) return;
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`/health stayed ${last}`);
  };

  it("waited for the database at start-up, saying so", async () => {
    expect(server.output()).toMatch(/not reachable yet/);
    expect((await fetch(`${server.url}/health`)).status).toBe(200);
  });

  it("answers 503 while the database is down, then works again with nothing lost", async () => {
    await server.api("/api/agents", { method: "POST", json: agentUpload("steady") });
    const { session } = await (await server.api("/api/sessions", { method: "POST", json: { agent: "steady" } })).json();
    const first = await readEvents(await server.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "remember 7781" } }));
    expect(first.map((e) => e.event)).toContain("turn_complete");

    await pg.stop();
    await waitForHealth(503);
    const health = (await (await fetch(`${server.url}/health`)).json()) as any;
    expect(health.status).toBe("degraded");
    const down = await server.api("/api/agents");
    expect(down.status).toBe(503);
    expect(down.headers.get("retry-after")).toBeTruthy();
    expect((await down.json()).error).toMatch(/database/i);

    await pg.start();
    await waitForHealth(200);
    expect((await (await server.api("/api/agents")).json()).agents.map((a: any) => a.name)).toContain("steady");
    const stored = (await (await server.api(`/api/sessions/${session.id}/events?limit=1000`)).json()).events;
    expect(stored.map((e: any) => e.sequence)).toEqual(first.map((e) => e.id));
    const next = await readEvents(await server.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "what number?" } }));
    expect(next.map((e) => e.event)).toContain("turn_complete");
    expect(model.userTexts()).toContain("remember 7781");
  });
});
