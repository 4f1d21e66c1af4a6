// What saving and restoring a workspace costs, against plain tools on the
// same tree in the same run (median of `rounds`):
//   - 100 MB in 25,600 files and 10 MB in 2 files: first save, unchanged
//     re-save and restore, against `tar -cf - . | zstd -1`, a `find -newer`
//     stat walk and `zstd -d | tar -x`;
//   - 100,000 small files saved by a real server (pause): /health latency
//     p99 while it saves, and how much the server's RSS grows.
// The store part runs the tools as this process's user on folders no sandbox
// can write (trustedFolderIo); the server part goes through the sandbox.
//
//   npx tsx bench/workspace-snapshot.ts [rounds=3] [files=100000]
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createSnapshotStore } from "../src/sandbox/snapshot";
import { trustedFolderIo } from "../src/sandbox/workspace-io";
import { startFakeModel } from "../tests/fake-model/fake-model.mjs";
import { agentUpload, startTestServer } from "../tests/helpers/server";
import { row, summarize } from "./stats";

const rounds = Number(process.argv[2] ?? 3);
const manyFiles = Number(process.argv[3] ?? 100_000);
const root = mkdtempSync(join(tmpdir(), "ash-bench-snap-"));

function makeTree(dir: string, files: number, bytes: number): void {
  const per = Math.floor(bytes / files);
  for (let i = 0; i < files; i++) {
    const sub = join(dir, `d${Math.floor(i / 256)}`);
    if (i % 256 === 0) mkdirSync(sub, { recursive: true });
    writeFileSync(join(sub, `f${i}`), randomBytes(per));
  }
}

const time = async (work: () => unknown | Promise<unknown>) => {
  const t = performance.now();
  await work();
  return performance.now() - t;
};
const sh = (command: string, cwd: string) => execFileSync("/bin/sh", ["-c", command], { cwd, stdio: ["ignore", "ignore", "inherit"] });

try {
  for (const [label, files, bytes] of [
    ["100 MB in 25,600 files", 25_600, 100 * 2 ** 20],
    ["10 MB in 2 files", 2, 10 * 2 ** 20],
  ] as const) {
    const ws = join(root, `ws-${files}`);
    makeTree(ws, files, bytes);
    const samples: Record<string, number[]> = {};
    const add = (name: string, ms: number) => (samples[name] ??= []).push(ms);
    for (let r = 0; r < rounds; r++) {
      const data = join(root, `store-${files}-${r}`);
      const store = createSnapshotStore({ dataDir: data });
      const io = trustedFolderIo(ws);
      const meta = { agentName: "bench", sessionId: "s", sandboxId: "x" };
      add("store: first save", await time(() => store.snapshotWorkspace("s", io, meta)));
      add("baseline: tar -cf - . | zstd -1", await time(() => sh(`tar -cf - . | zstd -q -1 -o ${data}/base.tar.zst -f`, ws)));
      add("store: unchanged re-save", await time(() => store.snapshotWorkspace("s", io, meta)));
      sh(`touch ${data}/mark`, ws);
      add("baseline: find -newer stat walk", await time(() => sh(`find . -newer ${data}/mark > /dev/null`, ws)));
      const target = join(root, `restore-${files}-${r}`);
      mkdirSync(target);
      add("store: restore", await time(() => store.restoreWorkspace("s", trustedFolderIo(target))));
      const base = join(root, `base-${files}-${r}`);
      mkdirSync(base);
      add("baseline: zstd -d | tar -x", await time(() => sh(`zstd -q -d -c ${data}/base.tar.zst | tar -xf -`, base)));
      await store.dispose();
      for (const dir of [data, target, base]) rmSync(dir, { recursive: true, force: true });
    }
    console.log(`\n${label}`);
    for (const [name, s] of Object.entries(samples)) console.log(row(name, s));
  }

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
    const saveMs = await time(async () => {
      const paused = await server.api(`/api/sessions/${id}/pause`, { method: "POST" });
      if (paused.status !== 200) throw new Error(`pause answered ${paused.status}`);
    });
    saving = false;
    await probe;
    const s = summarize(latencies);
    const sorted = [...latencies].sort((a, b) => a - b);
    const p99 = sorted[Math.min(sorted.length - 1, Math.ceil(0.99 * sorted.length) - 1)] ?? NaN;
    console.log(`\n${manyFiles.toLocaleString("en")} files of 100 bytes, saved by the server (pause)`);
    console.log(`${"pause (save + teardown)".padEnd(52)} ${saveMs.toFixed(0)} ms`);
    console.log(`${"/health during the save".padEnd(52)} n=${s.n}  median ${s.median.toFixed(1)} ms  p99 ${p99.toFixed(1)} ms  max ${s.max.toFixed(1)} ms`);
    console.log(`${"server RSS".padEnd(52)} before ${rssBefore.toFixed(0)} MB  peak ${rssPeak.toFixed(0)} MB  (+${(rssPeak - rssBefore).toFixed(0)} MB)`);
  } finally {
    await server.dispose();
    await model.close();
  }
} finally {
  rmSync(root, { recursive: true, force: true });
}
