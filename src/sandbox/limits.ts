import { detectCgroup1, createCgroup1Group, listCgroup1Groups } from "./cgroup1";
import { detectCgroup2, createCgroup2Group, listCgroup2Groups } from "./cgroup2";
import { createRlimitGroup } from "./rlimit";

/** Per-sandbox resource limits. Sizes in MiB. */
export interface SandboxLimits {
  /** Memory (RAM, plus the private /tmp which lives in RAM). */
  memoryMb: number;
  /** Processes and threads alive at once. */
  maxProcesses: number;
  /** Workspace plus home, measured on disk. */
  diskMb: number;
  /** CPU time cap: 100 = one full core, 50 = half a core. Unset: no cap. */
  cpuPercent?: number;
  /** Relative CPU weight against other sandboxes (cgroup v1 shares; 1024 is normal). Unset: default. */
  cpuShares?: number;
}

export const DEFAULT_LIMITS: SandboxLimits = { memoryMb: 2048, maxProcesses: 256, diskMb: 1024 };

/** How limits are enforced, best first. */
export type LimitMode = "cgroup2" | "cgroup1" | "rlimit";

/** Why a sandboxed process was stopped by a limit. */
export type { LimitReason } from "../contract";

/** Monotonic counters of limit events in a group; compared before and after a process. */
export interface LimitCounters {
  oomKills: number;
  pidsMaxHits: number;
}

/** rlimits applied to every sandboxed process (via prlimit). */
export interface RlimitSettings {
  /** RLIMIT_FSIZE: no single file may grow past this. */
  fileSizeBytes?: number;
  /** RLIMIT_DATA: heap and private writable mappings. */
  dataBytes?: number;
  /** RLIMIT_NPROC: processes of the sandbox's uid (per uid, not per sandbox). */
  processes?: number;
}

/** One sandbox's resource container. */
export interface ResourceGroup {
  readonly mode: LimitMode;
  /** Files a launcher writes its own pid into before it execs anything. */
  readonly procsFiles: string[];
  readonly rlimits: RlimitSettings;
  /** Which limits are enforced by the kernel in this mode (disk is watched separately). */
  readonly enforced: { memory: boolean; processes: boolean; cpu: boolean };
  /** Read synchronously: a launch snapshots them before it spawns. */
  counters(): LimitCounters;
  /** Pids in the group now; [] in a mode without a group. */
  members(): Promise<number[]>;
  /**
   * CPU time (ns) the group's processes have used since it was made, those
   * that exited included; null where the host does not count it (rlimit mode,
   * no cpuacct). Read synchronously and cheaply: the disk watcher asks every second.
   */
  cpuUsageNs?(): number | null;
  /** SIGKILLs every process in the group until it is empty (bounded). */
  killAll(): Promise<void>;
  /** killAll, then removes the group. Safe to call twice. */
  destroy(): Promise<void>;
  /**
   * The group's CPU weight against other groups, in v1 shares (1024 normal).
   * Niceness only orders processes within one group, so a sandbox whose
   * processes run below others' (a warm spare) needs its group's weight lowered
   * too. Absent where there is no CPU controller (rlimit mode). Never throws.
   */
  setCpuShares?(shares: number): void;
}

/** A group's CPU shares (cgroup v1) when nothing was set: the kernel's weight of niceness 0. */
export const NORMAL_CPU_SHARES = 1024;

/** The scheduler's weight of each niceness 0..19 (kernel sched_prio_to_weight; 0 is NORMAL_CPU_SHARES). */
const NICE_WEIGHTS = [NORMAL_CPU_SHARES, 820, 655, 526, 423, 335, 272, 215, 172, 137, 110, 87, 70, 56, 45, 36, 29, 23, 18, 15];

/** Shares that give a group what niceness `nice` gives a process: `base` (the group's own shares) scaled by the kernel's weight. */
export function sharesForNice(base: number, nice: number): number {
  const weight = NICE_WEIGHTS[Math.min(19, Math.max(0, Math.round(nice)))]!;
  return Math.max(2, Math.round((base * weight) / NORMAL_CPU_SHARES));
}

