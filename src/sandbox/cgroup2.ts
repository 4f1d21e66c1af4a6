import { existsSync, statfsSync, writeFileSync } from "node:fs";
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { childGroups, killMembers, readCounter, removeGroupDir, writeControl, writeOptionalControl } from "./cgroup-fs";
import { NORMAL_CPU_SHARES, type ResourceGroup, type SandboxLimits } from "./limits";

const CGROUP2_SUPER_MAGIC = 0x63677270;
const CPU_PERIOD_US = 100_000;
const REQUIRED = ["memory", "pids"];

async function words(file: string): Promise<string[]> {
  try {
    return (await readFile(file, "utf8")).trim().split(/\s+/).filter(Boolean);
  } catch {
    return [];
  }
}

/**
 * Usable when `root` is a cgroup2 directory whose children get the memory
 * and pids controllers. If they are available but not yet enabled for
 * children, enabling them is tried once (the entrypoint normally has).
 */
export async function detectCgroup2(root: string | undefined): Promise<{ ok: boolean; detail: string }> {
  if (!root) return { ok: false, detail: "no delegated cgroup v2 root (ASH_CGROUP_ROOT unset)" };
  try {
    if (statfsSync(root).type !== CGROUP2_SUPER_MAGIC) return { ok: false, detail: `${root} is not a cgroup v2 directory` };
  } catch {
    return { ok: false, detail: `${root} does not exist` };
  }
  const available = await words(join(root, "cgroup.controllers"));
  const missing = REQUIRED.filter((c) => !available.includes(c));
  if (missing.length) return { ok: false, detail: `cgroup v2 root ${root} lacks controllers: ${missing.join(", ")}` };
  let enabled = await words(join(root, "cgroup.subtree_control"));
  const wanted = [...REQUIRED, ...(available.includes("cpu") ? ["cpu"] : [])].filter((c) => !enabled.includes(c));
  if (wanted.length) {
    await writeOptionalControl(join(root, "cgroup.subtree_control"), wanted.map((c) => `+${c}`).join(" "));
    enabled = await words(join(root, "cgroup.subtree_control"));
  }
  const off = REQUIRED.filter((c) => !enabled.includes(c));
  if (off.length) return { ok: false, detail: `cgroup v2 root ${root} does not delegate: ${off.join(", ")}` };
  return { ok: true, detail: `cgroup v2 (${enabled.join(", ")}) under ${root}` };
}

/** v1 shares (2..262144, 1024 normal) as a v2 weight (1..10000, 100 normal). */
function cpuWeightOf(shares: number): number {
  return Math.min(10000, Math.max(1, Math.round((shares * 100) / NORMAL_CPU_SHARES)));
}

function groupAt(dir: string): Omit<ResourceGroup, "rlimits"> {
  const procsFiles = [join(dir, "cgroup.procs")];
  let destroyed = false;
  const killAll = async () => {
    // cgroup.kill (Linux 5.14+) kills every member atomically, forks included.
    if (existsSync(join(dir, "cgroup.kill"))) await writeOptionalControl(join(dir, "cgroup.kill"), 1);
    await killMembers(procsFiles);
  };
  return {
    mode: "cgroup2",
    procsFiles,
    enforced: { memory: true, processes: true, cpu: existsSync(join(dir, "cpu.max")) },
    counters() {
      return {
        oomKills: readCounter(join(dir, "memory.events"), "oom_kill"),
        pidsMaxHits: readCounter(join(dir, "pids.events"), "max"),
      };
    },
    async members() {
      return (await words(procsFiles[0]!)).map(Number);
    },
    killAll,
    cpuUsageNs() {
      // cpu.stat's usage is there in every v2 group, with or without the cpu controller.
      const usec = readCounter(join(dir, "cpu.stat"), "usage_usec");
      return usec > 0 ? usec * 1000 : null;
    },
    setCpuShares(shares: number) {
      // v1 shares (2..262144, 1024 normal) onto v2 weight (1..10000, 100 normal); without the cpu controller there is no file.
      if (destroyed || !existsSync(join(dir, "cpu.weight"))) return;
      // Best effort, like niceness: a group being removed or a refused value changes nothing else.
      try {
        writeFileSync(join(dir, "cpu.weight"), String(cpuWeightOf(shares)));
      } catch {
        // the weight stays as it was
      }
    },
    async destroy() {
      if (destroyed) return;
      if (existsSync(dir)) {
        await killAll();
        await removeGroupDir(dir);
      }
      destroyed = true;
    },
  };
}

export async function createCgroup2Group(root: string, id: string, limits: SandboxLimits): Promise<ResourceGroup> {
  const dir = join(root, id);
  await mkdir(dir);
  const group = groupAt(dir);
  try {
    const bytes = Math.floor(limits.memoryMb * 1024 * 1024);
    await writeControl(join(dir, "memory.max"), bytes);
    await writeOptionalControl(join(dir, "memory.swap.max"), 0);
    await writeControl(join(dir, "pids.max"), limits.maxProcesses);
    if (limits.cpuPercent !== undefined) {
      const quota = Math.max(1000, Math.round((limits.cpuPercent / 100) * CPU_PERIOD_US));
      await writeOptionalControl(join(dir, "cpu.max"), `${quota} ${CPU_PERIOD_US}`);
    }
    if (limits.cpuShares !== undefined) {
      await writeOptionalControl(join(dir, "cpu.weight"), cpuWeightOf(limits.cpuShares));
    }
  } catch (error) {
    await group.destroy().catch(() => {});
    throw error;
  }
  return { ...group, rlimits: { fileSizeBytes: Math.floor(limits.diskMb * 1024 * 1024) } };
}

export async function listCgroup2Groups(root: string | undefined): Promise<Array<{ id: string; destroy(): Promise<void> }>> {
  if (!root) return [];
  return (await childGroups(root)).map((id) => ({ id, destroy: () => groupAt(join(root, id)).destroy() }));
}
