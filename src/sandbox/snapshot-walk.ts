import { lstat, readdir, readlink } from "node:fs/promises";
import { dirname, isAbsolute, join, posix, relative, resolve, sep } from "node:path";

export interface WalkedFile {
  path: string;
  size: number;
  /** Permission bits (e.g. 0o755), without setuid/setgid. */
  mode: number;
  mtimeMs: number;
}
export interface WalkedDir {
  path: string;
  mode: number;
}
export interface WalkedLink {
  path: string;
  /** Relative to the link's folder; always resolves inside the workspace. */
  target: string;
}

export interface WorkspaceTree {
  files: WalkedFile[];
  dirs: WalkedDir[];
  symlinks: WalkedLink[];
  /** Symlinks pointing outside the workspace, sockets, fifos, devices: not kept. */
  skipped: string[];
}

/** Lists a workspace for a snapshot without following symlinks. */
export async function walkWorkspace(root: string): Promise<WorkspaceTree> {
  const tree: WorkspaceTree = { files: [], dirs: [], symlinks: [], skipped: [] };
  const base = resolve(root);
  const pending = [""];
  while (pending.length > 0) {
    const rel = pending.pop()!;
    const names = (await readdir(join(base, rel))).sort();
    for (const name of names) {
      const childRel = rel ? `${rel}/${name}` : name;
      const full = join(base, childRel);
      const info = await lstat(full);
      if (info.isDirectory()) {
        tree.dirs.push({ path: childRel, mode: info.mode & 0o1777 });
        pending.push(childRel);
      } else if (info.isFile()) {
        // setuid/setgid bits are dropped: a restore must never mint a privileged binary.
        tree.files.push({ path: childRel, size: info.size, mode: info.mode & 0o777, mtimeMs: info.mtimeMs });
      } else if (info.isSymbolicLink()) {
        const target = await readlink(full);
        const resolved = isAbsolute(target) ? resolve(target) : resolve(dirname(full), target);
        const inside = relative(base, resolved);
        if (inside === ".." || inside.startsWith(`..${sep}`) || isAbsolute(inside)) {
          tree.skipped.push(childRel);
        } else {
          // Stored relative, so it still points inside when restored elsewhere.
          tree.symlinks.push({ path: childRel, target: posix.relative(posix.dirname(`/${childRel}`), `/${inside}`) || "." });
        }
      } else {
        tree.skipped.push(childRel);
      }
    }
  }
  return tree;
}
