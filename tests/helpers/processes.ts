import { readdir, readFile, readlink } from "node:fs/promises";

/** How many Claude Code CLI processes working under `dataDir` run right now (read from /proc). */
export async function countClaudeProcesses(dataDir: string): Promise<number> {
  let count = 0;
  for (const pid of await readdir("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
    const argv0 = cmdline.split("\0")[0] ?? "";
    if (!/claude-agent-sdk-linux-[^/]+\/claude$/.test(argv0)) continue;
    const cwd = await readlink(`/proc/${pid}/cwd`).catch(() => "");
    if (cwd.startsWith(dataDir + "/")) count++;
  }
  return count;
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
