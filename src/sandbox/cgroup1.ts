import { constants, existsSync, readFileSync, writeFileSync } from "node:fs";
import { access, mkdir, rmdir } from "node:fs/promises";
import { join } from "node:path";
import { childGroups, killMembers, readCounter, readMembers, removeGroupDir, writeControl, writeOptionalControl } from "./cgroup-fs";
import type { ResourceGroup, SandboxLimits } from "./limits";

type Controller = "memory" | "pids" | "cpu" | "cpuacct";
// cpuacct tells how much CPU a sandbox used (the disk watcher's cue); it is often mounted with cpu in one folder.
const CONTROLLERS: Controller[] = ["memory", "pids", "cpu", "cpuacct"];
const CFS_PERIOD_US = 100_000;

/** Mount points of the v1 controllers we use, from /proc/self/mounts. */
export function cgroup1Mounts(mountsText?: string): Partial<Record<Controller, string>> {
  let text = mountsText;
  if (text === undefined) {
    try {
      text = readFileSync("/proc/self/mounts", "utf8");
    } catch {
      return {};
    }
  }
  const found: Partial<Record<Controller, string>> = {};
  for (const line of text.split("\n")) {
    const [, mountPoint, type, options] = line.split(" ");
    if (type !== "cgroup" || !mountPoint || !options) continue;
    const opts = options.split(",");
    for (const controller of CONTROLLERS) {
      if (opts.includes(controller) && !found[controller]) found[controller] = mountPoint.replace(/\\040/g, " ");
    }
  }
  return found;
}

/**
 * Usable when memory and pids are mounted writable for us. Detection has no
 * side effects: the parent folder is made when the first group is.
 */
export async function detectCgroup1(parent: string): Promise<{ ok: boolean; detail: string }> {
  const mounts = cgroup1Mounts();
  if (!mounts.memory || !mounts.pids) return { ok: false, detail: "no cgroup v1 memory and pids controllers" };
  for (const controller of ["memory", "pids"] as const) {
    const dir = existsSync(join(mounts[controller]!, parent)) ? join(mounts[controller]!, parent) : mounts[controller]!;
    try {
      await access(dir, constants.W_OK);
    } catch (error) {
      return { ok: false, detail: `cgroup v1 ${controller} is not writable (${(error as NodeJS.ErrnoException).code})` };
    }
  }
  const controllers = CONTROLLERS.filter((c) => mounts[c]).join(", ");
  return { ok: true, detail: `cgroup v1 (${controllers}) under ${parent}/` };
}

/** Each folder once: controllers mounted together (cpu,cpuacct) share one. */
const foldersOf = (dirs: Partial<Record<Controller, string>>) => [...new Set(Object.values(dirs) as string[])];

function groupFor(dirs: Partial<Record<Controller, string>>): Omit<ResourceGroup, "rlimits"> & { dirs: string[] } {
  const folders = foldersOf(dirs);
  const procsFiles = folders.map((dir) => join(dir, "cgroup.procs"));
  const members = () => readMembers(procsFiles);
  const killAll = () => killMembers(procsFiles);
  let destroyed = false;
  return {
    mode: "cgroup1",
    procsFiles,
    dirs: folders,
    enforced: { memory: Boolean(dirs.memory), processes: Boolean(dirs.pids), cpu: Boolean(dirs.cpu) },
    counters() {
      return {
        oomKills: dirs.memory ? readCounter(join(dirs.memory, "memory.oom_control"), "oom_kill") : 0,
        pidsMaxHits: dirs.pids ? readCounter(join(dirs.pids, "pids.events"), "max") : 0,
      };
    },
    members,
    killAll,
    ...(dirs.cpuacct
      ? {
          cpuUsageNs() {
            try {
              return Number(readFileSync(join(dirs.cpuacct!, "cpuacct.usage"), "utf8"));
            } catch {
              return null;
            }
          },
        }
      : {}),
    ...(dirs.cpu
      ? {
          setCpuShares(shares: number) {
            // Synchronous: called right before a launch, whose processes must start at this weight.
            // Best effort, like niceness: a group being removed or a refused value changes nothing else.
            if (destroyed) return;
            try {
              writeFileSync(join(dirs.cpu!, "cpu.shares"), String(Math.max(2, Math.round(shares))));
            } catch {
              // the weight stays as it was
            }
          },
        }
      : {}),
    async destroy() {
      if (destroyed) return;
      await killAll();
      for (const dir of folders) await removeGroupDir(dir);
      destroyed = true;
    },
  };
}

