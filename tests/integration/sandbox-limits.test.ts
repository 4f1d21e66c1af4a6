import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cgroup1Mounts } from "../../src/sandbox/cgroup1";
import { createSandbox, describeSandboxHost, detectLimitMode, sweepResourceGroups, type CreateSandboxOptions, type Sandbox } from "../../src/sandbox";
import { cgroup1Problem, skipUnlessReady } from "../helpers/requirements";

const host = await describeSandboxHost();
const mounts = cgroup1Mounts();
const isRoot = process.getuid?.() === 0;
const cgroup1Skip = skipUnlessReady("sandbox limits with cgroup v1", cgroup1Problem(host));
const rootSkip = skipUnlessReady("sandbox limits with rlimits", isRoot ? undefined : "they need root to switch users");
const cgroupParent = `ash-test-lim-${process.pid}`;

let dataDir: string;
const created: Sandbox[] = [];

async function sandbox(options: Partial<CreateSandboxOptions> = {}) {
  const made = await createSandbox({ dataDir, cgroup1Parent: cgroupParent, ...options });
  created.push(made);
  return made;
}

/** Group folders of this test run that still exist, in every controller. */
function groupDirs(): string[] {
  const dirs: string[] = [];
  for (const mount of Object.values(mounts)) {
    const parent = join(mount!, cgroupParent);
    if (!existsSync(parent)) continue;
    for (const entry of readdirSync(parent, { withFileTypes: true })) if (entry.isDirectory()) dirs.push(join(parent, entry.name));
  }
  return dirs;
}

function hostProcessesWith(text: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, "utf8").includes(text)) found.push(Number(entry));
    } catch {
      // exited meanwhile
    }
  }
  return found;
}

beforeAll(() => {
  dataDir = mkdtempSync(join(tmpdir(), "ash-limits-"));
  // As the server keeps its data folder: its owner's alone, so the disk walk must not need to pass through it.
  chmodSync(dataDir, 0o700);
});

afterAll(async () => {
  for (const made of created) await made.destroy();
  await sweepResourceGroups("cgroup1", [], { cgroup1Parent: cgroupParent });
  for (const mount of Object.values(mounts)) if (existsSync(join(mount!, cgroupParent))) rmdirSync(join(mount!, cgroupParent));
  rmSync(dataDir, { recursive: true, force: true });
});

