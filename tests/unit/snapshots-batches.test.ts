/**
 * The batches a restore writes to the sandbox's tar: the same bytes in the
 * same order as one concatenation, in buffers that are filled again only
 * once handed back.
 */
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { Batcher, BufferPool } from "../../src/snapshots/batches";

const parts = () => [randomBytes(1536), Buffer.alloc(0), randomBytes(300), randomBytes(700), randomBytes(5000), randomBytes(3), randomBytes(1536)];

describe("archive batches", () => {
  it("give the parts' bytes in order, with or without a pool, and nothing when nothing waits", () => {
    for (const pool of [undefined, new BufferPool(4096, 4)]) {
      const batcher = new Batcher(2048, pool);
      const input = parts();
      const out: Buffer[] = [];
      for (const part of input) {
        batcher.put(part);
        if (batcher.full) out.push(...batcher.take());
      }
      out.push(...batcher.take());
      expect(Buffer.concat(out).equals(Buffer.concat(input))).toBe(true);
      expect(out.every((b) => b.length > 0)).toBe(true);
      expect(batcher.take()).toEqual([]);
    }
  });

  it("with a pool, copy each part as it comes (its buffer may change after) and give room in order", () => {
    const pool = new BufferPool(4096, 4);
    const batcher = new Batcher(1 << 20, pool);
    const pack = Buffer.from("x".repeat(10_000));
    batcher.put(Buffer.from("head "));
    batcher.put(pack);
    pack.fill("y");
    const { buffer, at } = batcher.room(6);
    buffer.write(" room ", at, "latin1");
    const big = batcher.room(5000);
    big.buffer.fill("z", big.at, big.at + 5000);
    batcher.put(Buffer.from(" tail"));
    const out = batcher.take();
    expect(Buffer.concat(out).toString()).toBe(`head ${"x".repeat(10_000)} room ${"z".repeat(5000)} tail`);
    // Pool buffers never hold more than their size; a room larger than one is a buffer of its own.
    expect(out.every((b) => b.length <= 5000)).toBe(true);
    expect(out.some((b) => b.length === 5000)).toBe(true);
  });

  it("without a pool, give room in new buffers, in order", () => {
    const batcher = new Batcher(1 << 20);
    batcher.put(Buffer.from("a"));
    const { buffer, at } = batcher.room(3);
    buffer.write("bcd", at, "latin1");
    batcher.put(Buffer.from("e"));
    expect(batcher.take().map((b) => b.toString())).toEqual(["abcde"]);
  });

  it("fill a buffer again only after it was handed back, and never take a buffer of its own in", () => {
    const pool = new BufferPool(4096, 4);
    const batcher = new Batcher(16, pool);
    batcher.put(Buffer.from("first batch of bytes"));
    const [first] = batcher.take();
    batcher.put(Buffer.from("second batch of bytes"));
    const [second] = batcher.take();
    // Not handed back: the second batch is in a buffer of its own, and the first is unchanged.
    expect(second!.buffer).not.toBe(first!.buffer);
    expect(first!.toString()).toBe("first batch of bytes");
    pool.give(first!);
    batcher.put(Buffer.from("third"));
    const [third] = batcher.take();
    expect(third!.buffer).toBe(first!.buffer);
    // Something that is not the pool's is left alone.
    const foreign = randomBytes(4096);
    pool.give(foreign);
    batcher.put(Buffer.from("fourth"));
    const [fourth] = batcher.take();
    expect(fourth!.buffer).not.toBe(foreign.buffer);
  });
});
