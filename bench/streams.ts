// Many event streams at once: (a) sessions streaming a slow answer at the same
// time, (b) readers following one session's stream (GET /api/sessions/:id/stream)
// while it streams. For every text_delta a client receives, the added latency is
// its arrival time minus the time the fake model wrote that piece (both
// Date.now() in this process). Each row has its baseline, one stream alone, in
// the same run. Server memory per stream is the growth of the server process's
// RSS while the streams are open, divided by their number.
//
//   npx tsx bench/streams.ts [sessions=20] [readers=200] [--no-write]
import { readFileSync, writeFileSync } from "node:fs";
import { cpus, loadavg, totalmem } from "node:os";
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import { startFakeModel } from "../tests/fake-model/fake-model.mjs";
import { agentUpload, startTestServer, type TestServer } from "../tests/helpers/server";
import { cpuSeconds } from "./proc";
import { readArrivals } from "./sse-arrivals.mjs";
import { summarize } from "./stats";

const numbers = process.argv.slice(2).filter((a) => /^\d+$/.test(a)).map(Number);
const sessionsN = numbers[0] ?? 20;
const readersN = numbers[1] ?? 200;
const write = !process.argv.includes("--no-write");
const SLOW_MS = 4000;
const [load1, load5] = loadavg();
const model = await startFakeModel();

const rssMb = (pid: number) => Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0) / 1024;

/** The model request whose last user text carries `tag`. */
function requestTagged(tag: string): any {
  return [...model.requests].reverse().find((r: any) => JSON.stringify(r.body.messages?.at(-1) ?? "").includes(tag));
}

/** Added latency of every text piece a client received, against when the model wrote it. */
function added(received: number[], emitted: number[] | undefined): number[] {
  if (!emitted) return [];
  const n = Math.min(received.length, emitted.length);
  return Array.from({ length: n }, (_, i) => received[i]! - emitted[i]!);
}

async function server(maxSandboxes: number): Promise<TestServer> {
  const s = await startTestServer({ modelUrl: model.url, env: { ASH_WARM_DEMAND_MS: "0", ASH_MAX_SANDBOXES: String(maxSandboxes), ASH_KEEPALIVE_MS: "600000" } });
  await s.api("/api/agents", { method: "POST", json: agentUpload("bench") });
  return s;
}
const create = async (s: TestServer) => (await (await s.api("/api/sessions", { method: "POST", json: { agent: "bench" } })).json()).session;
const send = (s: TestServer, id: string, content: string) => s.api(`/api/sessions/${id}/messages`, { method: "POST", json: { content } });

/** When the server stored each text piece of a session after event `after` (ms). */
const storedAt = async (s: TestServer, id: string, after: number) =>
  ((await (await s.api(`/api/sessions/${id}/events?after=${after}&type=text_delta&limit=1000`)).json()).events as Array<{ createdAt: string }>).map((e) => Date.parse(e.createdAt));
const lastSeq = async (s: TestServer, id: string) => ((await (await s.api(`/api/sessions/${id}/events?limit=1000`)).json()).events.at(-1)?.sequence ?? 0) as number;

// (a) N sessions streaming at the same time, against one alone. Each piece's added latency is also
// split where the server stored it: model → server (the agent process's part) and server → client.
async function sessionsAtOnce(s: TestServer, ids: string[], round: string): Promise<{ lat: number[]; agent: number[]; served: number[]; rss: number }> {
  const before = rssMb(s.pid());
  let peak = before;
  const sampler = setInterval(() => (peak = Math.max(peak, rssMb(s.pid()))), 100);
  const from = await Promise.all(ids.map((id) => lastSeq(s, id)));
  const results = await Promise.all(
    ids.map(async (id, i) => {
      const tag = `tag-${round}-${i}`;
      const got = await readArrivals(await send(s, id, `${tag}\n#slow ${SLOW_MS}`));
      return { id, i, texts: got.texts, emitted: requestTagged(tag)?.emittedAt as number[] | undefined };
    }),
  );
  clearInterval(sampler);
  const agent: number[] = [];
  const served: number[] = [];
  for (const r of results) {
    const stored = await storedAt(s, r.id, from[r.i]!);
    agent.push(...added(stored, r.emitted));
    served.push(...added(r.texts, stored));
  }
  return { lat: results.flatMap((r) => added(r.texts, r.emitted)), agent, served, rss: (peak - before) / ids.length };
}

