import type { Piece } from "./tree";

/**
 * Where each new piece of a save lies, by its SHA-256, in about 60 bytes a
 * piece: a Map from a 28-bit prefix of the hash (a small integer) to a slot,
 * and per slot the pack, offset, length and the whole hash in typed arrays. A
 * Map of hex strings to piece objects took about 170 bytes a piece, which at
 * 300,000 files was most of what a first save held. Lookups compare the whole
 * hash, so two hashes with the same prefix are told apart (chained slots).
 */
export class PieceIndex {
  private readonly slots = new Map<number, number>();
  /** Slot data in pages of PAGE slots (added as needed: nothing is copied or left behind as the index grows). */
  private readonly pages: Page[] = [];
  private count = 0;
  private readonly packIds: string[] = [];
  private readonly packRefs = new Map<string, number>();
  private readonly scratch = Buffer.alloc(32);

  get size(): number {
    return this.count;
  }

  /** The piece with these bytes, as a new Piece, or undefined. */
  get(hash: string): Piece | undefined {
    const slot = this.find(hash);
    if (slot < 0) return undefined;
    const page = this.pages[slot >>> PAGE_BITS]!;
    const at = slot & PAGE_MASK;
    const ref = page.packs[at]!;
    return { pack: ref >= 0 ? ref : this.packIds[-ref - 1]!, offset: page.offsets[at]!, length: page.lengths[at]!, hash };
  }

  /** Adds a piece whose hash `get` just did not find (no second lookup). */
  insert(piece: Piece): void {
    // Packs hold at most a few MB; a tree naming more is not one of ours, and its pieces are not reused.
    if (piece.offset > 0xffffffff || piece.length > 0xffffffff) return;
    const slot = this.count++;
    if ((slot & PAGE_MASK) === 0) this.pages.push(newPage());
    const page = this.pages[slot >>> PAGE_BITS]!;
    const at = slot & PAGE_MASK;
    page.packs[at] = typeof piece.pack === "number" ? piece.pack : this.packRef(piece.pack);
    page.offsets[at] = piece.offset;
    page.lengths[at] = piece.length;
    page.hashes.write(piece.hash, at * 32, 32, "hex");
    const key = prefix(piece.hash);
    const first = this.slots.get(key);
    page.next[at] = first ?? -1;
    this.slots.set(key, slot);
  }

  private find(hash: string): number {
    let slot: number = this.slots.get(prefix(hash)) ?? -1;
    if (slot < 0) return -1;
    this.scratch.write(hash, 0, 32, "hex");
    while (slot >= 0) {
      const page: Page = this.pages[slot >>> PAGE_BITS]!;
      const at = slot & PAGE_MASK;
      if (this.scratch.compare(page.hashes, at * 32, at * 32 + 32) === 0) return slot;
      slot = page.next[at]!;
    }
    return -1;
  }

  private packRef(id: string): number {
    let k = this.packRefs.get(id);
    if (k === undefined) {
      k = this.packIds.length;
      this.packIds.push(id);
      this.packRefs.set(id, k);
    }
    return -(k + 1);
  }
}

const PAGE_BITS = 14;
const PAGE = 1 << PAGE_BITS;
const PAGE_MASK = PAGE - 1;

interface Page {
  /** n >= 0: the save's own pack n (a Piece's number); -(k + 1): packIds[k]. */
  packs: Int32Array;
  offsets: Uint32Array;
  lengths: Uint32Array;
  /** The next slot with the same prefix, or -1. */
  next: Int32Array;
  /** The whole hash of each slot, 32 bytes. */
  hashes: Buffer;
}

function newPage(): Page {
  return { packs: new Int32Array(PAGE), offsets: new Uint32Array(PAGE), lengths: new Uint32Array(PAGE), next: new Int32Array(PAGE), hashes: Buffer.alloc(PAGE * 32) };
}

/** The first 7 hex digits of a hash as an integer (small enough to stay a V8 small integer). */
function prefix(hash: string): number {
  let value = 0;
  for (let i = 0; i < 7; i++) {
    const c = hash.charCodeAt(i);
    value = value * 16 + (c <= 57 ? c - 48 : (c | 32) - 87);
  }
  return value;
}
