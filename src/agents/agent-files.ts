import { lstat, mkdir, readdir, readFile, realpath, rename, rm, writeFile, chmod } from "node:fs/promises";
import { join, relative, resolve, sep, dirname, isAbsolute } from "node:path";
import { randomUUID } from "node:crypto";
import type { AgentFile } from "../db/queries/agents";
import { badRequest, unprocessable } from "../errors";

const MAX_FILES = 5000;

/** Linux's limits: a name (one path component) and a whole path, in bytes. */
const MAX_NAME_BYTES = 255;
const MAX_PATH_BYTES = 4096;

/**
 * Checks one uploaded path: relative, inside the folder, no `..`, no
 * absolute or drive paths, no empty or control-character segments, no name
 * or path longer than the file system takes. Returns it normalized.
 */
export function checkAgentPath(path: string): string {
  if (typeof path !== "string" || path.length === 0) throw badRequest("files: every file needs a path.");
  const where = `files: "${quoted(path)}"`;
  if (path.includes("\0")) throw badRequest(`${where} contains a NUL byte.`);
  if (/[\u0000-\u001f]/.test(path)) throw badRequest(`${where} contains control characters.`);
  if (Buffer.byteLength(path) > MAX_PATH_BYTES) throw badRequest(`${where} is longer than ${MAX_PATH_BYTES} bytes.`);
  if (isAbsolute(path) || /^[a-zA-Z]:/.test(path) || path.startsWith("\\")) throw badRequest(`${where} must be relative to the agent folder.`);
  const parts = path.split(/[\\/]/);
  if (parts.some((p) => p === "..")) throw badRequest(`${where} must not contain "..".`);
  const long = parts.find((p) => Buffer.byteLength(p) > MAX_NAME_BYTES);
  if (long !== undefined) throw badRequest(`${where} has a name longer than ${MAX_NAME_BYTES} bytes.`);
  const clean = parts.filter((p) => p !== "" && p !== ".");
  if (clean.length === 0) throw badRequest(`${where} does not name a file.`);
  return clean.join("/");
}

/** A path for an error sentence: cut short, control characters shown as escapes. */
function quoted(path: string): string {
  const short = path.length > 200 ? `${path.slice(0, 200)}…` : path;
  return short.replace(/[\u0000-\u001f"\\]/g, (c) => (c === '"' ? '\\"' : c === "\\" ? "\\\\" : `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`));
}

/**
 * Decodes an upload's `files`, checking the whole set before anything is
 * written: every path on its own, then paths that would land on the same
 * file (duplicates, also after normalizing: `a/./b` and `a//b`), and a file
 * that is also needed as a folder (`x` and `x/y`, in either order).
 * CLAUDE.md is required unless `requireClaudeMd` is false (files added to
 * an agent that has one).
 */
export function decodeUploadedFiles(files: Array<{ path: string; content: string; mode?: number }>, options: { requireClaudeMd?: boolean } = {}): AgentFile[] {
  if (files.length > MAX_FILES) throw badRequest(`files: at most ${MAX_FILES} files can be uploaded.`);
  const byPath = new Map<string, string>();
  const decoded = files.map((f) => {
    const path = checkAgentPath(f.path);
    if (/[\\/]$/.test(f.path)) throw badRequest(`files: "${quoted(f.path)}" names a folder; upload the files in it instead.`);
    const earlier = byPath.get(path);
    if (earlier !== undefined) {
      throw badRequest(earlier === f.path ? `files: "${quoted(path)}" appears twice.` : `files: "${quoted(earlier)}" and "${quoted(f.path)}" are the same file.`);
    }
    byPath.set(path, f.path);
    if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(f.content)) throw badRequest(`files: the content of "${quoted(path)}" is not base64.`);
    return { path, mode: f.mode && f.mode & 0o111 ? 0o755 : 0o644, content: Buffer.from(f.content, "base64") };
  });
  checkFolders(decoded);
  if (options.requireClaudeMd !== false) requireClaudeMd(decoded);
  return decoded;
}

/** Refuses a set where one file's path is a folder another file needs. */
function checkFolders(files: AgentFile[]): void {
  // Every folder some file needs; a file may not have one of these paths.
  const folders = new Map<string, string>();
  for (const file of files) {
    const parts = file.path.split("/");
    for (let i = 1; i < parts.length; i++) {
      const folder = parts.slice(0, i).join("/");
      if (!folders.has(folder)) folders.set(folder, file.path);
    }
  }
  for (const file of files) {
    const inside = folders.get(file.path);
    if (inside !== undefined) throw badRequest(`files: "${quoted(file.path)}" is a file, but "${quoted(inside)}" needs it to be a folder.`);
  }
}

/**
 * A version's files with `added` put in (same path: replaced) and `removed`
 * taken out, checked as a whole like an upload. CLAUDE.md must remain.
 */
export function mergeAgentFiles(base: AgentFile[], added: AgentFile[], removed: string[] = []): AgentFile[] {
  const byPath = new Map(base.map((f) => [f.path, f]));
  for (const path of removed) {
    const clean = checkAgentPath(path);
    if (!byPath.delete(clean)) throw badRequest(`removeFiles: the agent has no file "${quoted(clean)}".`);
  }
  for (const file of added) byPath.set(file.path, file);
  const merged = [...byPath.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  if (merged.length > MAX_FILES) throw badRequest(`files: an agent can have at most ${MAX_FILES} files.`);
  checkFolders(merged);
  requireClaudeMd(merged);
  return merged;
}

function requireClaudeMd(files: AgentFile[]): void {
  if (!files.some((f) => f.path === "CLAUDE.md")) {
    throw unprocessable("The agent folder has no CLAUDE.md at its top level; it is required (it is the agent's system prompt).");
  }
}

/**
 * Reads a folder on the server (`{name, path}` deploys): a path relative to
 * the data directory, or an absolute one inside the data directory or one
 * of the operator's agent roots (ASH_AGENT_ROOTS). The folder is resolved
 * through its symlinks first, so a link that leads out of every root is
 * refused; inside, symlinks are followed only when they stay in the folder.
 */
export async function readAgentFolder(dataDir: string, path: string, agentRoots: string[] = []): Promise<AgentFile[]> {
  const root = resolve(dataDir, path);
  const allowed = await Promise.all([dataDir, ...agentRoots].map((r) => realpath(r).catch(() => undefined)));
  const where = agentRoots.length
    ? `inside the data directory (a relative path) or inside one of the ${agentRoots.length} folder${agentRoots.length === 1 ? "" : "s"} the operator listed in ASH_AGENT_ROOTS`
    : "inside the data directory (a relative path); the operator can allow more folders with ASH_AGENT_ROOTS";
  let rootReal: string;
  try {
    rootReal = await realpath(root);
  } catch {
    throw badRequest(`path: no folder "${quoted(path)}" on the server; it must be ${where}.`);
  }
  const inside = allowed.some((r) => r !== undefined && (rootReal === r || rootReal.startsWith(r + sep)));
  if (!inside) throw badRequest(`path: the folder must be ${where}, and symlinks must not lead out of it.`);
  if (!(await lstat(rootReal)).isDirectory()) throw badRequest(`path: "${path}" is not a folder.`);

  const files: AgentFile[] = [];
  const walk = async (dir: string) => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const full = join(dir, entry.name);
      const rel = relative(rootReal, full).split(sep).join("/");
      if (entry.name === ".git" || entry.name === "node_modules") continue;
      let target = full;
      if (entry.isSymbolicLink()) {
        const real = await realpath(full).catch(() => undefined);
        if (!real || !(real === rootReal || real.startsWith(rootReal + sep))) throw badRequest(`path: the symlink "${rel}" points outside the agent folder.`);
        target = real;
      }
      const info = await lstat(target);
      if (info.isDirectory()) await walk(full);
      else if (info.isFile()) {
        if (files.length >= MAX_FILES) throw badRequest(`path: the folder has more than ${MAX_FILES} files.`);
        files.push({ path: rel, mode: info.mode & 0o111 ? 0o755 : 0o644, content: await readFile(target) });
      }
    }
  };
  await walk(rootReal);
  requireClaudeMd(files);
  return files;
}

