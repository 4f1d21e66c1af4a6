// Server parts without isolation, for exercising the HTTP and session layers
// on their own. The product uses src/server/parts.ts.
import { spawn, execFile } from "node:child_process";
import { cp, mkdir, readdir, readFile, rm, stat } from "node:fs/promises";
import { join, relative } from "node:path";
import type { ServerConfig } from "../../src/config";
import type { SandboxFactory, SnapshotStore } from "../../src/sessions/types";

export async function plainParts(config: ServerConfig) {
  const sandboxes: SandboxFactory = {
    describe: () => ({ isolation: "none", limits: { mode: "rlimit" } }),
    async create({ id, populate }) {
      const root = join(config.dataDir, "sandboxes", id);
      const workspaceDir = join(root, "workspace");
      const homeDir = join(root, "home");
      await mkdir(workspaceDir, { recursive: true });
      await populate(workspaceDir);
      await mkdir(homeDir, { recursive: true });
      return {
        id,
        workspaceDir,
        homeDir,
        spawnClaudeCode: (o) => spawn(o.command, o.args, { cwd: o.cwd, env: o.env as any, stdio: ["pipe", "pipe", "pipe"], signal: o.signal }) as any,
        exec: (command, { timeoutMs }) =>
          new Promise((resolve) => {
            execFile("sh", ["-c", command], { cwd: workspaceDir, timeout: timeoutMs }, (error: any, stdout, stderr) =>
              resolve({ exitCode: error ? (typeof error.code === "number" ? error.code : 1) : 0, stdout, stderr }),
            );
          }),
        logs: () => [],
        limitKillReason: () => null,
        destroy: () => rm(root, { recursive: true, force: true }),
      };
    },
  };
  const dir = (id: string) => join(config.dataDir, "sessions", id, "workspace");
  const snapshots: SnapshotStore = {
    async save(id, workspaceDir) {
      await rm(dir(id), { recursive: true, force: true });
      await cp(workspaceDir, dir(id), { recursive: true });
    },
    async restore(id, target) {
      try {
        await stat(dir(id));
      } catch {
        return false;
      }
      await cp(dir(id), target, { recursive: true });
      return true;
    },
    async copy(from, to) {
      try {
        await cp(dir(from), dir(to), { recursive: true });
        return true;
      } catch {
        return false;
      }
    },
    async list(id) {
      const out: Array<{ path: string; size: number }> = [];
      const walk = async (d: string) => {
        for (const e of await readdir(d, { withFileTypes: true })) {
          if (e.isDirectory()) await walk(join(d, e.name));
          else out.push({ path: relative(dir(id), join(d, e.name)), size: (await stat(join(d, e.name))).size });
        }
      };
      try {
        await walk(dir(id));
      } catch {
        return null;
      }
      return out;
    },
    async read(id, path) {
      return readFile(join(dir(id), path)).catch(() => null);
    },
  };
  return { sandboxes, snapshots };
}
