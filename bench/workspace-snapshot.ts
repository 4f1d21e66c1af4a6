// What saving and restoring a workspace costs, against plain tools on the
// same tree in the same run (median and p95 of `rounds`):
//   - 100 MB in 25,600 files and 10 MB in 2 files, in the version store
//     (format 3): first save against `tar -cf - . | zstd -1`; a save with
//     nothing changed, a save after 10 files changed and a verify against a
//     `find -newer` stat walk; a restore against `zstd -d | tar -x`, on disk
//     and into /dev/shm (a memory file system, where only CPU counts);
//   - `many` small files (300,000 by default) saved by the version store in
//     this process: a timer probe's lateness (how long the event loop was
//     held) and how much this process's RSS grows while it saves;
//   - with `--server`, the server part of earlier runs: 100,000 small files
//     saved by a real server (pause), /health p99 and the server's RSS.
// The store part runs the tools as this process's user on folders no sandbox
// can write (trustedFolderIo); the server part goes through the sandbox.
//
//   npx tsx bench/workspace-snapshot.ts [rounds=5] [many=300000] [--server]
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { createVersionStore } from "../src/snapshots";
import { changeTimeMarginMs } from "../src/sandbox/timestamps";
import { trustedFolderIo } from "../src/sandbox/workspace-io";
import { startFakeModel } from "../tests/fake-model/fake-model.mjs";
import { agentUpload, startTestServer } from "../tests/helpers/server";
import { row, summarize } from "./stats";

const args = process.argv.slice(2).filter((arg) => !arg.startsWith("--"));
const rounds = Number(args[0] ?? 5);
const manyFiles = Number(args[1] ?? 300_000);
const withServer = process.argv.includes("--server");
const root = mkdtempSync(join(tmpdir(), "ash-bench-snap-"));
const memoryRoot = existsSync("/dev/shm") ? mkdtempSync("/dev/shm/ash-bench-snap-") : null;
// As the server does for its sandbox folders: how far back a save lists changes since the last one.
const changedMarginMs = await changeTimeMarginMs(root);

function makeTree(dir: string, files: number, bytes: number): void {
  const per = Math.floor(bytes / files);
  for (let i = 0; i < files; i++) {
    const sub = join(dir, `d${Math.floor(i / 256)}`);
    if (i % 256 === 0) mkdirSync(sub, { recursive: true });
    writeFileSync(join(sub, `f${i}`), randomBytes(per));
  }
}

const time = async (work: () => unknown | Promise<unknown>, { sync = true } = {}) => {
  // Each step starts with nothing of an earlier step's still waiting to be written back to disk.
  if (sync) execFileSync("sync");
  const t = performance.now();
  await work();
  return performance.now() - t;
};
const sh = (command: string, cwd: string) => execFileSync("/bin/sh", ["-c", command], { cwd, stdio: ["ignore", "ignore", "inherit"] });
const p99 = (samples: number[]) => {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(0.99 * sorted.length) - 1)] ?? NaN;
};