export interface LimitHost {
  /** Delegated cgroup v2 parent (the entrypoint exports it as ASH_CGROUP_ROOT). */
  cgroup2Root?: string;
  /** Folder under each cgroup v1 controller that holds sandbox groups. */
  cgroup1Parent?: string;
}

export const DEFAULT_CGROUP1_PARENT = "ash";

/** The best mode this host supports: cgroup2, then cgroup1, then rlimit. */
export async function detectLimitMode(host: LimitHost = {}): Promise<{ mode: LimitMode; detail: string }> {
  const v2 = await detectCgroup2(host.cgroup2Root ?? process.env.ASH_CGROUP_ROOT);
  if (v2.ok) return { mode: "cgroup2", detail: v2.detail };
  const v1 = await detectCgroup1(host.cgroup1Parent ?? DEFAULT_CGROUP1_PARENT);
  if (v1.ok) return { mode: "cgroup1", detail: v1.detail };
  return { mode: "rlimit", detail: `rlimits only (${v2.detail}; ${v1.detail})` };
}

/** Checks limits and turns them into bytes; bad values throw before anything is created. */
export function validateLimits(limits: SandboxLimits): SandboxLimits {
  const positive = (name: string, value: number | undefined, optional = false) => {
    if (value === undefined && optional) return;
    if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
      throw new Error(`Sandbox limit ${name} must be a positive number, got ${value}`);
    }
  };
  positive("memoryMb", limits.memoryMb);
  positive("maxProcesses", limits.maxProcesses);
  positive("diskMb", limits.diskMb);
  positive("cpuPercent", limits.cpuPercent, true);
  positive("cpuShares", limits.cpuShares, true);
  if (!Number.isInteger(limits.maxProcesses)) throw new Error(`Sandbox limit maxProcesses must be an integer, got ${limits.maxProcesses}`);
  return limits;
}

export const mib = (mb: number) => Math.floor(mb * 1024 * 1024);

/** Creates the resource group for one sandbox in the given mode. */
export async function createResourceGroup(
  mode: LimitMode,
  sandboxId: string,
  limits: SandboxLimits,
  host: LimitHost = {},
): Promise<ResourceGroup> {
  if (!/^[A-Za-z0-9_.-]+$/.test(sandboxId) || sandboxId.startsWith(".")) {
    throw new Error(`Invalid sandbox id for a resource group: ${JSON.stringify(sandboxId)}`);
  }
  validateLimits(limits);
  switch (mode) {
    case "cgroup2": {
      const root = host.cgroup2Root ?? process.env.ASH_CGROUP_ROOT;
      if (!root) throw new Error("cgroup2 limits need a delegated cgroup root (ASH_CGROUP_ROOT)");
      return createCgroup2Group(root, sandboxId, limits);
    }
    case "cgroup1":
      return createCgroup1Group(host.cgroup1Parent ?? DEFAULT_CGROUP1_PARENT, sandboxId, limits);
    case "rlimit":
      return createRlimitGroup(limits);
  }
}

/**
 * Removes groups left by a previous server process (after a crash), killing
 * what still runs in them. Groups whose id is in `keep` stay.
 */
export async function sweepResourceGroups(mode: LimitMode, keep: Iterable<string>, host: LimitHost = {}): Promise<string[]> {
  const keepSet = new Set(keep);
  const list =
    mode === "cgroup2"
      ? await listCgroup2Groups(host.cgroup2Root ?? process.env.ASH_CGROUP_ROOT)
      : mode === "cgroup1"
        ? await listCgroup1Groups(host.cgroup1Parent ?? DEFAULT_CGROUP1_PARENT)
        : [];
  const removed: string[] = [];
  for (const group of list) {
    if (keepSet.has(group.id)) continue;
    await group.destroy();
    removed.push(group.id);
  }
  return removed;
}
