// Session create -> first text_delta of its first turn, against the instant
// fake model: a cold start (sandbox and agent process made on create) against
// a warm spare from ASH_WARM_POOL, each on its own server, measured in the same run.
//
//   npx tsx bench/warm-pool.ts [sessions=10]
import { startFakeModel } from "../tests/fake-model/fake-model.mjs";
import { agentUpload, startTestServer, type TestServer } from "../tests/helpers/server";
import { msToFirstText, row } from "./stats";

const sessions = Number(process.argv[2] ?? 10);
const model = await startFakeModel();

/** Waits (bounded: 60 s) until the agent's spare is ready, so every warm sample really starts warm. */
async function spareReady(server: TestServer): Promise<void> {
  for (let i = 0; i < 600; i++) {
    const h = (await (await fetch(`${server.url}/health`)).json()) as any;
    if (h.pool.warm?.agents?.bench === 1) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("the warm spare did not come up within 60 s");
}

async function measure(warm: boolean) {
  const server = await startTestServer({ modelUrl: model.url, env: warm ? { ASH_WARM_POOL: "bench=1" } : {} });
  try {
    await server.api("/api/agents", { method: "POST", json: agentUpload("bench") });
    const create: number[] = [];
    const total: number[] = [];
    for (let i = 0; i < sessions; i++) {
      if (warm) await spareReady(server);
      // Let the previous session's teardown settle before the clock starts.
      await new Promise((r) => setTimeout(r, 500));
      const started = performance.now();
      const r = await server.api("/api/sessions", { method: "POST", json: { agent: "bench" } });
      create.push(performance.now() - started);
      const { session } = await r.json();
      total.push(await msToFirstText(await server.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: `hello ${i}` } }), started));
      await server.api(`/api/sessions/${session.id}`, { method: "DELETE" });
    }
    return { create, total };
  } finally {
    await server.dispose();
  }
}

const cold = await measure(false);
const warm = await measure(true);
await model.close();

console.log(`warm pool, ${new Date().toISOString()}, node ${process.version}, ${sessions} sessions each`);
console.log(row("cold: POST /api/sessions", cold.create));
console.log(row("cold: create -> first text_delta", cold.total));
console.log(row("warm: POST /api/sessions", warm.create));
console.log(row("warm: create -> first text_delta", warm.total));
