import { hash } from "node:crypto";

/**
 * One folder of a workspace version, Merkle style: entries sorted by the
 * bytes of their names, sub-folders by the id of their own tree, file
 * bytes as pieces inside packs. The tree's id is the SHA-256 of its
 * encoding, so an unchanged folder encodes to the same bytes and the same
 * id, and is stored once.
 *
 * Encoding: compact JSON, `{"v":3,"p":[pack ids],"e":[entries]}`. Names
 * and link targets are the raw bytes held in a latin1 string (JSON keeps
 * them exactly). Entries:
 *   file      [name, 0, mode, mtime, size, [[pack index, offset, length, sha256], ...]]
 *   folder    [name, 1, mode, mtime, tree id]
 *   symlink   [name, 2, mtime, target]
 *   hard link [name, 3, mode, mtime, path of the first name of the same file]
 */

export interface Piece {
  /** Pack id (sha256 hex) once known; while saving, a pack still being filled is its sequence number. */
  pack: string | number;
  offset: number;
  length: number;
  /** SHA-256 (hex) of the piece's bytes. */
  hash: string;
}

export type TreeEntry =
  | { type: "file"; name: string; mode: number; mtime: string; size: number; pieces: Piece[] }
  | { type: "dir"; name: string; mode: number; mtime: string; tree: string }
  | { type: "symlink"; name: string; mtime: string; target: string }
  | { type: "hardlink"; name: string; mode: number; mtime: string; target: string };

export interface Tree {
  /** Pack ids this folder's own files use (not its sub-folders'). */
  packs: string[];
  entries: TreeEntry[];
}

export class TreeFormatError extends Error {
  override name = "TreeFormatError";
}

const HEX64 = /^[0-9a-f]{64}$/;
const MTIME = /^-?\d+\.\d{9}$/;

// One call, no hash object: a restore checks every piece it reads.
export const sha256hex = (data: Buffer | string) => hash("sha256", data, "hex");

export const byName = (a: { name: string }, b: { name: string }) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

/** The bytes of a tree and its id; entries must be sorted by name and every piece's pack known. */
export function encodeTree(entries: TreeEntry[]): { id: string; bytes: Buffer; packs: string[] } {
  const { rows, packs } = encodeRows(entries);
  if (packs.some((pack) => typeof pack !== "string")) throw new Error("encodeTree: a piece's pack is not sealed yet");
  const { id, bytes } = treeOf(packs as string[], rows);
  return { id, bytes, packs: packs as string[] };
}

/**
 * A folder's entries (sorted by name) as the JSON text of the tree's entry
 * list, and the packs its pieces name by index, in order of first use. A
 * pack still being filled (a number) can be named before its id is known:
 * `treeOf` gets the ids.
 */
export function encodeRows(entries: TreeEntry[]): { rows: string; packs: Array<string | number> } {
  const packs: Array<string | number> = [];
  const packIndex = new Map<string | number, number>();
  // The text JSON.stringify gives the rows as arrays, written directly (no array per row and piece).
  const q = JSON.stringify;
  let rows = "[";
  for (let e = 0; e < entries.length; e++) {
    const entry = entries[e]!;
    if (e > 0) rows += ",";
    if (entry.type === "file") {
      rows += `[${q(entry.name)},0,${entry.mode},${q(entry.mtime)},${entry.size},[`;
      for (let p = 0; p < entry.pieces.length; p++) {
        const piece = entry.pieces[p]!;
        let index = packIndex.get(piece.pack);
        if (index === undefined) {
          index = packs.length;
          packs.push(piece.pack);
          packIndex.set(piece.pack, index);
        }
        rows += `${p > 0 ? "," : ""}[${index},${piece.offset},${piece.length},${q(piece.hash)}]`;
      }
      rows += "]]";
    } else if (entry.type === "dir") rows += `[${q(entry.name)},1,${entry.mode},${q(entry.mtime)},${q(entry.tree)}]`;
    else if (entry.type === "symlink") rows += `[${q(entry.name)},2,${q(entry.mtime)},${q(entry.target)}]`;
    else rows += `[${q(entry.name)},3,${entry.mode},${q(entry.mtime)},${q(entry.target)}]`;
  }
  return { rows: rows + "]", packs };
}

