import { describe, expect, it } from "vitest";
import { byName, decodeTree, encodeRows, encodeTree, type TreeEntry } from "../../src/snapshots/tree";

// What a tree's rows were defined as: JSON.stringify of one array per row (format 3). Tree ids are
// hashes of these bytes, so the writer must give exactly this text for every name a file system allows.
function reference(entries: TreeEntry[]): string {
  const packs: Array<string | number> = [];
  const rows = entries.map((entry) => {
    if (entry.type === "file") {
      return [entry.name, 0, entry.mode, entry.mtime, entry.size, entry.pieces.map((piece) => {
        if (!packs.includes(piece.pack)) packs.push(piece.pack);
        return [packs.indexOf(piece.pack), piece.offset, piece.length, piece.hash];
      })];
    }
    if (entry.type === "dir") return [entry.name, 1, entry.mode, entry.mtime, entry.tree];
    if (entry.type === "symlink") return [entry.name, 2, entry.mtime, entry.target];
    return [entry.name, 3, entry.mode, entry.mtime, entry.target];
  });
  return JSON.stringify(rows);
}

const hash = (n: number) => n.toString(16).padStart(64, "0");

describe("workspace trees (format 3)", () => {
  it("writes rows as the JSON text of their arrays, for names of any bytes", () => {
    const names = ['plain', 'quo"te', "back\\slash", "tab\there", "nl\nx", "\u0001ctl", "\u007f", "latin\u00e9\u00ff", "\u0080\u009f", "sp ace", "[brackets],"];
    const entries: TreeEntry[] = [
      ...names.map((name, i): TreeEntry => ({ type: "file", name, mode: 0o644, mtime: `${1700000000 + i}.123456789`, size: i === 0 ? 0 : 10 * i + 1, pieces: i === 0 ? [] : [{ pack: i % 3 === 0 ? "a".repeat(64) : 2, offset: i, length: 10 * i, hash: hash(i) }, { pack: "b".repeat(64), offset: 0, length: 1, hash: hash(99) }] })),
      { type: "dir", name: 'd"ir', mode: 0o1777, mtime: "1.000000000", tree: hash(7) },
      { type: "symlink", name: "ln\\k", mtime: "2.000000000", target: '../x"y\n' },
      { type: "hardlink", name: "hard", mode: 0o600, mtime: "3.000000000", target: "sub/plain" },
    ];
    expect(encodeRows(entries).rows).toBe(reference(entries));
    expect(encodeRows([]).rows).toBe("[]");
    // And what is written reads back as the same entries.
    const withIds = entries.map((entry) => (entry.type === "file" ? { ...entry, pieces: entry.pieces.map((p) => ({ ...p, pack: typeof p.pack === "number" ? "c".repeat(64) : p.pack })) } : entry));
    withIds.sort(byName);
    expect(decodeTree(encodeTree(withIds).bytes).entries).toEqual(withIds);
  });
});