describe.skipIf(cgroup1Skip)("sandbox limits with cgroup v1 (as root)", () => {
  it("kills a memory hog at the memory limit and reports sandbox_oom", async () => {
    const box = await sandbox({ limits: { memoryMb: 64 } });
    expect(box.limitMode).toBe("cgroup1");
    const before = box.limitCounters();
    const result = await box.exec("head -c 3G /dev/zero | tail > /dev/null", { timeoutMs: 60_000 });
    expect(box.limitCounters().oomKills).toBeGreaterThan(before.oomKills);
    expect(result.exitCode).not.toBe(0);
    expect(result.timedOut).toBe(false);
    expect(result.limitReason).toBe("sandbox_oom");
    expect(box.limitKillReason()).toBe("sandbox_oom");
    // The sandbox itself is still usable afterwards.
    expect((await box.exec("echo alive")).stdout).toBe("alive\n");
  });

  it("stops a fork bomb at the process limit, reports sandbox_pids, and a neighbour stays healthy", async () => {
    const bombed = await sandbox({ limits: { maxProcesses: 32 } });
    const neighbour = await sandbox({ limits: { maxProcesses: 32 } });
    const bomb = bombed.exec("for i in $(seq 1 500); do sleep 30 & done; wait", { timeoutMs: 60_000 });
    await sleep(200);
    const healthy = await neighbour.exec("for i in $(seq 1 10); do sleep 0.1 & done; wait; echo fine");
    const result = await bomb;
    expect(result.exitCode).not.toBe(0);
    expect(result.stderr).toMatch(/fork/i);
    expect(result.limitReason).toBe("sandbox_pids");
    expect(healthy).toMatchObject({ exitCode: 0, stdout: "fine\n", limitReason: null });
    expect(neighbour.limitKillReason()).toBeNull();
  });

  it("kills a single write past the disk limit at once (file size rlimit) and reports sandbox_disk", async () => {
    const box = await sandbox({ limits: { diskMb: 8 } });
    const before = box.limitCounters();
    const result = await box.exec("head -c 20M /dev/zero > big.bin", { timeoutMs: 60_000 });
    expect(box.limitCounters().diskKills).toBe(before.diskKills + 1);
    expect(result.exitCode).toBe(128 + 25); // SIGXFSZ
    expect(result.limitReason).toBe("sandbox_disk");
    expect(statSync(join(box.workspaceDir, "big.bin")).size).toBe(8 * 1024 * 1024);
  });

  it("kills a sandbox that fills its workspace with many small files and reports sandbox_disk", async () => {
    const box = await sandbox({ limits: { diskMb: 8 }, diskCheckIntervalMs: 100 });
    // Each file is far below the file size limit; only the total is too much.
    const result = await box.exec("i=0; while [ $i -lt 400 ]; do head -c 100K /dev/zero > f$i; i=$((i+1)); sleep 0.01; done; echo finished", {
      timeoutMs: 60_000,
    });
    expect(result.stdout).not.toContain("finished");
    expect(result.limitReason).toBe("sandbox_disk");
    expect(box.limitKillReason()).toBe("sandbox_disk");
    expect(await box.diskUsage()).toBeGreaterThan(8 * 1024 * 1024);
  });

  it("measures an idle sandbox's disk no more: once as its last process ends, then only while one runs", async () => {
    // An interval no test waits for: a measurement seen here comes from the process ending.
    const box = await sandbox({ limits: { diskMb: 8 }, diskCheckIntervalMs: 600_000 });
    const before = box.limitCounters().diskKills;
    const result = await box.exec("for i in 1 2 3 4 5 6 7 8 9 10; do head -c 1M /dev/zero > f$i; done; echo finished", { timeoutMs: 60_000 });
    expect(result.stdout).toContain("finished");
    // Left over its limit by a process that is gone: found once that process ended.
    for (let round = 0; round < 200 && box.limitCounters().diskKills === before; round++) await sleep(50);
    expect(box.limitCounters().diskKills).toBe(before + 1);
    expect(box.limitKillReason()).toBe("sandbox_disk");
    // The next process, which writes nothing, is not killed for what was left.
    const next = await box.exec("echo still here", { timeoutMs: 60_000 });
    expect(next.stdout).toBe("still here\n");
    expect(next.limitReason).toBeNull();
  });

  it("counts files in a folder the sandbox made unreadable to itself", async () => {
    const box = await sandbox({ limits: { diskMb: 8 }, diskCheckIntervalMs: 100 });
    const before = box.limitCounters().diskKills;
    // Hidden behind mode 000 as they are written: a walk as the plain sandbox user would see none of it.
    const result = await box.exec("mkdir hide; for i in 1 2 3 4 5 6 7 8 9 10 11 12; do chmod 700 hide; head -c 1M /dev/zero > hide/f$i; chmod 000 hide; sleep 0.2; done; echo finished", {
      timeoutMs: 60_000,
    });
    expect(result.stdout).not.toContain("finished");
    expect(result.limitReason).toBe("sandbox_disk");
    expect(box.limitCounters().diskKills).toBe(before + 1);
  });

  it("walks a sandbox whose process only waits every few seconds, not every second", async () => {
    const box = await sandbox({ limits: { diskMb: 64 } });
    const result = await box.exec("sleep 6; echo woke", { timeoutMs: 60_000 });
    expect(result.stdout).toBe("woke\n");
    const { walks, quietSkips } = box.diskWalks();
    // One walk after the start (bwrap's own start uses CPU), one at about 5 s, one as sleep ends;
    // a walk a second would make 6 or 7.
    expect(quietSkips).toBeGreaterThanOrEqual(2);
    expect(walks).toBeLessThanOrEqual(4);
  });

  it("still kills a writer that keeps its CPU under the quiet budget, within a few seconds", async () => {
    const box = await sandbox({ limits: { diskMb: 1 } });
    const before = box.limitCounters().diskKills;
    // A new 128 KiB file twice a second from one shell (printf is built in): a few ms of CPU a
    // second (one sleep started each time), and every file far below the file size limit.
    const result = await box.exec(
      'b=$(head -c 131072 /dev/zero | tr "\\0" a); i=0; while [ $i -lt 80 ]; do printf %s "$b" > slow$i.bin; i=$((i+1)); sleep 0.5; done; echo finished',
      { timeoutMs: 120_000 },
    );
    expect(result.stdout).not.toContain("finished");
    expect(result.limitReason).toBe("sandbox_disk");
    expect(box.limitCounters().diskKills).toBe(before + 1);
    expect(box.diskWalks().quietSkips).toBeGreaterThan(0);
  });

  it("applies a CPU cap when asked", async () => {
    const box = await sandbox({ limits: { cpuPercent: 50 } });
    expect(box.enforced).toEqual({ memory: true, processes: true, cpu: true, fileSize: true });
    const cpuDir = join(mounts.cpu!, cgroupParent, box.id);
    expect(readFileSync(join(cpuDir, "cpu.cfs_quota_us"), "utf8").trim()).toBe("50000");
    expect(readFileSync(join(mounts.memory!, cgroupParent, box.id, "memory.limit_in_bytes"), "utf8").trim()).toBe(String(2048 * 1024 * 1024));
    expect(readFileSync(join(mounts.pids!, cgroupParent, box.id, "pids.max"), "utf8").trim()).toBe("256");
  });

  it("destroy leaves no processes and no cgroup folders", async () => {
    const box = await sandbox();
    const marker = `3598.${process.pid}`;
    const running = box.exec(`sleep ${marker} & sleep ${marker} & sleep ${marker}`, { timeoutMs: 60_000 });
    for (let i = 0; i < 100 && (await box.processCount()) < 3; i++) await sleep(20);
    expect(await box.processCount()).toBeGreaterThanOrEqual(3);
    expect(groupDirs().some((dir) => dir.endsWith(box.id))).toBe(true);
    await box.destroy();
    const result = await running;
    expect(result.exitCode).toBeNull();
    expect(hostProcessesWith(marker)).toEqual([]);
    expect(groupDirs().some((dir) => dir.endsWith(box.id))).toBe(false);
    expect(existsSync(box.rootDir)).toBe(false);
  });

  it("sweeps groups left behind by a previous server", async () => {
    const orphan = await createSandbox({ dataDir, cgroup1Parent: cgroupParent });
    // Pretend the server died: nothing calls orphan.destroy().
    const removed = await sweepResourceGroups("cgroup1", created.map((s) => s.id), { cgroup1Parent: cgroupParent });
    expect(removed).toEqual([orphan.id]);
    expect(groupDirs().some((dir) => dir.endsWith(orphan.id))).toBe(false);
    await orphan.destroy({ keepFiles: false });
  });
});