/** A tree's bytes and id from its pack ids and `encodeRows`' text: the same bytes as one JSON.stringify of the whole. */
export function treeOf(packs: string[], rows: string): { id: string; bytes: Buffer } {
  const bytes = Buffer.from(`{"v":3,"p":${JSON.stringify(packs)},"e":${rows}}`, "utf8");
  return { id: sha256hex(bytes), bytes };
}

const validName = (name: unknown): name is string =>
  typeof name === "string" && name !== "" && name !== "." && name !== ".." && !name.includes("/") && !name.includes("\0") && !/[^\x00-\xff]/.test(name);
const validCount = (n: unknown): n is number => typeof n === "number" && Number.isSafeInteger(n) && n >= 0;

/** Parses and checks a tree's bytes (after its id was checked against them). */
export function decodeTree(bytes: Buffer): Tree {
  let parsed: { v?: unknown; p?: unknown; e?: unknown };
  try {
    parsed = JSON.parse(bytes.toString("utf8"));
  } catch {
    throw new TreeFormatError("tree is not JSON");
  }
  if (parsed?.v !== 3 || !Array.isArray(parsed.p) || !Array.isArray(parsed.e)) throw new TreeFormatError("not a format 3 tree");
  const packs = parsed.p as unknown[];
  if (!packs.every((id) => typeof id === "string" && HEX64.test(id))) throw new TreeFormatError("bad pack id in tree");
  const entries: TreeEntry[] = [];
  let previous = "";
  for (const row of parsed.e as unknown[]) {
    if (!Array.isArray(row) || !validName(row[0]) || (entries.length > 0 && !(row[0] > previous))) throw new TreeFormatError("bad or unsorted entry name in tree");
    const name = row[0];
    previous = name;
    const kind = row[1];
    if (kind === 0) {
      const [, , mode, mtime, size, pieces] = row as [string, number, unknown, unknown, unknown, unknown];
      if (!validCount(mode) || typeof mtime !== "string" || !MTIME.test(mtime) || !validCount(size) || !Array.isArray(pieces)) throw new TreeFormatError("bad file entry in tree");
      let total = 0;
      const out: Piece[] = pieces.map((piece: unknown) => {
        const [index, offset, length, hash] = (Array.isArray(piece) ? piece : []) as [unknown, unknown, unknown, unknown];
        if (!validCount(index) || index >= packs.length || !validCount(offset) || !validCount(length) || typeof hash !== "string" || !HEX64.test(hash)) {
          throw new TreeFormatError("bad piece in tree");
        }
        total += length;
        return { pack: packs[index] as string, offset, length, hash };
      });
      if (total !== size) throw new TreeFormatError("file pieces do not add up to its size");
      entries.push({ type: "file", name, mode, mtime, size, pieces: out });
    } else if (kind === 1) {
      const [, , mode, mtime, tree] = row as [string, number, unknown, unknown, unknown];
      if (!validCount(mode) || typeof mtime !== "string" || !MTIME.test(mtime) || typeof tree !== "string" || !HEX64.test(tree)) throw new TreeFormatError("bad folder entry in tree");
      entries.push({ type: "dir", name, mode, mtime, tree });
    } else if (kind === 2) {
      const [, , mtime, target] = row as [string, number, unknown, unknown];
      if (typeof mtime !== "string" || !MTIME.test(mtime) || typeof target !== "string") throw new TreeFormatError("bad symlink entry in tree");
      entries.push({ type: "symlink", name, mtime, target });
    } else if (kind === 3) {
      const [, , mode, mtime, target] = row as [string, number, unknown, unknown, unknown];
      if (!validCount(mode) || typeof mtime !== "string" || !MTIME.test(mtime) || typeof target !== "string" || target === "") throw new TreeFormatError("bad hard link entry in tree");
      entries.push({ type: "hardlink", name, mode, mtime, target });
    } else throw new TreeFormatError("unknown entry type in tree");
  }
  return { packs: packs as string[], entries };
}

/**
 * Order of two relative paths (raw latin1) in a depth-first walk that takes
 * each folder's entries by name: component by component, a folder before
 * what is in it. The order restores and hard link groups rely on.
 */
export function walkOrder(a: string, b: string): number {
  const x = a.split("/");
  const y = b.split("/");
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    if (x[i] !== y[i]) return x[i]! < y[i]! ? -1 : 1;
  }
  return x.length - y.length;
}
