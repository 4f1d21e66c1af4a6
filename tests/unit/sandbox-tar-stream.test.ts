/**
 * The synchronous tar parser that reads every workspace save: archives made
 * by GNU tar in its formats, numbers written the ways tar writers write them,
 * and headers that are damaged or hostile.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { NEED, TarFormatError, TarParser, type TarEntry } from "../../src/sandbox/tar-stream";

const root = mkdtempSync(join(tmpdir(), "ash-tar-parse-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** Parses an archive pushed whole, or in chunks of `chunk` bytes as a stream would bring it. */
function parseAll(archive: Buffer, chunk = archive.length): Array<TarEntry & { body: string }> {
  const parser = new TarParser();
  let at = 0;
  const feed = () => {
    if (at >= archive.length) return parser.end();
    parser.push(archive.subarray(at, at + chunk));
    at += chunk;
  };
  feed();
  const out: Array<TarEntry & { body: string }> = [];
  for (;;) {
    const entry = parser.next();
    if (entry === NEED) {
      if (at >= archive.length) throw new Error("asked for more input after the end");
      feed();
      continue;
    }
    if (entry === null) return out;
    let body = "";
    while (parser.left > 0) {
      const part = parser.body(parser.left);
      if (part === NEED && at < archive.length) {
        feed();
        continue;
      }
      if (part === NEED || part === null) throw new Error("body cut short");
      body += part.toString("latin1");
    }
    out.push({ ...entry, body });
  }
}

/** One 512-byte ustar header for a file of `size` bytes, with fields written as given, and its checksum. */
function header(fields: { size: Buffer; mode?: Buffer; mtime?: Buffer }, checksum?: (sum: number) => Buffer): Buffer {
  const h = Buffer.alloc(512);
  h.write("file.txt", 0, "latin1");
  (fields.mode ?? Buffer.from("0000644\0")).copy(h, 100);
  Buffer.from("0001750\0").copy(h, 108);
  Buffer.from("0001750\0").copy(h, 116);
  fields.size.copy(h, 124);
  (fields.mtime ?? Buffer.from("14712345670\0")).copy(h, 136);
  h.write("0", 156, "latin1");
  h.write("ustar\u000000", 257, "latin1");
  let sum = 8 * 32;
  for (let i = 0; i < 512; i++) if (i < 148 || i >= 156) sum += h[i]!;
  (checksum ? checksum(sum) : Buffer.from(sum.toString(8).padStart(6, "0") + "\0 ")).copy(h, 148);
  return h;
}

const withBody = (h: Buffer, size: number) => Buffer.concat([h, Buffer.alloc(Math.ceil(size / 512) * 512, "a"), Buffer.alloc(1024)]);

describe("the tar parser", () => {
  it("reads what GNU tar writes, in the pax format with ns mtimes and in the GNU format", () => {
    const dir = join(root, "tree");
    mkdirSync(join(dir, "sub"), { recursive: true });
    writeFileSync(join(dir, "sub", "a.txt"), "hello");
    writeFileSync(join(dir, "big"), Buffer.alloc(70_000, 7));
    execFileSync("touch", ["-d", "2026-01-02T03:04:05.123456789Z", join(dir, "sub", "a.txt")]);
    for (const format of ["posix", "gnu"]) {
      const archive = execFileSync("tar", ["-c", `--format=${format}`, "--sort=name", "-C", dir, "."], { maxBuffer: 1 << 24 });
      const entries = parseAll(archive);
      expect(entries.map((e) => [e.path, e.type, e.size])).toEqual([
        [".", "dir", 0],
        ["./big", "file", 70_000],
        ["./sub", "dir", 0],
        ["./sub/a.txt", "file", 5],
      ]);
      const a = entries.find((e) => e.path === "./sub/a.txt")!;
      expect(a.body).toBe("hello");
      expect(a.mode & 0o777).toBe(0o644);
      // GNU format keeps whole seconds only.
      expect(a.mtime).toBe(format === "posix" ? "1767323045.123456789" : "1767323045.000000000");
      // The same entries and bytes however the stream is cut into chunks (headers and records across chunks).
      for (const chunk of [1, 7, 100, 511, 512, 513, 1000, 4096]) expect(parseAll(archive, chunk), `chunks of ${chunk}`).toEqual(entries);
    }
  });

  it("refuses a pax record whose length is not a plain decimal number or runs past its record set", () => {
    const pax = (records: string) => {
      const body = Buffer.from(records, "latin1");
      const h = Buffer.from(header({ size: Buffer.from(body.length.toString(8).padStart(11, "0") + "\0") }));
      h.write("x", 156, "latin1");
      let sum = 8 * 32;
      for (let i = 0; i < 512; i++) if (i < 148 || i >= 156) sum += h[i]!;
      Buffer.from(sum.toString(8).padStart(6, "0") + "\0 ").copy(h, 148);
      return Buffer.concat([h, body, Buffer.alloc((512 - (body.length % 512)) % 512), withBody(header({ size: Buffer.from("00000000000\0") }), 0)]);
    };
    // A well-formed record is read: its path names the file.
    expect(parseAll(pax("17 path=good.txt\n"))[0]!.path).toBe("good.txt");
    for (const bad of ["1x path=good.txt\n", "+17 path=good.txt\n", "99 path=good.txt\n", "0 path=a\n"]) {
      expect(() => parseAll(pax(bad)), bad).toThrow(TarFormatError);
    }
  });

  it("reads numbers with leading spaces, ended by a NUL or spaces, and in base-256", () => {
    const sizes: Array<[Buffer, number]> = [
      [Buffer.from("00000000012\0"), 10],
      [Buffer.from("   12      "), 10],
      [Buffer.from("12 \0garbage"), 10],
      [Buffer.from("\0\0\0\0\0\0\0\0\0\0\0\0"), 0],
      [Buffer.from([0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x00]), 512],
    ];
    for (const [field, size] of sizes) {
      const [entry] = parseAll(withBody(header({ size: field }), size));
      expect(entry!.size, JSON.stringify(field.toString("latin1"))).toBe(size);
      expect(entry!.body.length).toBe(size);
    }
  });

  it("refuses a number with other characters in it, a bad checksum, and a base-256 number too large to be exact", () => {
    for (const field of ["00000001 2\0", "0000000009\0", "-0000000001", "0x10\0"]) {
      expect(() => parseAll(withBody(header({ size: Buffer.from(field) }), 0)), field).toThrow(TarFormatError);
    }
    expect(() => parseAll(withBody(header({ size: Buffer.from("00000000012\0") }, (sum) => Buffer.from((sum + 1).toString(8).padStart(6, "0") + "\0 ")), 10))).toThrow(/checksum/);
    const huge = Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    expect(() => parseAll(withBody(header({ size: huge }), 0))).toThrow(/out of range/);
  });
});
