import { existsSync, readFileSync } from "node:fs";
import { readFile, readdir, rmdir, writeFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";

/** Reads `key N` from a flat-keyed cgroup file (memory.events, pids.events, memory.oom_control). */
export function readCounter(file: string, key: string): number {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return 0;
  }
  for (const line of text.split("\n")) {
    const [name, value] = line.trim().split(/\s+/);
    if (name === key) return Number(value) || 0;
  }
  return 0;
}

export async function writeControl(file: string, value: string | number): Promise<void> {
  await writeFile(file, String(value));
}

/** Writes a control file only when the kernel offers it (e.g. memsw needs swap accounting). */
export async function writeOptionalControl(file: string, value: string | number): Promise<boolean> {
  if (!existsSync(file)) return false;
  try {
    await writeFile(file, String(value));
    return true;
  } catch {
    return false;
  }
}

/** Pids listed in any of the given cgroup.procs files. */
export async function readMembers(procsFiles: string[]): Promise<number[]> {
  const pids = new Set<number>();
  for (const file of procsFiles) {
    let text = "";
    try {
      text = await readFile(file, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n")) if (line.trim()) pids.add(Number(line));
  }
  return [...pids];
}

/**
 * SIGKILLs members until none is left. Bounded: a process forking as fast as
 * it can is still capped by pids.max, so a few rounds empty the group.
 */
export async function killMembers(procsFiles: string[], rounds = 100): Promise<void> {
  for (let round = 0; round < rounds; round++) {
    const pids = await readMembers(procsFiles);
    if (pids.length === 0) return;
    for (const pid of pids) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    await sleep(round < 10 ? 10 : 50);
  }
  throw new Error(`Processes still running in ${procsFiles.join(", ")} after ${rounds} kill rounds`);
}

/** rmdir with retries: the kernel may report EBUSY until the last task is reaped. */
export async function removeGroupDir(dir: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await rmdir(dir);
      return;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === "ENOENT") return;
      if (code !== "EBUSY" || attempt >= 100) throw error;
      await sleep(20);
    }
  }
}

/** Child group names under a parent cgroup dir (control files are not dirs). */
export async function childGroups(parentDir: string): Promise<string[]> {
  try {
    const entries = await readdir(parentDir, { withFileTypes: true });
    return entries.filter((e) => e.isDirectory()).map((e) => e.name);
  } catch {
    return [];
  }
}