/** One `<parent>/<id>` group in each v1 controller, limits written before any process joins. */
export async function createCgroup1Group(parent: string, id: string, limits: SandboxLimits): Promise<ResourceGroup> {
  const mounts = cgroup1Mounts();
  if (!mounts.memory || !mounts.pids) throw new Error("cgroup v1 memory and pids controllers are not mounted");
  const dirs: Partial<Record<Controller, string>> = {};
  const group = () => groupFor(dirs);
  try {
    for (const controller of CONTROLLERS) {
      const mount = mounts[controller];
      if (!mount) continue;
      const dir = join(mount, parent, id);
      await mkdir(dir, { recursive: true });
      dirs[controller] = dir;
    }
    const bytes = Math.floor(limits.memoryMb * 1024 * 1024);
    await writeControl(join(dirs.memory!, "memory.limit_in_bytes"), bytes);
    // memory+swap equal to memory: the sandbox cannot page out to swap instead.
    await writeOptionalControl(join(dirs.memory!, "memory.memsw.limit_in_bytes"), bytes);
    await writeControl(join(dirs.pids!, "pids.max"), limits.maxProcesses);
    if (dirs.cpu) {
      if (limits.cpuPercent !== undefined) {
        await writeControl(join(dirs.cpu, "cpu.cfs_period_us"), CFS_PERIOD_US);
        await writeControl(join(dirs.cpu, "cpu.cfs_quota_us"), Math.max(1000, Math.round((limits.cpuPercent / 100) * CFS_PERIOD_US)));
      }
      if (limits.cpuShares !== undefined) await writeControl(join(dirs.cpu, "cpu.shares"), Math.max(2, Math.round(limits.cpuShares)));
    }
  } catch (error) {
    await group().destroy().catch(() => {});
    throw error;
  }
  const fileSizeBytes = Math.floor(limits.diskMb * 1024 * 1024);
  return { ...group(), rlimits: { fileSizeBytes } };
}

/**
 * Removes the parent folder itself from every controller once its groups are
 * gone (a server's own `ash/<server-id>`); one that still holds a group stays.
 */
export async function removeCgroup1Parent(parent: string): Promise<void> {
  const mounts = cgroup1Mounts();
  for (const controller of CONTROLLERS) {
    const mount = mounts[controller];
    if (mount) await rmdir(join(mount, parent)).catch(() => undefined);
  }
}

/** Groups under the parent (for sweeping leftovers of a crashed server). */
export async function listCgroup1Groups(parent: string): Promise<Array<{ id: string; destroy(): Promise<void> }>> {
  const mounts = cgroup1Mounts();
  const ids = new Set<string>();
  for (const controller of CONTROLLERS) {
    const mount = mounts[controller];
    if (mount) for (const id of await childGroups(join(mount, parent))) ids.add(id);
  }
  return [...ids].map((id) => {
    const dirs: Partial<Record<Controller, string>> = {};
    for (const controller of CONTROLLERS) {
      const mount = mounts[controller];
      if (mount) dirs[controller] = join(mount, parent, id);
    }
    // A controller may lack the dir when creation failed half way.
    return { id, destroy: () => destroyPartial(dirs) };
  });
}

async function destroyPartial(dirs: Partial<Record<Controller, string>>): Promise<void> {
  const present = Object.fromEntries(Object.entries(dirs).filter(([, dir]) => existsSync(dir!))) as Partial<Record<Controller, string>>;
  await groupFor(present).destroy();
}