describe.skipIf(rootSkip)("sandbox limits with the rlimit fallback (forced)", () => {
  it("reports the rlimit mode and enforces memory, processes and file size per process", async () => {
    const box = await sandbox({ limitMode: "rlimit", limits: { memoryMb: 64, maxProcesses: 32, diskMb: 8 }, user: { uid: 10999 } });
    expect(box.limitMode).toBe("rlimit");
    expect(box.enforced).toEqual({ memory: true, processes: true, cpu: false, fileSize: true });
    expect(groupDirs().some((dir) => dir.endsWith(box.id))).toBe(false);

    const limits = await box.exec("grep -E 'Max (data size|processes|file size)' /proc/self/limits");
    expect(limits.stdout).toMatch(new RegExp(`Max file size\\s+${8 * 1024 * 1024}\\s+${8 * 1024 * 1024}`));
    expect(limits.stdout).toMatch(new RegExp(`Max data size\\s+${64 * 1024 * 1024}\\s+${64 * 1024 * 1024}`));
    expect(limits.stdout).toMatch(/Max processes\s+32\s+32/);

    const hog = await box.exec("head -c 1G /dev/zero | tail > /dev/null", { timeoutMs: 60_000 });
    expect(hog.exitCode).not.toBe(0);
    expect(hog.stderr).toMatch(/memory/i);

    const bomb = await box.exec("for i in $(seq 1 100); do sleep 5 & done; wait", { timeoutMs: 60_000 });
    expect(bomb.exitCode).not.toBe(0);
    expect(bomb.stderr).toMatch(/fork/i);

    const big = await box.exec("head -c 20M /dev/zero > big.bin", { timeoutMs: 60_000 });
    expect(big.limitReason).toBe("sandbox_disk");
  });
});

describe("limit mode detection", () => {
  it("declines a cgroup v2 root whose controllers are not delegated, and says why", async () => {
    const detected = await detectLimitMode({ cgroup2Root: join(tmpdir(), "not-a-cgroup") });
    expect(detected.mode).not.toBe("cgroup2");
    if (detected.mode === "rlimit") expect(detected.detail).toMatch(/not-a-cgroup/);
  });

  it("declines a v2 hierarchy without the memory controller (the hybrid host's, or none)", async () => {
    const unified = "/sys/fs/cgroup/unified";
    const controllers = existsSync(`${unified}/cgroup.controllers`) ? readFileSync(`${unified}/cgroup.controllers`, "utf8") : "";
    const detected = await detectLimitMode({ cgroup2Root: unified });
    // A real v2 host delegates memory there; everywhere else the root must be declined.
    if (!controllers.includes("memory")) expect(detected.mode).not.toBe("cgroup2");
    else expect(detected.mode).toBe("cgroup2");
  });
});
