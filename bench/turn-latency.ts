// Session create and time-to-first-text against the instant fake model:
// Ash (one live CLI per session, fed as streaming input) against the baseline
// of one Agent SDK query() per turn, measured in the same run.
//
//   npx tsx bench/turn-latency.ts [sessions=10] [turns=5]
import { mkdtemp, mkdir, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { query } from "@anthropic-ai/claude-agent-sdk";
import { startFakeModel } from "../tests/fake-model/fake-model.mjs";
import { agentUpload, startTestServer } from "../tests/helpers/server";
import { bareCliOptions } from "./cli-baseline";
import { msToFirstText, row } from "./stats";

const sessions = Number(process.argv[2] ?? 10);
const turns = Number(process.argv[3] ?? 5);

const model = await startFakeModel();
const server = await startTestServer({ modelUrl: model.url });
await server.api("/api/agents", { method: "POST", json: agentUpload("bench") });

const create: number[] = [];
const firstTurn: number[] = [];
const laterTurns: number[] = [];
for (let i = 0; i < sessions; i++) {
  let t = performance.now();
  const r = await server.api("/api/sessions", { method: "POST", json: { agent: "bench" } });
  create.push(performance.now() - t);
  const { session } = await r.json();
  for (let j = 0; j < turns; j++) {
    t = performance.now();
    const ms = await msToFirstText(await server.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: `turn ${j}` } }), t);
    (j === 0 ? firstTurn : laterTurns).push(ms);
  }
  await server.api(`/api/sessions/${session.id}`, { method: "DELETE" });
}
await server.dispose();

// Baseline: the plain SDK pattern, a fresh query() (and CLI process) per turn.
const dir = await mkdtemp(join(tmpdir(), "ash-bench-"));
await writeFile(join(dir, "CLAUDE.md"), "You are a test agent.");
await mkdir(join(dir, ".config"), { recursive: true });
const baseline: number[] = [];
for (let i = 0; i < Math.min(sessions * turns, 20); i++) {
  const t = performance.now();
  let first = NaN;
  for await (const m of query({
    prompt: `turn ${i}`,
    options: bareCliOptions(dir, model.url),
  })) {
    const e = m as any;
    if (Number.isNaN(first) && e.type === "stream_event" && e.event?.delta?.type === "text_delta") first = performance.now() - t;
  }
  baseline.push(first);
}
await model.close();

console.log(`turn latency, ${new Date().toISOString()}, node ${process.version}`);
console.log(row("POST /api/sessions", create));
console.log(row("first turn: message -> first text_delta", firstTurn));
console.log(row("later turns: message -> first text_delta", laterTurns));
console.log(row("baseline query() per turn -> first text delta", baseline));
