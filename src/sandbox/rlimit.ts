import type { ResourceGroup, SandboxLimits } from "./limits";

/**
 * The fallback without writable cgroups: per-process rlimits set by prlimit
 * before the sandbox starts. Weaker than a group: RLIMIT_DATA bounds each
 * process, not their sum; RLIMIT_NPROC counts every process of the uid, so
 * sandboxes sharing a uid share the budget; there is no CPU cap and no
 * kernel counter says which limit was hit.
 */
export function createRlimitGroup(limits: SandboxLimits): ResourceGroup {
  return {
    mode: "rlimit",
    procsFiles: [],
    rlimits: {
      fileSizeBytes: Math.floor(limits.diskMb * 1024 * 1024),
      dataBytes: Math.floor(limits.memoryMb * 1024 * 1024),
      processes: limits.maxProcesses,
    },
    enforced: { memory: true, processes: true, cpu: false },
    counters() {
      return { oomKills: 0, pidsMaxHits: 0 };
    },
    async members() {
      return [];
    },
    async killAll() {},
    async destroy() {},
  };
}
