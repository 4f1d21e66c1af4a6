import { readdir, readFile, readlink } from "node:fs/promises";

const isClaude = async (pid: string) => /claude-agent-sdk-linux-[^/]+\/claude$/.test((await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "")).split("\0")[0] ?? "");

/**
 * The working folder of every Claude Code CLI process under any of `dataDirs` right now (read from
 * /proc), one list per folder from a single scan. A scan of /proc takes a while: a process that ended
 * during it and one that started after it were never there together, so only those still running
 * once the scan is over count.
 */
async function claudeFoldersOf(dataDirs: string[]): Promise<string[][]> {
  const found: Array<{ pid: string; cwd: string; dir: number }> = [];
  for (const pid of await readdir("/proc")) {
    if (!/^\d+$/.test(pid) || !(await isClaude(pid))) continue;
    const cwd = await readlink(`/proc/${pid}/cwd`).catch(() => "");
    const dir = dataDirs.findIndex((d) => cwd.startsWith(d + "/"));
    if (dir >= 0) found.push({ pid, cwd, dir });
  }
  const alive = await Promise.all(found.map((f) => isClaude(f.pid)));
  const still = found.filter((_, i) => alive[i]);
  return dataDirs.map((_, dir) => still.filter((f) => f.dir === dir).map((f) => f.cwd));
}

const claudeFolders = async (dataDir: string) => (await claudeFoldersOf([dataDir]))[0]!;

/** How many Claude Code CLI processes working under `dataDir` run right now. */
export async function countClaudeProcesses(dataDir: string): Promise<number> {
  return (await claudeFolders(dataDir)).length;
}

/** The sandbox (its id) of every Claude Code CLI process under `dataDir` right now, one entry per process. */
export async function claudeSandboxes(dataDir: string): Promise<string[]> {
  return (await claudeSandboxesOf([dataDir]))[0]!;
}

/** claudeSandboxes for several servers' data folders from one scan of /proc (cheaper when sampled often). */
export async function claudeSandboxesOf(dataDirs: string[]): Promise<string[][]> {
  const folders = await claudeFoldersOf(dataDirs);
  return dataDirs.map((dataDir, i) => {
    const prefix = `${dataDir}/sandboxes/`;
    return folders[i]!.filter((cwd) => cwd.startsWith(prefix)).map((cwd) => cwd.slice(prefix.length).split("/")[0]!);
  });
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
