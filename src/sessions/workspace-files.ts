import { lstat, readdir, readFile, realpath } from "node:fs/promises";
import { join, relative, sep } from "node:path";

const MAX_LISTED = 10_000;

/** Every regular file of a live workspace, with sizes; symlinks are listed, never followed. */
export async function listWorkspaceFiles(root: string): Promise<Array<{ path: string; size: number; modifiedAt: string }>> {
  const files: Array<{ path: string; size: number; modifiedAt: string }> = [];
  const walk = async (dir: string) => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      if (files.length >= MAX_LISTED) return;
      const full = join(dir, entry.name);
      if (entry.isDirectory()) await walk(full);
      else if (entry.isFile()) {
        const info = await lstat(full);
        files.push({ path: relative(root, full).split(sep).join("/"), size: info.size, modifiedAt: info.mtime.toISOString() });
      }
    }
  };
  await walk(root);
  return files.sort((a, b) => a.path.localeCompare(b.path));
}

/**
 * One file of a live workspace. The agent controls that folder, so a symlink
 * there may point anywhere: the real path must stay inside the workspace.
 */
export async function readWorkspaceFile(root: string, path: string): Promise<Buffer | null> {
  try {
    const rootReal = await realpath(root);
    const real = await realpath(join(root, path));
    if (!real.startsWith(rootReal + sep)) return null;
    if (!(await lstat(real)).isFile()) return null;
    return await readFile(real);
  } catch (error: any) {
    if (error?.code === "ENOENT" || error?.code === "ENOTDIR") return null;
    throw error;
  }
}
