import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ConsolaInstance } from "consola";
import type { ServerConfig } from "../config";
import { createSandbox, describeSandboxHost } from "../sandbox/spawn";
import { listCgroup1Groups } from "../sandbox/cgroup1";
import { listCgroup2Groups } from "../sandbox/cgroup2";
import { DEFAULT_CGROUP1_PARENT } from "../sandbox/limits";
import { createSnapshotStore } from "../sandbox/snapshot";
import type { SandboxFactory, SnapshotStore } from "../sessions/types";
import type { ServerParts } from "./server";

/**
 * Connects the session layer to the real sandboxes and snapshot store:
 * bwrap isolation, cgroup/rlimit limits from the configuration, snapshots
 * under `<data>/sessions/`.
 */
export async function createServerParts(config: ServerConfig, log: ConsolaInstance): Promise<ServerParts> {
  const limits = {
    memoryMb: config.sandbox.memoryMb,
    maxProcesses: config.sandbox.maxProcesses,
    diskMb: config.sandbox.diskMb,
    cpuPercent: config.sandbox.cpuPercent,
  };
  const host = await describeSandboxHost({ strict: config.sandbox.strict });
  if (config.sandbox.strict && host.isolation !== "bwrap") {
    throw new Error(`ASH_SANDBOX_STRICT is set but namespace isolation is unavailable: ${host.detail}`);
  }
  log.info(`sandboxes: isolation ${host.isolation} (${host.detail}); limits ${host.limitMode} (${host.limitDetail})`);

  const sandboxes: SandboxFactory = {
    describe: () => ({
      isolation: host.isolation,
      limits: { mode: host.limitMode, memoryMb: limits.memoryMb, diskMb: limits.diskMb, maxProcesses: limits.maxProcesses, cpuPercent: limits.cpuPercent, strict: config.sandbox.strict },
    }),
    async removeLeftovers(ids) {
      const wanted = new Set(ids);
      const groups =
        host.limitMode === "cgroup2" ? await listCgroup2Groups(process.env.ASH_CGROUP_ROOT) : host.limitMode === "cgroup1" ? await listCgroup1Groups(DEFAULT_CGROUP1_PARENT) : [];
      for (const group of groups) if (wanted.has(group.id)) await group.destroy().catch(() => undefined);
      for (const id of ids) await rm(join(config.dataDir, "sandboxes", id), { recursive: true, force: true });
    },
    async create({ id, env, populate }) {
      // The workspace is filled before the sandbox is made: making it hands
      // every file to the sandbox user.
      await populate(join(config.dataDir, "sandboxes", id, "workspace"));
      const sandbox = await createSandbox({ dataDir: config.dataDir, id, env, limits, strict: config.sandbox.strict });
      return {
        id: sandbox.id,
        workspaceDir: sandbox.workspaceDir,
        homeDir: sandbox.homeDir,
        spawnClaudeCode: (options) => sandbox.spawnClaudeCode(options),
        exec: async (command, { timeoutMs }) => {
          const r = await sandbox.exec(command, { timeoutMs });
          return { exitCode: r.exitCode ?? -1, stdout: r.stdout, stderr: r.stderr, timedOut: r.timedOut, limit: r.limitReason };
        },
        logs: () => sandbox.logs().map((l) => `${new Date(l.at).toISOString()} ${l.source}/${l.stream}: ${l.line}`),
        limitKillReason: () => sandbox.limitKillReason(),
        limitCounters: () => sandbox.limitCounters(),
        destroy: () => sandbox.destroy(),
      };
    },
  };

  const store = createSnapshotStore({ dataDir: config.dataDir });
  const snapshots: SnapshotStore = {
    async save(sessionId, workspaceDir, metadata) {
      await store.snapshotWorkspace(sessionId, workspaceDir, { agentName: String(metadata.agentName ?? ""), ...metadata });
    },
    restore: (sessionId, targetDir) => store.restoreWorkspace(sessionId, targetDir),
    async copy(fromSessionId, toSessionId) {
      const info = await store.readSnapshotInfo(fromSessionId);
      if (!info) return false;
      const scratch = await mkdtemp(join(tmpdir(), "ash-fork-"));
      try {
        const dir = join(scratch, "workspace");
        if (!(await store.restoreWorkspace(fromSessionId, dir))) return false;
        await store.snapshotWorkspace(toSessionId, dir, { ...info.extra, agentName: info.agentName, forkOf: fromSessionId });
        return true;
      } finally {
        await rm(scratch, { recursive: true, force: true });
      }
    },
    async list(sessionId) {
      const entries = await store.listSnapshotFiles(sessionId);
      return entries ? entries.filter((e) => e.type === "file").map((e) => ({ path: e.path, size: e.size, mode: e.mode })) : null;
    },
    read: (sessionId, path) => store.readSnapshotFile(sessionId, path),
  };
  return { sandboxes, snapshots };
}
