import { readdir } from "node:fs/promises";
import { join } from "node:path";
import type { ConsolaInstance } from "consola";
import { ConfigError, type ServerConfig } from "../config";
import { SandboxIsolationError, findSandboxTools } from "../sandbox/isolation";
import { createSandbox, describeSandboxHost } from "../sandbox/spawn";
import { listCgroup1Groups, removeCgroup1Parent } from "../sandbox/cgroup1";
import { removeTree } from "../sandbox/remove-tree";
import { Trash } from "../sandbox/trash";
import { listCgroup2Groups } from "../sandbox/cgroup2";
import { changeTimeMarginMs } from "../sandbox/timestamps";
import { DEFAULT_CGROUP1_PARENT, sweepResourceGroups } from "../sandbox/limits";
import { createVersionStore, type SnapshotListEntry } from "../snapshots";
import type { SandboxFactory, WorkspaceStore } from "../sessions/types";
import type { ServerParts } from "./server";

/**
 * Connects the session layer to the real sandboxes and snapshot store:
 * bwrap isolation, cgroup/rlimit limits from the configuration, snapshots
 * under `<data>/sessions/`.
 */
export async function createServerParts(config: ServerConfig, log: ConsolaInstance, serverId: string): Promise<ServerParts> {
  const limits = {
    memoryMb: config.sandbox.memoryMb,
    maxProcesses: config.sandbox.maxProcesses,
    diskMb: config.sandbox.diskMb,
    cpuPercent: config.sandbox.cpuPercent,
  };
  // cgroup v1 groups live under a folder of this server's own, so several
  // servers on one host never touch each other's groups, and whatever a
  // crashed run left there can be swept at start.
  const cgroup1Parent = `${DEFAULT_CGROUP1_PARENT}/${serverId}`;
  const allowUnisolated = config.sandbox.allowUnisolated;
  const host = await describeSandboxHost({ allowUnisolated, cgroup1Parent }).catch((error) => {
    if (!(error instanceof SandboxIsolationError)) throw error;
    const missing = !findSandboxTools().bwrap;
    throw new ConfigError(
      `Sandbox isolation is required but bubblewrap cannot be used: ${error.reason}. ` +
        (missing
          ? "Install it (Debian/Ubuntu: apt-get install bubblewrap) and run the server as root"
          : "bwrap is installed but cannot build a sandbox here: run the server as root") +
        "; in Docker add --cap-add SYS_ADMIN --security-opt seccomp=unconfined --security-opt apparmor=unconfined. " +
        "Or set ASH_SANDBOX_ALLOW_UNISOLATED=true to run sessions without isolation (unsafe: they can then read the database, other sessions' files and the server's processes).",
    );
  });
  if (host.limitMode === "cgroup1") {
    const swept = await sweepResourceGroups("cgroup1", [], { cgroup1Parent });
    if (swept.length > 0) log.info(`removed ${swept.length} resource group(s) left by the previous run`);
  }
  if (host.isolation === "bwrap" && !findSandboxTools().socat) {
    throw new ConfigError(
      "socat is not installed: sandboxes have no network of their own, and socat bridges their loopback ports to the model gateway and the egress proxies. Install it (Debian/Ubuntu: apt-get install socat).",
    );
  }
  if (host.isolation === "none") {
    log.warn(`sandboxes run UNISOLATED because ASH_SANDBOX_ALLOW_UNISOLATED=true: ${host.detail}. Every session can read the database, other sessions' files and the server's processes.`);
  }
  log.info(`sandboxes: isolation ${host.isolation}${host.seccomp ? "+seccomp" : ""} (${host.detail}); limits ${host.limitMode} (${host.limitDetail})`);

  // A destroyed sandbox's folder leaves its path at once; its files are removed in the background.
  const trash = new Trash(join(config.dataDir, "trash"));
  const sandboxes: SandboxFactory = {
    describe: () => ({
      isolation: { mode: host.isolation, seccomp: host.seccomp, unisolatedAllowed: allowUnisolated },
      limits: { mode: host.limitMode, memoryMb: limits.memoryMb, diskMb: limits.diskMb, maxProcesses: limits.maxProcesses, cpuPercent: limits.cpuPercent },
    }),
    async removeLeftovers(ids) {
      // Nothing of this server runs yet, and the data folder is its own: every
      // sandbox folder in it is left over (spares included, which the database
      // never lists); resource groups go by the ids the database names.
      const wanted = new Set(ids);
      const groups =
        host.limitMode === "cgroup2" ? await listCgroup2Groups(process.env.ASH_CGROUP_ROOT) : host.limitMode === "cgroup1" ? await listCgroup1Groups(cgroup1Parent) : [];
      for (const group of groups) if (wanted.has(group.id)) await group.destroy().catch(() => undefined);
      const folder = join(config.dataDir, "sandboxes");
      const names = await readdir(folder).catch(() => [] as string[]);
      for (const name of names) await removeTree(join(folder, name));
      return names.length + (await trash.empty());
    },
    async close() {
      // Each sandbox removed its own groups; the folder this server made for them goes last.
      if (host.limitMode === "cgroup1") await removeCgroup1Parent(cgroup1Parent);
      await trash.settle();
    },
    async create({ id, env, populate, network }) {
      // Filled before any process of the sandbox runs; then handed to the sandbox user.
      const sandbox = await createSandbox({
        dataDir: config.dataDir,
        id,
        env,
        limits,
        allowUnisolated,
        cgroup1Parent,
        network,
        populate: ({ workspaceDir }) => populate(workspaceDir),
        trash,
      });
      return {
        id: sandbox.id,
        workspaceDir: sandbox.workspaceDir,
        homeDir: sandbox.homeDir,
        spawnClaudeCode: (options, how) => sandbox.spawnClaudeCode(options, how),
        renice: (nice) => sandbox.renice(nice),
        suspendNetwork: () => sandbox.suspendNetwork(),
        resumeNetwork: () => sandbox.resumeNetwork(),
        exec: async (command, { timeoutMs }) => {
          const r = await sandbox.exec(command, { timeoutMs });
          return { exitCode: r.exitCode ?? -1, stdout: r.stdout, stderr: r.stderr, timedOut: r.timedOut, limit: r.limitReason };
        },
        logs: () => sandbox.logs().map((l) => `${new Date(l.at).toISOString()} ${l.source}/${l.stream}: ${l.line}`),
        limitCounters: () => sandbox.limitCounters(),
        io: sandbox.io,
        note: (line) => sandbox.note(line),
        destroy: () => sandbox.destroy(),
      };
    },
  };

  const snap = config.snapshots;
  // A save lists only what changed since the sandbox folder's last save, from this long before it began.
  const changedMarginMs = await changeTimeMarginMs(join(config.dataDir, "sandboxes"));
  // Versions (packs and trees, shared by every session) under `store/`; old per-session snapshots stay where they were.
  const store = createVersionStore(
    snap.kind === "s3"
      ? {
          s3: {
            endpoint: snap.endpoint,
            bucket: snap.bucket,
            region: snap.region,
            accessKeyId: snap.accessKeyId,
            secretAccessKey: snap.secretAccessKey,
            prefix: snap.prefix,
            storePrefix: `${snap.prefix}/store`,
          },
        }
      : { dataDir: config.dataDir },
    { changedMarginMs },
  );
  log.info(`snapshots: ${snap.kind === "s3" ? `s3://${snap.bucket}/${snap.prefix} at ${snap.endpoint}` : "files under <data>/store"}`);
  // A save is refused past the disk limit: restoring it would put the next sandbox over at once.
  const maxBytes = Math.floor(limits.diskMb * 1024 * 1024);
  const files = (entries: SnapshotListEntry[]) => entries.filter((e) => e.type === "file").map((e) => ({ path: e.path, size: e.size, mode: e.mode }));
  const workspaces: WorkspaceStore = {
    save: (sandbox, { base, onWrite }) => store.save(sandbox.io, { base, maxBytes, onWrite, onNote: (line) => sandbox.note(line) }),
    restore: (version, sandbox) => store.restore(version, sandbox.io, { onNote: (line) => sandbox.note(line) }),
    verify: (version, sandbox) => store.verify(version, sandbox.io),
    list: async (version) => files(await store.list(version)),
    read: (version, path) => store.read(version, path),
    archive: (version) => store.archive(version),
    removeObjects: (keys) => store.removeObjects(keys),
    legacy: {
      has: async (sessionId) => (await store.legacy.info(sessionId)) !== null,
      restore: (sessionId, sandbox) => store.legacy.restore(sessionId, sandbox.io, { onNote: (line) => sandbox.note(line) }),
      list: async (sessionId) => {
        const entries = await store.legacy.list(sessionId);
        return entries ? files(entries) : null;
      },
      read: (sessionId, path) => store.legacy.read(sessionId, path),
      archive: (sessionId) => store.legacy.archive(sessionId),
      delete: (sessionId) => store.legacy.delete(sessionId),
    },
  };
  return { sandboxes, workspaces };
}
