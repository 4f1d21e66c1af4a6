// How many sessions a machine holds and how fast they start: memory of an idle
// session past the hot window, create -> first text with and without a demand
// spare (and the bare CLI's own first message against its later ones), DELETE
// of a session whose agent process is starting, a burst of 10 new sessions
// (first and repeated) with and without the start queue, later turns while the pool
// refills, and CPU seconds per turn and per idle minute. Every row has its
// baseline measured in the same run; the table goes into docs/benchmarks.md.
//
//   npx tsx bench/density.ts [samples=8] [--no-write]
import { readdirSync, readFileSync, readlinkSync, writeFileSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { cpus, loadavg, tmpdir, totalmem } from "node:os";
import { query } from "@anthropic-ai/claude-agent-sdk";
import { join } from "node:path";
import { startFakeModel } from "../tests/fake-model/fake-model.mjs";
import { agentUpload, startTestServer, type TestServer } from "../tests/helpers/server";
import { loadConfig } from "../src/config";
import { SPARE_MEMORY_MB } from "../src/sessions/warm-pool";
import { bareCliOptions } from "./cli-baseline";
import { cpuSeconds } from "./proc";
import { msToFirstText, summarize } from "./stats";

const samples = Number(process.argv.find((a) => /^\d+$/.test(a)) ?? 8);
const write = !process.argv.includes("--no-write");
const [load1, load5] = loadavg();
const model = await startFakeModel();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function server(env: Record<string, string>): Promise<TestServer> {
  const s = await startTestServer({ modelUrl: model.url, env });
  await s.api("/api/agents", { method: "POST", json: agentUpload("bench") });
  return s;
}
const health = async (s: TestServer): Promise<any> => (await fetch(`${s.url}/health`)).json();
async function create(s: TestServer): Promise<any> {
  return (await (await s.api("/api/sessions", { method: "POST", json: { agent: "bench" } })).json()).session;
}
async function firstText(s: TestServer, id: string, content: string, started = performance.now()): Promise<number> {
  return msToFirstText(await s.api(`/api/sessions/${id}/messages`, { method: "POST", json: { content } }), started);
}
const del = (s: TestServer, id: string) => s.api(`/api/sessions/${id}`, { method: "DELETE" });
/** Bounded wait (60 s) for a condition. */
async function until(ok: () => Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if (await ok()) return;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}`);
}
const spareReady = (s: TestServer) => until(async () => (await health(s)).pool.warm.agents.bench >= 1, "a spare");

// --- /proc readings -------------------------------------------------------------

function children(): Map<number, number[]> {
  const tree = new Map<number, number[]>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      tree.set(ppid, [...(tree.get(ppid) ?? []), Number(name)]);
    } catch {
      // gone
    }
  }
  return tree;
}
function descendants(pid: number): number[] {
  const tree = children();
  const out: number[] = [];
  const walk = (p: number) => {
    for (const c of tree.get(p) ?? []) {
      out.push(c);
      walk(c);
    }
  };
  walk(pid);
  return out;
}
/** CPU seconds of a process tree: each process's own time and that of children it has reaped. */
function treeCpuSeconds(pid: number): number {
  let seconds = 0;
  for (const p of [pid, ...descendants(pid)]) {
    try {
      seconds += cpuSeconds(p, { reaped: true });
    } catch {
      // gone
    }
  }
  return seconds;
}
/** RSS and PSS (MB) and agent process count of the server's processes that belong to one sandbox. */
function sandboxMemory(s: TestServer, sandboxId: string): { rss: number; pss: number; agents: number; processes: number } {
  let rss = 0;
  let pss = 0;
  let agents = 0;
  let processes = 0;
  for (const p of descendants(s.pid())) {
    try {
      const mine =
        readFileSync(`/proc/${p}/cgroup`, "utf8").includes(sandboxId) ||
        readlinkSync(`/proc/${p}/cwd`).includes(sandboxId) ||
        readFileSync(`/proc/${p}/cmdline`, "utf8").includes(sandboxId);
      if (!mine) continue;
      const rollup = readFileSync(`/proc/${p}/smaps_rollup`, "utf8");
      rss += Number(/^Rss:\s+(\d+)/m.exec(rollup)?.[1] ?? 0);
      pss += Number(/^Pss:\s+(\d+)/m.exec(rollup)?.[1] ?? 0);
      processes++;
      if (/claude-agent-sdk-linux-[^/]+\/claude$/.test(readFileSync(`/proc/${p}/cmdline`, "utf8").split("\0")[0] ?? "")) agents++;
    } catch {
      // gone
    }
  }
  return { rss: rss / 1024, pss: pss / 1024, agents, processes };
}

// --- measurements ---------------------------------------------------------------

const rows: Array<{ what: string; goal: string; ours: string; baseline: string; met: string }> = [];
const fmt = (xs: number[], unit = "ms") => {
  const s = summarize(xs);
  return `${s.median.toFixed(unit === "ms" ? 0 : 1)} / ${s.p95.toFixed(unit === "ms" ? 0 : 1)} ${unit} (n=${s.n})`;
};
const p50 = (xs: number[]) => summarize(xs).median;
const p95 = (xs: number[]) => summarize(xs).p95;

// 1. Cold server (no spares): the baselines for create and later turns, DELETE of a starting session, CPU.
const cold = await server({ ASH_WARM_DEMAND_MS: "0" });
const coldFirst: number[] = [];
const deleteStarting: number[] = [];
const deleteUp: number[] = [];
for (let i = 0; i < samples; i++) {
  const t = performance.now();
  const s = await create(cold);
  coldFirst.push(await firstText(cold, s.id, `hello ${i}`, t));
  let d = performance.now();
  await del(cold, s.id);
  deleteUp.push(performance.now() - d);
  const fresh = await create(cold);
  d = performance.now();
  await del(cold, fresh.id);
  deleteStarting.push(performance.now() - d);
  await sleep(300);
}
// CPU per turn: 10 turns on one live session; per idle minute: 20 s of a hot idle session.
const cpuSession = await create(cold);
await firstText(cold, cpuSession.id, "warm up");
let cpu0 = treeCpuSeconds(cold.pid());
const turnsN = 10;
for (let i = 0; i < turnsN; i++) await firstText(cold, cpuSession.id, `turn ${i}`);
const cpuPerTurn = (treeCpuSeconds(cold.pid()) - cpu0) / turnsN;
cpu0 = treeCpuSeconds(cold.pid());
await sleep(20_000);
const cpuHotIdleMinute = ((treeCpuSeconds(cold.pid()) - cpu0) * 60) / 20;
// Later turns while another session's process starts (what a refill costs without a pool).
const laterNoPool: number[] = [];
for (let i = 0; i < samples; i++) {
  const other = await create(cold);
  laterNoPool.push(await firstText(cold, cpuSession.id, `later ${i}`));
  await del(cold, other.id);
  await sleep(300);
}
await del(cold, cpuSession.id);
// After the teardown: processes that exit inside the window take their CPU time out of the sum.
await sleep(2000);
const emptyCpu0 = treeCpuSeconds(cold.pid());
await sleep(20_000);
const cpuEmptyMinute = ((treeCpuSeconds(cold.pid()) - emptyCpu0) * 60) / 20;
await cold.dispose();

// 2. Default server: the agent had a session recently, so it has a (primed) spare.
const warm = await server({});
await del(warm, (await create(warm)).id);
const spareFirst: number[] = [];
const laterTurn: number[] = [];
for (let i = 0; i < samples; i++) {
  await spareReady(warm);
  await sleep(300);
  const t = performance.now();
  const s = await create(warm);
  spareFirst.push(await firstText(warm, s.id, `hello ${i}`, t));
  for (let j = 0; j < 2; j++) laterTurn.push(await firstText(warm, s.id, `again ${j}`));
  await del(warm, s.id);
}
// Later turns of a live session while the pool refills (another session just took the spare).
const hot = await create(warm);
await firstText(warm, hot.id, "first");
const laterRefill: number[] = [];
for (let i = 0; i < samples; i++) {
  await spareReady(warm);
  await sleep(300);
  const other = await create(warm);
  laterRefill.push(await firstText(warm, hot.id, `later ${i}`));
  await del(warm, other.id);
}
await warm.dispose();

// The same spare without priming (ASH_WARM_PRIME=0): what the priming step saves.
const unprimed = await server({ ASH_WARM_PRIME: "0" });
await del(unprimed, (await create(unprimed)).id);
const unprimedFirst: number[] = [];
for (let i = 0; i < samples; i++) {
  await spareReady(unprimed);
  await sleep(300);
  const t = performance.now();
  const s = await create(unprimed);
  unprimedFirst.push(await firstText(unprimed, s.id, `hello ${i}`, t));
  await del(unprimed, s.id);
}
await unprimed.dispose();

// 3. Ten new sessions at once: the start queue (defaults) against all starting together. With
// spares, the first burst finds the one spare of an agent used once; the later ones find as many
// spares as that burst (within the memory budget).
const demandSpares = Math.min(10, Math.floor(loadConfig({ ASH_DATA_DIR: tmpdir() }).warmMemoryMb / SPARE_MEMORY_MB));
async function burst(env: Record<string, string>, rounds = 3): Promise<{ first: number[]; again: number[] }> {
  const s = await server(env);
  const out = { first: [] as number[], again: [] as number[] };
  const withSpares = env.ASH_WARM_DEMAND_MS !== "0";
  try {
    if (withSpares) {
      await del(s, (await create(s)).id);
      await spareReady(s);
    }
    for (let r = 0; r < rounds; r++) {
      const into = r === 0 ? out.first : out.again;
      const t = performance.now();
      const ids = await Promise.all(Array.from({ length: 10 }, async (_, i) => {
        const session = await create(s);
        into.push(await firstText(s, session.id, `burst ${r} ${i}`, t));
        return session.id as string;
      }));
      await Promise.all(ids.map((id) => del(s, id)));
      if (withSpares) await until(async () => (await health(s)).pool.warm.agents.bench >= demandSpares, `${demandSpares} spares`);
      await sleep(1000);
    }
  } finally {
    await s.dispose();
  }
  return out;
}
const burstQueued = await burst({});
const burstAll = await burst({ ASH_START_CONCURRENCY: "10", ASH_WARM_DEMAND_MS: "0" });

// 3b. Baseline for a spare's first turn: the Claude Code CLI kept alive without the server (no
// sandbox), primed the same way (one side question), then its first message and later ones.
const cliFirst: number[] = [];
const cliLater: number[] = [];
{
  const dir = await mkdtemp(join(tmpdir(), "ash-bench-cli-"));
  await writeFile(join(dir, "CLAUDE.md"), "You are a test agent.");
  await mkdir(join(dir, ".config"), { recursive: true });
  for (let i = 0; i < samples; i++) {
    const queue: unknown[] = [];
    let wake: (() => void) | undefined;
    let finished = false;
    const input = async function* () {
      while (!finished) {
        while (queue.length > 0) yield queue.shift() as any;
        await new Promise<void>((r) => (wake = r));
      }
    };
    const q = query({
      prompt: input(),
      options: bareCliOptions(dir, model.url),
    });
    let onText: (() => void) | undefined;
    let onResult: (() => void) | undefined;
    const pump = (async () => {
      for await (const m of q as AsyncIterable<any>) {
        if (m.type === "stream_event" && m.event?.delta?.type === "text_delta") onText?.();
        if (m.type === "result") onResult?.();
      }
    })();
    await q.initializationResult();
    await (q as unknown as { askSideQuestion(text: string): Promise<unknown> }).askSideQuestion("ok");
    await sleep(300);
    for (let turn = 0; turn < 3; turn++) {
      const t = performance.now();
      const text = new Promise<number>((r) => (onText = () => ((onText = undefined), r(performance.now() - t))));
      const result = new Promise<void>((r) => (onResult = r));
      queue.push({ type: "user", message: { role: "user", content: `hello ${turn}` }, parent_tool_use_id: null, session_id: "" });
      wake?.();
      (turn === 0 ? cliFirst : cliLater).push(await text);
      await result;
    }
    finished = true;
    wake?.();
    q.close();
    await pump.catch(() => undefined);
  }
  await rm(dir, { recursive: true, force: true });
}

// 4. Memory and CPU of a session past the hot window.
const short = await server({ ASH_KEEPALIVE_MS: "1000", ASH_WARM_DEMAND_MS: "0" });
const hotMem: ReturnType<typeof sandboxMemory>[] = [];
const idleMem: ReturnType<typeof sandboxMemory>[] = [];
const wake: number[] = [];
let cpuIdleMinute = NaN;
for (let i = 0; i < 3; i++) {
  const s = await create(short);
  await firstText(short, s.id, "hello");
  hotMem.push(sandboxMemory(short, s.sandboxId));
  await until(async () => (await (await short.api(`/api/sessions/${s.id}`)).json()).session.state === "idle", "the idle state");
  await sleep(1500);
  idleMem.push(sandboxMemory(short, s.sandboxId));
  if (i === 0) {
    const c0 = treeCpuSeconds(short.pid());
    await sleep(20_000);
    cpuIdleMinute = ((treeCpuSeconds(short.pid()) - c0) * 60) / 20;
  }
  wake.push(await firstText(short, s.id, "back again"));
  await del(short, s.id);
}
await short.dispose();
await model.close();

// --- the table --------------------------------------------------------------------

const idleRss = idleMem.map((m) => m.rss);
const idleAgents = Math.max(...idleMem.map((m) => m.agents));
rows.push({
  what: "memory of one idle session past the window (RSS / PSS), agent processes",
  goal: "≤ 10 MB, 0 agent processes",
  ours: `RSS ${p50(idleRss).toFixed(1)} MB, PSS ${p50(idleMem.map((m) => m.pss)).toFixed(1)} MB, ${idleAgents} agent processes (${idleMem[0]?.processes} processes)`,
  baseline: `hot: RSS ${p50(hotMem.map((m) => m.rss)).toFixed(0)} MB, PSS ${p50(hotMem.map((m) => m.pss)).toFixed(0)} MB, ${hotMem[0]?.agents} agent process`,
  met: p50(idleRss) <= 10 && idleAgents === 0 ? "yes" : "no",
});
rows.push({
  what: "idle session past the window: message → first text (agent process started again, no restore)",
  goal: "—",
  ours: fmt(wake),
  baseline: `cold new session ${fmt(coldFirst)}`,
  met: "—",
});
rows.push({
  what: "create → first text, new session, default config, agent used in the last hour",
  goal: "≤ 150 ms p50",
  ours: `primed spare: ${fmt(spareFirst)}`,
  baseline: `no spares: ${fmt(coldFirst)}; spare not primed: ${fmt(unprimedFirst)}`,
  met: p50(spareFirst) <= 150 ? "yes" : "no",
});
rows.push({
  what: "create → first text with a warm spare, against a later turn's first text",
  goal: "≤ 1.5 × a later turn",
  ours: `primed: ${fmt(spareFirst)} = ${(p50(spareFirst) / p50(laterTurn)).toFixed(1)} ×`,
  baseline: `later turns ${fmt(laterTurn)}; not primed: ${(p50(unprimedFirst) / p50(laterTurn)).toFixed(1)} ×; the CLI kept alive without the server, primed the same way: first message ${fmt(cliFirst)} against later ${fmt(cliLater)} = ${(p50(cliFirst) / p50(cliLater)).toFixed(1)} ×`,
  met: p50(spareFirst) <= 1.5 * p50(laterTurn) ? "yes" : "no",
});
rows.push({
  what: "DELETE of a session created a moment ago (its agent process starting)",
  goal: "≤ 50 ms p95",
  ours: fmt(deleteStarting),
  baseline: `DELETE after its first turn: ${fmt(deleteUp)}`,
  met: p95(deleteStarting) <= 50 ? "yes" : "no",
});
rows.push({
  what: "10 new sessions at once on one agent: first text",
  goal: "≤ 2 s p50",
  ours: `a burst like an earlier one (${demandSpares} spares sized by it, queue ${cpus().length} at a time): ${fmt(burstQueued.again)}; the first burst (one spare): ${fmt(burstQueued.first)}`,
  baseline: `all 10 starting at once, no spare: ${fmt([...burstAll.first, ...burstAll.again])}`,
  met: p50(burstQueued.again) <= 2000 ? (p50(burstQueued.first) <= 2000 ? "yes" : "a repeated burst yes; the first no") : "no",
});
rows.push({
  what: "later turns while another process starts (pool refill / a cold session)",
  goal: "no slower than without a pool",
  ours: `pool refilling: ${fmt(laterRefill)}`,
  baseline: `no pool, a cold session starting: ${fmt(laterNoPool)}`,
  met: p50(laterRefill) <= p50(laterNoPool) * 1.1 ? "yes (within 10 %)" : "no",
});
rows.push({
  what: "CPU per turn (server + agent process tree, /proc)",
  goal: "—",
  ours: `${cpuPerTurn.toFixed(3)} CPU s a turn (instant fake model, n=${turnsN})`,
  baseline: "—",
  met: "—",
});
rows.push({
  what: "CPU per idle minute (server + processes)",
  goal: "—",
  ours: `one idle session past the window: ${cpuIdleMinute.toFixed(2)} CPU s`,
  baseline: `one hot idle session: ${cpuHotIdleMinute.toFixed(2)} CPU s; no session: ${cpuEmptyMinute.toFixed(2)} CPU s`,
  met: "—",
});

const header = `Run ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC · ${cpus().length} × ${cpus()[0]?.model ?? "cpu"} · ${(totalmem() / 2 ** 30).toFixed(0)} GiB · load average ${load1!.toFixed(2)} / ${load5!.toFixed(2)} at the start, ${loadavg()[0]!.toFixed(2)} at the end · node ${process.version}`;
const table = [
  header,
  "",
  "Medians / 95th percentiles. Against the instant fake model, real sandboxes (bubblewrap, cgroup v1), SQLite.",
  "",
  "| what | goal | Ash now | baseline (same run) | met |",
  "|---|---|---|---|---|",
  ...rows.map((r) => `| ${r.what} | ${r.goal} | ${r.ours} | ${r.baseline} | ${r.met} |`),
].join("\n");
console.log(table);

if (write) {
  const page = join(import.meta.dirname, "../docs/benchmarks.md");
  const doc = readFileSync(page, "utf8");
  const start = "<!-- density:start -->";
  const end = "<!-- density:end -->";
  const block = `${start}\n${table}\n${end}`;
  const next = doc.includes(start) ? doc.replace(new RegExp(`${start}[\\s\\S]*?${end}`), block) : `${doc.trimEnd()}\n\n## Density (\`bench/density.ts\`)\n\n${block}\n`;
  writeFileSync(page, next);
}
