// What a session costs while it sleeps and wakes: RSS of one idle live
// session, pause (snapshot + teardown) time, and resume-to-first-event time
// for 10 MB and 100 MB workspaces; a plain `cp -a` of the same workspace is
// the baseline for the snapshot part.
//
//   npx tsx bench/sandbox-lifecycle.ts [rounds=3]
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startFakeModel } from "../tests/fake-model/fake-model.mjs";
import { agentUpload, startTestServer } from "../tests/helpers/server";
import { msToFirstText, row } from "./stats";

const rounds = Number(process.argv[2] ?? 3);
const model = await startFakeModel();
const server = await startTestServer({ modelUrl: model.url });
await server.api("/api/agents", { method: "POST", json: agentUpload("bench") });

/** RSS (MB) of every process whose working folder is inside `dir`. */
function rssUnder(dir: string): number {
  let kb = 0;
  for (const pid of readdirSync("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      if (!readlinkSync(`/proc/${pid}/cwd`).startsWith(dir)) continue;
      const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
      kb += Number(m?.[1] ?? 0);
    } catch {
      // gone
    }
  }
  return kb / 1024;
}

async function firstEvent(id: string, content: string): Promise<number> {
  const t = performance.now();
  return msToFirstText(await server.api(`/api/sessions/${id}/messages`, { method: "POST", json: { content } }), t);
}

const newSession = async () => (await (await server.api("/api/sessions", { method: "POST", json: { agent: "bench" } })).json()).session.id as string;

// RSS of an idle live session, after one turn.
const rss: number[] = [];
for (let i = 0; i < rounds; i++) {
  const id = await newSession();
  await firstEvent(id, "hello");
  await new Promise((r) => setTimeout(r, 1000));
  rss.push(rssUnder(join(server.dataDir, "sandboxes")));
  await server.api(`/api/sessions/${id}`, { method: "DELETE" });
}

const results: string[] = [];
for (const mb of [10, 100]) {
  const pause: number[] = [];
  const resume: number[] = [];
  const copy: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const id = await newSession();
    // Half in one file, half in 1 MB files: both shapes appear in real workspaces.
    const fill = `head -c ${(mb / 2) * 1048576} /dev/urandom > big.bin && mkdir -p many && for n in $(seq 1 ${mb / 2}); do head -c 1048576 /dev/urandom > many/f$n; done`;
    const exec = await (await server.api(`/api/sessions/${id}/exec`, { method: "POST", json: { command: fill, timeout: 600000 } })).json();
    if (exec.exitCode !== 0) throw new Error(`filling the workspace failed: ${exec.stderr}`);
    await firstEvent(id, "warm");
    const sandboxId = (await (await server.api(`/api/sessions/${id}`)).json()).session.sandboxId;
    const scratch = mkdtempSync(join(tmpdir(), "ash-bench-copy-"));
    let t = performance.now();
    execFileSync("cp", ["-a", join(server.dataDir, "sandboxes", sandboxId, "workspace"), join(scratch, "w")]);
    copy.push(performance.now() - t);
    rmSync(scratch, { recursive: true, force: true });
    t = performance.now();
    await server.api(`/api/sessions/${id}/pause`, { method: "POST" });
    pause.push(performance.now() - t);
    resume.push(await firstEvent(id, "back"));
    await server.api(`/api/sessions/${id}`, { method: "DELETE" });
  }
  results.push(row(`${mb} MB: pause (snapshot + teardown)`, pause), row(`${mb} MB: baseline cp -a of the workspace`, copy), row(`${mb} MB: resume -> first text_delta`, resume));
}
await server.dispose();
await model.close();

const rssMedian = [...rss].sort((a, b) => a - b)[Math.floor(rss.length / 2)]!;
console.log(`sandbox lifecycle, ${new Date().toISOString()}, node ${process.version}`);
console.log(row("RSS of one idle live session", rss, "MB"));
for (const line of results) console.log(line);
console.log(`live sessions that fit in 4 GB at the median RSS: ${Math.floor(4096 / rssMedian)}`);