const a = await server(sessionsN + 1);
const ids: string[] = [];
for (let i = 0; i < sessionsN; i++) ids.push((await create(a)).id);
// Every agent process up and past its first turn before measuring.
await Promise.all(ids.map(async (id) => readArrivals(await send(a, id, "warm up"))));
const oneSession = await sessionsAtOnce(a, ids.slice(0, 1), "one");
const allSessions = await sessionsAtOnce(a, ids, "all");
await a.dispose();

// (b) R readers of one session's stream while it streams, against one reader. The readers run in a
// worker thread (stream-readers.mjs): parsing 200 streams in this thread would delay the fake model's
// timestamps and the readers' own, and count the bench's work as the server's.
async function readersOf(s: TestServer, id: string, readers: number, round: string): Promise<{ lat: number[]; spread: number[]; rss: number; replayed: number; cpu: number }> {
  const seq = await lastSeq(s, id);
  const before = rssMb(s.pid());
  const cpuBefore = cpuSeconds(s.pid());
  let peak = before;
  const sampler = setInterval(() => (peak = Math.max(peak, rssMb(s.pid()))), 100);
  // Each reader replays the history from the start, then follows the live turn.
  const worker = new Worker(new URL("./stream-readers.mjs", import.meta.url), { workerData: { url: s.url, apiKey: s.apiKey, sessionId: id, readers, seq } });
  const done = new Promise<Array<{ texts: number[]; replayed: number }>>((resolve, reject) => {
    worker.on("message", (message) => {
      if (message !== "open") resolve(message.results);
    });
    worker.once("error", reject);
    worker.once("exit", (code) => reject(new Error(`the readers' worker stopped (${code})`)));
  });
  await new Promise<void>((resolve, reject) => {
    worker.on("message", (message) => message === "open" && resolve());
    worker.once("error", reject);
  });
  const tag = `tag-${round}`;
  await (await send(s, id, `${tag}\n#slow ${SLOW_MS}`)).text();
  const results = await done;
  await worker.terminate();
  clearInterval(sampler);
  const emitted = requestTagged(tag)?.emittedAt;
  // What the fan-out itself adds: each reader's arrival minus the first reader's arrival of the same event.
  const pieces = Math.min(...results.map((r) => r.texts.length));
  const spread = Array.from({ length: pieces }, (_, k) => {
    const first = Math.min(...results.map((r) => r.texts[k]!));
    return results.map((r) => r.texts[k]! - first);
  }).flat();
  const cpu = cpuSeconds(s.pid()) - cpuBefore;
  return { lat: results.flatMap((r) => added(r.texts, emitted)), spread, rss: (peak - before) / readers, replayed: Math.min(...results.map((r) => r.replayed)), cpu };
}

const b = await server(2);
const long = await create(b);
// A session with some history to replay.
for (let i = 0; i < 5; i++) await (await send(b, long.id, `history ${i}`)).text();
const oneReader = await readersOf(b, long.id, 1, "one-reader");
const manyReaders = await readersOf(b, long.id, readersN, "many-readers");
await b.dispose();
await model.close();

// --- the table --------------------------------------------------------------------

