import { readdir, readFile, readlink } from "node:fs/promises";

const isClaude = async (pid: string) => /claude-agent-sdk-linux-[^/]+\/claude$/.test((await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "")).split("\0")[0] ?? "");

/**
 * The working folder of every Claude Code CLI process under `dataDir` right now (read from /proc).
 * A scan of /proc takes a while: a process that ended during it and one that started after it were
 * never there together, so only those still running once the scan is over count.
 */
async function claudeFolders(dataDir: string): Promise<string[]> {
  const found: Array<{ pid: string; cwd: string }> = [];
  for (const pid of await readdir("/proc")) {
    if (!/^\d+$/.test(pid) || !(await isClaude(pid))) continue;
    const cwd = await readlink(`/proc/${pid}/cwd`).catch(() => "");
    if (cwd.startsWith(dataDir + "/")) found.push({ pid, cwd });
  }
  const alive = await Promise.all(found.map((f) => isClaude(f.pid)));
  return found.filter((_, i) => alive[i]).map((f) => f.cwd);
}

/** How many Claude Code CLI processes working under `dataDir` run right now. */
export async function countClaudeProcesses(dataDir: string): Promise<number> {
  return (await claudeFolders(dataDir)).length;
}

/** The sandbox (its id) of every Claude Code CLI process under `dataDir` right now, one entry per process. */
export async function claudeSandboxes(dataDir: string): Promise<string[]> {
  const prefix = `${dataDir}/sandboxes/`;
  return (await claudeFolders(dataDir)).filter((cwd) => cwd.startsWith(prefix)).map((cwd) => cwd.slice(prefix.length).split("/")[0]!);
}

/** Samples `measure` every `everyMs` until stopped; returns the largest value seen. */
export function sampleMax(measure: () => Promise<number>, everyMs = 100): { stop(): Promise<number> } {
  let max = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      max = Math.max(max, await measure());
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return max;
    },
  };
}