console.log(`load average at start: ${loadavg().map((n) => n.toFixed(2)).join(" ")}`);
try {
  for (const [label, files, bytes] of [
    ["100 MB in 25,600 files", 25_600, 100 * 2 ** 20],
    ["10 MB in 2 files", 2, 10 * 2 ** 20],
  ] as const) {
    const ws = join(root, `ws-${files}`);
    makeTree(ws, files, bytes);
    const samples: Record<string, number[]> = {};
    const add = (name: string, ms: number) => (samples[name] ??= []).push(ms);
    let changedBytes = 0;
    for (let r = 0; r < rounds; r++) {
      const data = join(root, `store-${files}-${r}`);
      mkdirSync(data);
      const store = createVersionStore({ dataDir: data }, { changedMarginMs });
      const io = trustedFolderIo(ws);
      let first = "";
      add("version store: first save", await time(async () => (first = (await store.save(io)).id)));
      add("baseline: tar -cf - . | zstd -1", await time(() => sh(`tar -cf - . | zstd -q -1 -o ${data}/base.tar.zst -f`, ws)));
      add("version store: save, nothing changed", await time(() => store.save(io, { base: first })));
      sh(`touch ${data}/mark`, ws);
      add("baseline: find -newer stat walk", await time(() => sh(`find . -newer ${data}/mark > /dev/null`, ws)));
      add("version store: verify the live folder", await time(() => store.verify(first, io)));
      // Ten files get new bytes (same size, new mtime).
      const step = Math.max(1, Math.floor(files / 10));
      const changed = Array.from({ length: Math.min(10, files) }, (_, k) => k * step);
      for (const i of changed) writeFileSync(join(ws, `d${Math.floor(i / 256)}`, `f${i}`), randomBytes(Math.floor(bytes / files)));
      let second = first;
      add("version store: save, 10 files changed", await time(async () => {
        const version = await store.save(io, { base: first });
        second = version.id;
        changedBytes = version.changedBytes;
      }));
      // Restores alternate which goes first: this disk is slow for whichever writes right after an
      // earlier round's deletions. Into a memory file system too, where making files costs CPU only.
      const made: string[] = [];
      for (const [where, into] of memoryRoot ? [["", root], [" (tmpfs)", memoryRoot]] : [["", root]]) {
        const target = join(into, `restore-${files}-${r}`);
        const base = join(into, `base-${files}-${r}`);
        for (const dir of [target, base]) mkdirSync(dir), made.push(dir);
        const ours = async () => add(`version store: restore${where}`, await time(() => store.restore(second, trustedFolderIo(target))));
        const theirs = async () => add(`baseline: zstd -d | tar -x${where}`, await time(() => sh(`zstd -q -d -c ${data}/base.tar.zst | tar -xf -`, base)));
        if (r % 2 === 0) await ours(), await theirs();
        else await theirs(), await ours();
      }
      await store.dispose();
      for (const dir of [data, ...made]) rmSync(dir, { recursive: true, force: true });
    }
    console.log(`\n${label} (10 changed files: ${(changedBytes / 2 ** 20).toFixed(2)} MiB)`);
    for (const [name, s] of Object.entries(samples)) console.log(row(name, s));
    rmSync(ws, { recursive: true, force: true });
  }

  // Many small files, saved in this process: how long the event loop is held, and memory.
  {
    const ws = join(root, "many");
    mkdirSync(ws);
    sh(`python3 -c "
import os
for i in range(${manyFiles}):
    d = 'd%d' % (i // 1000)
    if i % 1000 == 0: os.makedirs(d)
    with open('%s/f%d' % (d, i), 'w') as f: f.write('%099d' % i)
"`, ws);
    const saveRounds = Math.max(1, Math.min(3, rounds));
    const late: number[] = [];
    const saves: number[] = [];
    const growth: number[] = [];
    const unchanged: number[] = [];
    const walks: number[] = [];
    for (let r = 0; r < saveRounds; r++) {
      const data = join(root, `store-many-${r}`);
      mkdirSync(data);
      const store = createVersionStore({ dataDir: data }, { changedMarginMs });
      const io = trustedFolderIo(ws);
      execFileSync("sync");
      global.gc?.();
      const rssBefore = process.memoryUsage.rss();
      let rssPeak = rssBefore;
      const tick = 10;
      let last = performance.now();
      const timer = setInterval(() => {
        const now = performance.now();
        late.push(now - last - tick);
        last = now;
        rssPeak = Math.max(rssPeak, process.memoryUsage.rss());
      }, tick);
      let first = "";
      saves.push(await time(async () => (first = (await store.save(io)).id), { sync: false }));
      clearInterval(timer);
      growth.push((rssPeak - rssBefore) / 2 ** 20);
      // The next turn's save when that turn changed nothing, against the stat walk alone.
      unchanged.push(await time(() => store.save(io, { base: first })));
      sh(`touch ${data}/mark`, ws);
      walks.push(await time(() => sh(`find . -newer ${data}/mark > /dev/null`, ws)));
      await store.dispose();
      rmSync(data, { recursive: true, force: true });
    }
    const l = summarize(late);
    console.log(`\n${manyFiles.toLocaleString("en")} files of 100 bytes, first save in this process`);
    console.log(row("version store: first save", saves));
    console.log(`${"timer probe lateness (10 ms timer) during the save".padEnd(52)} n=${l.n}  median ${l.median.toFixed(1)} ms  p99 ${p99(late).toFixed(1)} ms  max ${l.max.toFixed(1)} ms`);
    console.log(row("RSS growth during the save", growth, "MB"));
    console.log(row("version store: save, nothing changed", unchanged));
    console.log(row("baseline: find -newer stat walk", walks));
    rmSync(ws, { recursive: true, force: true });
  }

  if (withServer) {
  // A real server saving a workspace of many small files.
  const model = await startFakeModel();
  const server = await startTestServer({ modelUrl: model.url, env: { ASH_DATABASE_URL: "" } });
  try {
    await server.api("/api/agents", { method: "POST", json: agentUpload("bench") });
    const id = (await (await server.api("/api/sessions", { method: "POST", json: { agent: "bench" } })).json()).session.id as string;
    const made = await server.api(`/api/sessions/${id}/exec`, {
      method: "POST",
      json: { command: `python3 -c "
import os
for i in range(${manyFiles}):
    d = 'many/d%d' % (i // 1000)
    if i % 1000 == 0: os.makedirs(d)
    with open('%s/f%d' % (d, i), 'w') as f: f.write('x' * 100)
print('made')"`, timeout: 600_000 },
    });
    if (!(await made.text()).includes("made")) throw new Error("could not make the files");
    const rss = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${server.pid()}/status`, "utf8"))?.[1] ?? 0) / 1024;
    const rssBefore = rss();
    let rssPeak = rssBefore;
    const latencies: number[] = [];
    let saving = true;
    const probe = (async () => {
      while (saving) {
        const t = performance.now();
        await fetch(`${server.url}/health`);
        latencies.push(performance.now() - t);
        rssPeak = Math.max(rssPeak, rss());
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    // The save's own time, from the server's metrics (the rest of the pause is the sandbox's teardown).
    const savedSeconds = async () => Number(/^ash_snapshot_duration_seconds_sum(?:\{\})? (\S+)$/m.exec(await (await server.api("/metrics")).text())?.[1] ?? NaN);
    const savedBefore = await savedSeconds();
    const saveMs = await time(async () => {
      const paused = await server.api(`/api/sessions/${id}/pause`, { method: "POST" });
      if (paused.status !== 200) throw new Error(`pause answered ${paused.status}`);
    });
    const savingMs = (await savedSeconds() - savedBefore) * 1000;
    saving = false;
    await probe;
    const s = summarize(latencies);
    const sorted = [...latencies].sort((a, b) => a - b);
    const p99 = sorted[Math.min(sorted.length - 1, Math.ceil(0.99 * sorted.length) - 1)] ?? NaN;
    console.log(`\n${manyFiles.toLocaleString("en")} files of 100 bytes, saved by the server (pause)`);
    console.log(`${"pause (save + teardown)".padEnd(52)} ${saveMs.toFixed(0)} ms: the save ${savingMs.toFixed(0)} ms, the rest ${(saveMs - savingMs).toFixed(0)} ms`);
    console.log(`${"/health during the save".padEnd(52)} n=${s.n}  median ${s.median.toFixed(1)} ms  p99 ${p99.toFixed(1)} ms  max ${s.max.toFixed(1)} ms`);
    console.log(`${"server RSS".padEnd(52)} before ${rssBefore.toFixed(0)} MB  peak ${rssPeak.toFixed(0)} MB  (+${(rssPeak - rssBefore).toFixed(0)} MB)`);
  } finally {
    await server.dispose();
    await model.close();
  }
  }
} finally {
  rmSync(root, { recursive: true, force: true });
  if (memoryRoot) rmSync(memoryRoot, { recursive: true, force: true });
}
