import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { PieceIndex } from "../../src/snapshots/piece-index";
import type { Piece } from "../../src/snapshots/tree";

const sha = (text: string) => createHash("sha256").update(text).digest("hex");

describe("the piece index of a save", () => {
  it("finds every piece added, by its whole hash, with its pack, offset and length", () => {
    const index = new PieceIndex();
    const pieces: Piece[] = Array.from({ length: 5000 }, (_, i) => ({
      pack: i % 3 === 0 ? sha(`pack ${i % 7}`) : i % 11,
      offset: i * 100,
      length: 100 + (i % 50),
      hash: sha(`piece ${i}`),
    }));
    for (const piece of pieces) index.insert(piece);
    expect(index.size).toBe(5000);
    for (const piece of pieces) expect(index.get(piece.hash)).toEqual(piece);
    expect(index.get(sha("never added"))).toBeUndefined();
  });

  it("tells apart hashes that share their first digits", () => {
    const index = new PieceIndex();
    const base = sha("x");
    // Same 7-digit prefix (the map key), different hashes.
    const twins = ["0", "1", "f", "a"].map((last) => base.slice(0, 63) + last);
    twins.forEach((hash, i) => index.insert({ pack: i, offset: i, length: 1, hash }));
    twins.forEach((hash, i) => expect(index.get(hash)).toEqual({ pack: i, offset: i, length: 1, hash }));
    expect(index.get(base.slice(0, 63) + "2")).toBeUndefined();
  });

  it("does not index a piece whose offset or length cannot be one of a pack's", () => {
    const index = new PieceIndex();
    index.insert({ pack: "a".repeat(64), offset: 2 ** 33, length: 1, hash: sha("far") });
    expect(index.get(sha("far"))).toBeUndefined();
  });
});