const fmt = (xs: number[]) => {
  const s = summarize(xs);
  return `${s.median.toFixed(0)} / ${s.p95.toFixed(0)} ms (n=${s.n})`;
};
const p95 = (xs: number[]) => summarize(xs).p95;
const rows = [
  {
    what: `(a) ${sessionsN} sessions streaming at once (#slow ${SLOW_MS} ms, 40 pieces each): added latency per text event`,
    goal: "≤ 20 ms p95",
    ours: fmt(allSessions.lat),
    baseline: `one session alone: ${fmt(oneSession.lat)}`,
    met: p95(allSessions.lat) <= 20 ? "yes" : "no",
  },
  {
    what: `(a) of that: model → stored by the server (the agent process parses the model's stream and reports each piece)`,
    goal: "—",
    ours: fmt(allSessions.agent),
    baseline: `one session alone: ${fmt(oneSession.agent)}`,
    met: "—",
  },
  {
    what: `(a) of that: stored by the server → read by the client`,
    goal: "—",
    ours: fmt(allSessions.served),
    baseline: `one session alone: ${fmt(oneSession.served)}`,
    met: "—",
  },
  {
    what: `(a) server RSS per streaming session (growth while ${sessionsN} stream)`,
    goal: "—",
    ours: `${allSessions.rss.toFixed(2)} MB`,
    baseline: `one session: ${oneSession.rss.toFixed(2)} MB`,
    met: "—",
  },
  {
    what: `(b) ${readersN} readers of one session's stream (replay of ${manyReaders.replayed} events, then the live turn): added latency per text event`,
    goal: "≤ 20 ms p95",
    ours: fmt(manyReaders.lat),
    baseline: `one reader: ${fmt(oneReader.lat)}`,
    met: p95(manyReaders.lat) <= 20 ? "yes" : "no",
  },
  {
    what: `(b) the same ${readersN} readers: each reader's arrival of an event after the first reader's`,
    goal: "≤ 20 ms p95",
    ours: fmt(manyReaders.spread),
    baseline: "—",
    met: p95(manyReaders.spread) <= 20 ? "yes" : "no",
  },
  {
    what: `(b) server CPU while the readers replay the history and follow the turn (/proc)`,
    goal: "—",
    ours: `${manyReaders.cpu.toFixed(2)} CPU s for ${readersN} readers (${((manyReaders.cpu / readersN) * 1000).toFixed(1)} ms a reader)`,
    baseline: `one reader: ${oneReader.cpu.toFixed(2)} CPU s`,
    met: "—",
  },
  {
    what: `(b) server RSS per reader (growth while ${readersN} read)`,
    goal: "—",
    ours: `${manyReaders.rss.toFixed(3)} MB`,
    baseline: `one reader: ${oneReader.rss.toFixed(2)} MB`,
    met: "—",
  },
];
const header = `Run ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC · ${cpus().length} × ${cpus()[0]?.model ?? "cpu"} · ${(totalmem() / 2 ** 30).toFixed(0)} GiB · load average ${load1!.toFixed(2)} / ${load5!.toFixed(2)} at the start, ${loadavg()[0]!.toFixed(2)} at the end · node ${process.version}`;
const table = [
  header,
  "",
  "Medians / 95th percentiles. Added latency: when the client read a text piece minus when the fake model wrote it (the clients run in the bench process: (a)'s in its main thread with the fake model, (b)'s readers in a worker thread of their own; both share the machine's CPU with the server).",
  "",
  "| what | goal | Ash now | baseline (same run) | met |",
  "|---|---|---|---|---|",
  ...rows.map((r) => `| ${r.what} | ${r.goal} | ${r.ours} | ${r.baseline} | ${r.met} |`),
].join("\n");
console.log(table);

if (write) {
  const page = join(import.meta.dirname, "../docs/benchmarks.md");
  const doc = readFileSync(page, "utf8");
  const start = "<!-- streams:start -->";
  const end = "<!-- streams:end -->";
  const block = `${start}\n${table}\n${end}`;
  const next = doc.includes(start) ? doc.replace(new RegExp(`${start}[\\s\\S]*?${end}`), block) : doc.replace("<!-- density:end -->", `<!-- density:end -->\n\n### Many streams at once (\`bench/streams.ts\`)\n\n${block}`);
  writeFileSync(page, next);
}
