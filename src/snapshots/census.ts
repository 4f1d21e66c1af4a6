import type { Tree } from "./tree";

/**
 * What a version is made of, by folder position: how many of its folders use
 * each tree (two folders with the same entries share one), how many of those
 * name each pack, and its files and bytes. A save that changes a few folders
 * takes the base's census and moves only those positions, instead of reading
 * every tree of the new version to list its objects.
 */
export class Census {
  readonly trees = new Map<string, number>();
  readonly packs = new Map<string, number>();
  fileCount = 0;
  bytes = 0;

  static copy(of: Census): Census {
    const census = new Census();
    for (const [id, n] of of.trees) census.trees.set(id, n);
    for (const [id, n] of of.packs) census.packs.set(id, n);
    census.fileCount = of.fileCount;
    census.bytes = of.bytes;
    return census;
  }

  /** Keys held: what the census costs to keep. */
  get size(): number {
    return this.trees.size + this.packs.size;
  }

  /** One folder position using tree `id` more (1) or less (-1). */
  count(id: string, tree: Pick<Tree, "packs" | "entries">, by: 1 | -1): void {
    move(this.trees, id, by);
    for (const pack of tree.packs) move(this.packs, pack, by);
    for (const entry of tree.entries) {
      if (entry.type === "file") {
        this.fileCount += by;
        this.bytes += by * entry.size;
      } else if (entry.type === "hardlink") this.fileCount += by;
    }
  }

  /** Every object key the version needs. */
  objects(): string[] {
    return [...[...this.packs.keys()].map((id) => `packs/${id}`), ...[...this.trees.keys()].map((id) => `trees/${id}`)];
  }
}

function move(counts: Map<string, number>, key: string, by: 1 | -1): void {
  const n = (counts.get(key) ?? 0) + by;
  // Fewer than none: the census is not the version's; saving from it would drop objects still used.
  if (n < 0) throw new Error(`Workspace version census: ${key} counted below zero`);
  if (n === 0) counts.delete(key);
  else counts.set(key, n);
}
