// The latency a forwarded request adds: time to first text of a later turn
// sent to the server that runs the session (the direct call, the baseline)
// against the same turn sent to another server, which passes it on over the
// signed hop, interleaved in the same run. Two servers on one PostgreSQL
// database (ASH_TEST_POSTGRES_URL, as for the tests).
//
//   npx tsx bench/forwarding.ts [turns=40]
import { startFakeModel } from "../tests/fake-model/fake-model.mjs";
import { agentUpload, startTestServer } from "../tests/helpers/server";
import { createPostgresDatabase } from "../tests/helpers/postgres";
import { msToFirstText, row } from "./stats";

const turns = Number(process.argv[2] ?? 40);
const model = await startFakeModel();
const database = await createPostgresDatabase();
const env = { ASH_DATABASE_URL: database.url, ASH_CLUSTER_SECRET: "bench-cluster-secret-0123456789abcdef", ASH_WARM_DEMAND_MS: "0" };
const owner = await startTestServer({ modelUrl: model.url, env });
const other = await startTestServer({ modelUrl: model.url, env });
try {
  await owner.api("/api/agents", { method: "POST", json: agentUpload("bench") });
  const { session } = await (await owner.api("/api/sessions", { method: "POST", json: { agent: "bench" } })).json();
  // The first turn starts the agent process; only later turns are measured.
  await msToFirstText(await owner.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "warm up" } }), performance.now());

  const direct: number[] = [];
  const forwarded: number[] = [];
  const time = async (via: typeof owner, into: number[], i: number) => {
    const t = performance.now();
    const response = await via.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: `turn ${i}` } });
    if (via === other && response.headers.get("x-ash-forwarded-to") === null) throw new Error("the turn sent to the other server was not passed on");
    into.push(await msToFirstText(response, t));
  };
  for (let i = 0; i < turns; i++) {
    // Alternating, so drift on the machine touches both sides alike.
    if (i % 2 === 0) {
      await time(owner, direct, i);
      await time(other, forwarded, i);
    } else {
      await time(other, forwarded, i);
      await time(owner, direct, i);
    }
  }
  const status = async (via: typeof owner) => {
    const samples: number[] = [];
    for (let i = 0; i < turns; i++) {
      const t = performance.now();
      await (await via.api(`/api/sessions/${session.id}`)).text();
      samples.push(performance.now() - t);
    }
    return samples;
  };
  const directReads = await status(owner);
  const forwardedReads = await status(other);

  console.log(`forwarding, ${new Date().toISOString()}, node ${process.version}`);
  console.log(row("later turn, sent to the owner (baseline)", direct));
  console.log(row("later turn, sent to another server (forwarded)", forwarded));
  console.log(row("GET /api/sessions/:id at the owner (baseline)", directReads));
  console.log(row("GET /api/sessions/:id at another server", forwardedReads));
} finally {
  await other.dispose();
  await owner.dispose();
  await model.close();
  await database.drop();
}
