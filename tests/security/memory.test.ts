// Sessions that end give their memory back: 100 sessions with large messages
// (what a leak keeps grows with their size: 40 MB each way in all),
// each ended, leave the server's RSS where a warmed-up server started.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { agentUpload, readEvents, startTestServer, type TestServer } from "../helpers/server";
import { startFakeModel } from "../fake-model/fake-model.mjs";
import { GC_ON_SIGNAL_ENV, rssSettlesBelow, settledRssKiB } from "./raw-http";

const SESSIONS = 100;
const AT_ONCE = 4;
const BIG = 400 * 1024;

describe("memory of ended sessions", () => {
  let server: TestServer;
  let model: Awaited<ReturnType<typeof startFakeModel>>;

  beforeAll(async () => {
    // Every answer is large, so each session's events are large.
    model = await startFakeModel({ respond: () => ({ text: `big answer ${"x".repeat(BIG)}` }) });
    server = await startTestServer({ modelUrl: model.url, env: { ...GC_ON_SIGNAL_ENV, ASH_MAX_SANDBOXES: "8" } });
    expect((await server.api("/api/agents", { method: "POST", json: agentUpload("memory") })).status).toBe(201);
  });
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
  });

  const oneSession = async (i: number) => {
    const created = await server.api("/api/sessions", { method: "POST", json: { agent: "memory" } });
    expect(created.status).toBe(201);
    const { id } = (await created.json()).session;
    const r = await server.api(`/api/sessions/${id}/messages`, { method: "POST", json: { content: `message ${i} ${"y".repeat(BIG)}` } });
    expect(r.status).toBe(200);
    const events = await readEvents(r);
    expect(events.at(-1)?.event).toBe("done");
    expect((await server.api(`/api/sessions/${id}`, { method: "DELETE" })).status).toBe(200);
  };
  const run = async (from: number, count: number) => {
    for (let i = from; i < from + count; i += AT_ONCE) {
      await Promise.all(Array.from({ length: Math.min(AT_ONCE, from + count - i) }, (_, j) => oneSession(i + j)));
    }
  };

  it(`gives the memory of ${SESSIONS} ended sessions back`, async () => {
    // Warm up: code paths, pools and caches that stay for good.
    await run(0, 20);
    const before = await settledRssKiB(server.pid());
    await run(20, SESSIONS);
    const after = await rssSettlesBelow(server.pid(), before + 20 * 1024);
    console.log(`RSS after warm-up ${Math.round(before / 1024)} MB, after ${SESSIONS} more ended sessions ${Math.round(after / 1024)} MB`);
    expect(after - before).toBeLessThan(20 * 1024);
    expect((await fetch(`${server.url}/health`)).status).toBe(200);
  }, 1_800_000);
});
