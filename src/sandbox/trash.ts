import { randomBytes } from "node:crypto";
import { mkdir, readdir, rename } from "node:fs/promises";
import { basename, join } from "node:path";
import { removeTree } from "./remove-tree";

/**
 * Folders of destroyed sandboxes, moved out of the way at once (one rename)
 * and removed in the background: removing a workspace of 300,000 files takes
 * this disk 14 s, which a pause or an eviction need not wait for. The folder
 * is the server's own (`<data>/trash/`, on the same file system as the
 * sandboxes); what a crash left in it is removed at the next start.
 */
export class Trash {
  private readonly removing = new Set<Promise<void>>();

  constructor(private readonly dir: string) {}

  /** Takes a folder no process uses any more away from its path now; its removal goes on after. */
  async discard(path: string): Promise<void> {
    const target = join(this.dir, `${basename(path)}.${randomBytes(6).toString("hex")}`);
    try {
      await mkdir(this.dir, { recursive: true, mode: 0o700 });
      await rename(path, target);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return;
      // Another file system, say: removed where it is, as it always could be.
      await removeTree(path);
      return;
    }
    const removal: Promise<void> = removeTree(target)
      .catch(() => undefined)
      .finally(() => this.removing.delete(removal));
    this.removing.add(removal);
  }

  /** Folders still being removed. */
  get pending(): number {
    return this.removing.size;
  }

  /** Waits for the removals under way (a server that stops leaves none behind). */
  async settle(): Promise<void> {
    while (this.removing.size > 0) await Promise.all([...this.removing]);
  }

  /** Removes whatever an earlier run left in the folder; how many it found. */
  async empty(): Promise<number> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    for (const name of names) await removeTree(join(this.dir, name));
    return names.length;
  }
}
