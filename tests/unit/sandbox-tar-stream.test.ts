/**
 * The synchronous tar parser that reads every workspace save: archives made
 * by GNU tar in its formats, numbers written the ways tar writers write them,
 * and headers that are damaged or hostile. And the header writer every
 * restore uses, read back by GNU tar.
 */
import { execFileSync } from "node:child_process";
import { lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { NEED, TAR_END, TarFormatError, TarParser, tarHeader, tarHeaderInto, tarPadding, type TarEntry } from "../../src/sandbox/tar-stream";

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

  it("checks a header's checksum wherever the header sits in memory: one byte changed anywhere outside the field is refused", () => {
    const good = withBody(header({ size: Buffer.from("00000000012\0") }), 10);
    // The same bytes at each of the four offsets a word-wise sum may see.
    const at = (shift: number, bytes: Buffer) => {
      const room = Buffer.alloc(bytes.length + 8);
      const start = (4 - (room.byteOffset % 4) + shift) % 4;
      bytes.copy(room, start);
      return room.subarray(start, start + bytes.length);
    };
    for (let shift = 0; shift < 4; shift++) {
      expect(parseAll(at(shift, good))[0]!.body).toBe("a".repeat(10));
      for (const position of [0, 1, 2, 3, 99, 147, 156, 257, 300, 511]) {
        for (const delta of [1, 0x80]) {
          const bad = Buffer.from(good);
          bad[position] = (bad[position]! + delta) & 0xff;
          expect(() => parseAll(at(shift, bad)), `byte ${position} + ${delta}, shift ${shift}`).toThrow(/checksum/);
        }
      }
    }
  });
});

describe("the tar writer", () => {
  it("writes headers GNU tar and the parser read back exactly: long and non-UTF-8 names, long link targets, mtimes past the ustar field", () => {
    // Names are raw bytes as latin1: 0xe9 alone is not UTF-8.
    const deep = `${"d".repeat(60)}/${"e".repeat(60)}`;
    const odd = "caf\xe9 \nname\x7f";
    const target = `${"t".repeat(150)}/x`;
    const entries: Array<Parameters<typeof tarHeader>[0] & { body?: string }> = [
      { type: "dir", path: "./d", mode: 0o750, mtime: "1700000000.123456789" },
      { type: "dir", path: `./${"d".repeat(60)}`, mode: 0o755, mtime: "1700000001.000000000" },
      { type: "dir", path: `./${deep}`, mode: 0o700, mtime: "1700000002.000000000" },
      { type: "file", path: `./${deep}/${"f".repeat(120)}`, mode: 0o640, mtime: "1700000003.5", size: 700, body: "x".repeat(700) },
      { type: "file", path: `./d/${odd}`, mode: 0o600, mtime: "9000000000.250000000", size: 3, body: "abc" },
      { type: "file", path: "./d/old", mode: 0o644, mtime: "-5.000000000", size: 0, body: "" },
      { type: "symlink", path: "./d/link", mode: 0o777, mtime: "1700000004.000000000", linkpath: target },
      { type: "hardlink", path: "./d/same", mode: 0o600, mtime: "9000000000.250000000", linkpath: `./d/${odd}` },
    ];
    const parts: Buffer[] = [];
    for (const { body, ...entry } of entries) {
      parts.push(tarHeader(entry));
      if (body !== undefined) parts.push(Buffer.from(body, "latin1"), tarPadding(body.length));
    }
    const archive = Buffer.concat([...parts, TAR_END]);
    // Written into a larger buffer at an offset, the same bytes, and nothing around them touched.
    for (const { body: _, ...entry } of entries) {
      const big = Buffer.alloc(20_000, 0xaa);
      let length = 0;
      tarHeaderInto(entry, (n) => ((length = n), { buffer: big, at: 100 }));
      expect(big.subarray(100, 100 + length).equals(tarHeader(entry))).toBe(true);
      expect(big.subarray(0, 100).every((b) => b === 0xaa) && big.subarray(100 + length).every((b) => b === 0xaa)).toBe(true);
    }
    const file = join(root, "written.tar");
    writeFileSync(file, archive);

    // GNU tar checks every header's checksum and takes the pax records.
    const out = join(root, "written");
    mkdirSync(out);
    execFileSync("tar", ["-x", "-f", file, "--numeric-owner", "--no-same-owner", "--same-permissions", "--delay-directory-restore", "--warning=no-timestamp"], { cwd: out });
    const at = (raw: string) => Buffer.from(join(out, raw), "latin1");
    expect(readFileSync(at(`${deep}/${"f".repeat(120)}`), "latin1")).toBe("x".repeat(700));
    expect(lstatSync(at(`${deep}/${"f".repeat(120)}`)).mode & 0o7777).toBe(0o640);
    expect(lstatSync(at("d")).mode & 0o7777).toBe(0o750);
    expect(lstatSync(at(deep)).mode & 0o7777).toBe(0o700);
    expect(readFileSync(at(`d/${odd}`), "latin1")).toBe("abc");
    expect(lstatSync(at(`d/${odd}`), { bigint: true }).mtimeNs).toBe(9_000_000_000_250_000_000n);
    expect(lstatSync(at("d/old"), { bigint: true }).mtimeNs).toBe(-5_000_000_000n);
    expect(lstatSync(at(`${deep}/${"f".repeat(120)}`), { bigint: true }).mtimeNs).toBe(1_700_000_003_500_000_000n);
    expect(readlinkSync(at("d/link"), "latin1")).toBe(target);
    expect(lstatSync(at("d/same")).ino).toBe(lstatSync(at(`d/${odd}`)).ino);

    // The parser gives back each entry as written, whole or in chunks.
    for (const chunk of [archive.length, 512, 7]) {
      const read = parseAll(archive, chunk);
      expect(read.map((e) => [e.type, e.path, e.linkpath, e.mode, e.size, e.body])).toEqual(
        entries.map((e) => [e.type, e.path, e.linkpath ?? "", e.mode, e.type === "file" ? e.size : 0, e.body ?? ""]),
      );
      expect(read.map((e) => Number(e.mtime))).toEqual(entries.map((e) => Number(e.mtime)));
    }
  });

  it("puts a size too large for the ustar field in a pax record, and its padding is zeros", () => {
    const size = 8 ** 11 + 5;
    const header = tarHeader({ type: "file", path: "./big", mode: 0o644, mtime: "1700000000.000000000", size });
    const parser = new TarParser();
    parser.push(header);
    const entry = parser.next();
    expect(entry).not.toBe(NEED);
    expect((entry as TarEntry).size).toBe(size);
    expect(parser.left).toBe(size);
    for (const n of [0, 1, 511, 512, 513, 8 ** 11 + 5]) {
      const pad = tarPadding(n);
      expect((n + pad.length) % 512).toBe(0);
      expect(pad.every((byte) => byte === 0)).toBe(true);
    }
  });
});