export interface StagedAgent {
  /** Puts the staged files in place of the current ones, in one rename. */
  commit(): Promise<string>;
  /** Removes the staged files; the current ones stay. */
  discard(): Promise<void>;
}

/**
 * Writes an agent's files beside `<data>/agents/<name>/` without touching the
 * current version, so a deploy can write its database rows in between and
 * still back out of either step.
 */
/** Where a tenant's agent folders are kept: `<data>/agents` for the default tenant, `<data>/tenants/<id>/agents` for others. */
export function agentsDirOf(dataDir: string, tenantId: string): string {
  return tenantId === "default" ? join(dataDir, "agents") : join(dataDir, "tenants", tenantId, "agents");
}

export async function stageAgent(dataDir: string, tenantId: string, name: string, files: AgentFile[]): Promise<StagedAgent> {
  const agentsDir = agentsDirOf(dataDir, tenantId);
  const target = join(agentsDir, name);
  const staging = join(agentsDir, `.staging-${name}-${randomUUID()}`);
  const discard = () => rm(staging, { recursive: true, force: true });
  try {
    await writeFiles(staging, files);
  } catch (error) {
    await discard().catch(() => undefined);
    throw error;
  }
  return {
    discard,
    async commit() {
      const old = join(agentsDir, `.old-${name}-${randomUUID()}`);
      let moved = false;
      try {
        await rename(target, old).then(
          () => (moved = true),
          (e) => {
            if (e.code !== "ENOENT") throw e;
          },
        );
        await rename(staging, target);
      } catch (error) {
        // The previous version goes back where it was.
        if (moved) await rename(old, target).catch(() => undefined);
        await discard().catch(() => undefined);
        throw error;
      }
      await rm(old, { recursive: true, force: true });
      return target;
    },
  };
}

/**
 * Writes an agent's files to its folder (agentsDirOf), replacing the previous
 * version in one rename so a reader never sees half of each.
 */
export async function materializeAgent(dataDir: string, tenantId: string, name: string, files: AgentFile[]): Promise<string> {
  return (await stageAgent(dataDir, tenantId, name, files)).commit();
}

/** Writes files under `dir`, which must not escape it (paths were checked on upload). */
export async function writeFiles(dir: string, files: AgentFile[]): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const file of files) {
    const full = join(dir, file.path);
    if (!full.startsWith(dir + sep)) throw badRequest(`files: "${file.path}" leaves the folder.`);
    await mkdir(dirname(full), { recursive: true });
    await writeFile(full, file.content);
    await chmod(full, file.mode);
  }
}

export async function removeAgentFolder(dataDir: string, tenantId: string, name: string): Promise<void> {
  await rm(join(agentsDirOf(dataDir, tenantId), name), { recursive: true, force: true });
}
