import { lstat, mkdir, readdir, readFile, realpath, rename, rm, writeFile, chmod } from "node:fs/promises";
import { join, relative, resolve, sep, dirname, isAbsolute } from "node:path";
import { randomUUID } from "node:crypto";
import type { AgentFile } from "../db/queries/agents";
import { badRequest, unprocessable } from "../errors";

export const AGENT_NAME = /^[a-zA-Z0-9_-]{1,64}$/;
const MAX_FILES = 5000;

/**
 * Checks one uploaded path: relative, inside the folder, no `..`, no
 * absolute or drive paths, no empty or control-character segments.
 */
export function checkAgentPath(path: string): string {
  const where = `files: "${path.slice(0, 200)}"`;
  if (typeof path !== "string" || path.length === 0) throw badRequest("files: every file needs a path.");
  if (path.length > 1024) throw badRequest(`${where} is too long.`);
  if (/[\u0000-\u001f]/.test(path)) throw badRequest(`${where} contains control characters.`);
  if (isAbsolute(path) || /^[a-zA-Z]:/.test(path) || path.startsWith("\\")) throw badRequest(`${where} must be relative to the agent folder.`);
  const parts = path.split(/[\\/]/);
  if (parts.some((p) => p === "..")) throw badRequest(`${where} must not contain "..".`);
  const clean = parts.filter((p) => p !== "" && p !== ".");
  if (clean.length === 0) throw badRequest(`${where} does not name a file.`);
  return clean.join("/");
}

/** Decodes an upload's `files`, refusing duplicates and requiring CLAUDE.md. */
export function decodeUploadedFiles(files: Array<{ path: string; content: string; mode?: number }>): AgentFile[] {
  if (files.length > MAX_FILES) throw badRequest(`files: at most ${MAX_FILES} files can be uploaded.`);
  const seen = new Set<string>();
  const decoded = files.map((f) => {
    const path = checkAgentPath(f.path);
    if (seen.has(path)) throw badRequest(`files: "${path}" appears twice.`);
    seen.add(path);
    if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(f.content)) throw badRequest(`files: the content of "${path}" is not base64.`);
    return { path, mode: f.mode && f.mode & 0o111 ? 0o755 : 0o644, content: Buffer.from(f.content, "base64") };
  });
  requireClaudeMd(decoded);
  return decoded;
}

function requireClaudeMd(files: AgentFile[]): void {
  if (!files.some((f) => f.path === "CLAUDE.md")) {
    throw unprocessable("The agent folder has no CLAUDE.md at its top level; it is required (it is the agent's system prompt).");
  }
}

/**
 * Reads a folder that already sits inside the data directory (`{name, path}`
 * deploys). Symlinks are followed only when they stay inside the folder.
 */
export async function readAgentFolder(dataDir: string, path: string): Promise<AgentFile[]> {
  const root = resolve(dataDir, path);
  const dataReal = await realpath(dataDir);
  let rootReal: string;
  try {
    rootReal = await realpath(root);
  } catch {
    throw badRequest(`path: no folder "${path}" in the data directory.`);
  }
  if (rootReal !== dataReal && !rootReal.startsWith(dataReal + sep)) throw badRequest("path: the folder must be inside the data directory.");
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

/**
 * Writes an agent's files to `<data>/agents/<name>/`, replacing the previous
 * version in one rename so a reader never sees half of each.
 */
export async function materializeAgent(dataDir: string, name: string, files: AgentFile[]): Promise<string> {
  const agentsDir = join(dataDir, "agents");
  const target = join(agentsDir, name);
  const staging = join(agentsDir, `.staging-${name}-${randomUUID()}`);
  await writeFiles(staging, files);
  const old = join(agentsDir, `.old-${name}-${randomUUID()}`);
  await rename(target, old).catch((e) => {
    if (e.code !== "ENOENT") throw e;
  });
  await rename(staging, target);
  await rm(old, { recursive: true, force: true });
  return target;
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

export async function removeAgentFolder(dataDir: string, name: string): Promise<void> {
  await rm(join(dataDir, "agents", name), { recursive: true, force: true });
}
