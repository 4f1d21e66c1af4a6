import { describe, expect, it } from "vitest";
import { cgroup1Mounts } from "../../src/sandbox/cgroup1";
import { createResourceGroup, validateLimits, DEFAULT_LIMITS } from "../../src/sandbox/limits";
import { LogBuffer } from "../../src/sandbox/log-buffer";

describe("sandbox limits", () => {
  it("has the documented defaults", () => {
    expect(DEFAULT_LIMITS).toEqual({ memoryMb: 2048, maxProcesses: 256, diskMb: 1024 });
  });

  it("rejects limits that are not positive numbers", () => {
    expect(() => validateLimits({ ...DEFAULT_LIMITS, memoryMb: 0 })).toThrow(/memoryMb/);
    expect(() => validateLimits({ ...DEFAULT_LIMITS, diskMb: Number.NaN })).toThrow(/diskMb/);
    expect(() => validateLimits({ ...DEFAULT_LIMITS, maxProcesses: 2.5 })).toThrow(/maxProcesses/);
    expect(() => validateLimits({ ...DEFAULT_LIMITS, cpuPercent: -1 })).toThrow(/cpuPercent/);
  });

  it("refuses a sandbox id that would escape the cgroup folder", async () => {
    await expect(createResourceGroup("rlimit", "../escape", DEFAULT_LIMITS)).rejects.toThrow(/Invalid sandbox id/);
  });

  it("turns the rlimit fallback into prlimit values", async () => {
    const group = await createResourceGroup("rlimit", "s1", { memoryMb: 64, maxProcesses: 32, diskMb: 10 });
    expect(group.rlimits).toEqual({ fileSizeBytes: 10 * 1024 * 1024, dataBytes: 64 * 1024 * 1024, processes: 32 });
    expect(group.enforced.cpu).toBe(false);
  });

  it("finds v1 controllers in a mount table, including co-mounted ones", () => {
    const mounts = [
      "cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nosuid,nodev,noexec,relatime 0 0",
      "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,nodev,noexec,relatime,cpu,cpuacct 0 0",
      "cgroup /sys/fs/cgroup/memory cgroup rw,nosuid,nodev,noexec,relatime,memory 0 0",
      "cgroup /sys/fs/cgroup/pids cgroup rw,nosuid,nodev,noexec,relatime,pids 0 0",
      "proc /proc proc rw 0 0",
    ].join("\n");
    expect(cgroup1Mounts(mounts)).toEqual({
      cpu: "/sys/fs/cgroup/cpu,cpuacct",
      cpuacct: "/sys/fs/cgroup/cpu,cpuacct",
      memory: "/sys/fs/cgroup/memory",
      pids: "/sys/fs/cgroup/pids",
    });
    expect(cgroup1Mounts("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0")).toEqual({});
  });
});

describe("sandbox log buffer", () => {
  it("splits streams into lines and keeps only the newest", () => {
    const logs = new LogBuffer(3);
    const out = logs.writer("exec", "stdout");
    out.write(Buffer.from("one\ntw"));
    out.write(Buffer.from("o\r\nthree\nfour\nfive"));
    out.end();
    expect(logs.recent().map((l) => l.line)).toEqual(["three", "four", "five"]);
    expect(logs.recent(1)[0]).toMatchObject({ source: "exec", stream: "stdout", line: "five" });
  });
});
