/**
 * A small tar reader and writer for streams that cross the sandbox
 * boundary. Names are kept as raw bytes (a latin1 string holds one char per
 * byte), since a workspace may hold names that are not UTF-8. The reader
 * treats its input as untrusted: sizes are bounded by what the caller
 * accepts, names are only data, and a truncated stream is an error.
 */

export type TarEntryType = "file" | "dir" | "symlink" | "hardlink" | "other";

export interface TarEntry {
  type: TarEntryType;
  /** Raw bytes as latin1, as stored (may start with "./"). */
  path: string;
  /** Symlink or hard link target, raw bytes as latin1. */
  linkpath: string;
  size: number;
  mode: number;
  /** "seconds.nanoseconds", exact as the archive gave it. */
  mtime: string;
  /** The typeflag byte, for notes about skipped entries. */
  typeflag: string;
}

export class TarFormatError extends Error {
  override name = "TarFormatError";
}

const BLOCK = 512;
const MAX_META = 1024 * 1024;

/** Pulls exact byte counts out of an async source of chunks. */
class ByteReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private done = false;
  constructor(private readonly source: AsyncIterator<Buffer>) {}

  private async fill(): Promise<boolean> {
    if (this.done) return false;
    const next = await this.source.next();
    if (next.done) {
      this.done = true;
      return false;
    }
    const chunk = Buffer.isBuffer(next.value) ? next.value : Buffer.from(next.value);
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    return true;
  }

  /** Exactly n bytes, or null at a clean end before any of them. */
  async exact(n: number): Promise<Buffer | null> {
    while (this.buffered < n) {
      if (!(await this.fill())) {
        if (this.buffered === 0) return null;
        throw new TarFormatError("tar stream ended in the middle of a record");
      }
    }
    return this.take(n);
  }

  /** Up to n (> 0) bytes; throws at the end of the stream. */
  async some(n: number): Promise<Buffer> {
    while (this.buffered === 0) {
      if (!(await this.fill())) throw new TarFormatError("tar stream ended in the middle of a file");
    }
    return this.take(Math.min(n, this.chunks[0]!.length));
  }

  /** Reads the source to its end (tar pads its archive to whole records after the end marker). */
  async drain(limit = 1 << 20): Promise<void> {
    this.chunks = [];
    this.buffered = 0;
    let seen = 0;
    while (!this.done && seen <= limit) {
      const next = await this.source.next();
      if (next.done) this.done = true;
      else seen += (next.value as Buffer).length;
    }
    if (!this.done) {
      this.done = true;
      await this.source.return?.();
    }
  }

  private take(n: number): Buffer {
    const first = this.chunks[0]!;
    if (first.length >= n) {
      // Within one chunk: a view, no copy.
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      this.buffered -= n;
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let at = 0;
    while (at < n) {
      const head = this.chunks[0]!;
      const used = Math.min(head.length, n - at);
      head.copy(out, at, 0, used);
      at += used;
      if (used === head.length) this.chunks.shift();
      else this.chunks[0] = head.subarray(used);
    }
    this.buffered -= n;
    return out;
  }
}

function cString(buf: Buffer, start: number, length: number): string {
  const field = buf.subarray(start, start + length);
  const end = field.indexOf(0);
  return field.subarray(0, end === -1 ? field.length : end).toString("latin1");
}

function numeric(buf: Buffer, start: number, length: number): number {
  const field = buf.subarray(start, start + length);
  if (field[0]! & 0x80) {
    // base-256 (GNU): big-endian, first byte's top bit is the marker
    let value = field[0]! & 0x7f;
    for (let i = 1; i < field.length; i++) value = value * 256 + field[i]!;
    if (!Number.isSafeInteger(value)) throw new TarFormatError("tar number out of range");
    return value;
  }
  const text = cString(buf, start, length).replace(/[ \0]+$/, "").trim();
  if (text === "") return 0;
  if (!/^[0-7]+$/.test(text)) throw new TarFormatError(`bad tar number ${JSON.stringify(text)}`);
  return Number.parseInt(text, 8);
}

function checksumOk(header: Buffer): boolean {
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : header[i]!;
  return sum === numeric(header, 148, 8);
}

/** pax records: "<len> key=value\n"; values are raw bytes (latin1 strings). */
function parsePax(data: Buffer): Map<string, string> {
  const out = new Map<string, string>();
  let at = 0;
  while (at < data.length) {
    const space = data.indexOf(0x20, at);
    if (space === -1) break;
    const length = Number.parseInt(data.subarray(at, space).toString("latin1"), 10);
    if (!(length > 0) || at + length > data.length) throw new TarFormatError("bad pax record");
    const record = data.subarray(space + 1, at + length - 1);
    const eq = record.indexOf(0x3d);
    if (eq > 0) out.set(record.subarray(0, eq).toString("latin1"), record.subarray(eq + 1).toString("latin1"));
    at += length;
  }
  return out;
}

function typeOf(flag: string): TarEntryType {
  if (flag === "0" || flag === "" || flag === "\0" || flag === "7") return "file";
  if (flag === "5") return "dir";
  if (flag === "2") return "symlink";
  if (flag === "1") return "hardlink";
  return "other";
}

export interface TarReader {
  /** The next entry, or null at the end of the archive. Its body must be read or skipped first. */
  next(): Promise<TarEntry | null>;
  /** Up to `max` bytes of the current entry's body; null when it is all read. */
  read(max?: number): Promise<Buffer | null>;
}

/** Reads a ustar/pax/GNU archive from chunks. */
export function tarReader(source: AsyncIterable<Buffer>): TarReader {
  const reader = new ByteReader(source[Symbol.asyncIterator]());
  let remaining = 0;
  let padding = 0;
  let ended = false;

  async function skipBody(): Promise<void> {
    while (remaining > 0) {
      const chunk = await reader.some(Math.min(remaining, 1 << 20));
      remaining -= chunk.length;
    }
    if (padding > 0) await reader.exact(padding);
    padding = 0;
  }

  async function readMeta(size: number): Promise<Buffer> {
    if (size > MAX_META) throw new TarFormatError("tar metadata record too large");
    const data = (await reader.exact(size)) ?? Buffer.alloc(0);
    if (data.length !== size) throw new TarFormatError("tar stream ended in a metadata record");
    const pad = (BLOCK - (size % BLOCK)) % BLOCK;
    if (pad) await reader.exact(pad);
    return data;
  }

  return {
    async next() {
      if (ended) return null;
      await skipBody();
      let pax = new Map<string, string>();
      let longName: string | undefined;
      let longLink: string | undefined;
      for (;;) {
        const header = await reader.exact(BLOCK);
        if (header === null) throw new TarFormatError("tar stream ended without its end marker");
        if (header[0] === 0 && header[156] === 0 && header.every((byte) => byte === 0)) {
          ended = true;
          // The writer only finishes once its padding is read.
          await reader.drain();
          return null;
        }
        if (!checksumOk(header)) throw new TarFormatError("bad tar header checksum");
        const flag = String.fromCharCode(header[156]!);
        const size = numeric(header, 124, 12);
        if (flag === "x") {
          for (const [key, value] of parsePax(await readMeta(size))) pax.set(key, value);
          continue;
        }
        if (flag === "g") {
          await readMeta(size);
          continue;
        }
        if (flag === "L" || flag === "K") {
          const text = (await readMeta(size)).toString("latin1").replace(/\0+$/, "");
          if (flag === "L") longName = text;
          else longLink = text;
          continue;
        }
        const magic = header.subarray(257, 263).toString("latin1");
        const prefix = magic.startsWith("ustar") && magic !== "ustar " ? cString(header, 345, 155) : "";
        const name = cString(header, 0, 100);
        let path = pax.get("path") ?? longName ?? (prefix ? `${prefix}/${name}` : name);
        const linkpath = pax.get("linkpath") ?? longLink ?? cString(header, 157, 100);
        const paxSize = pax.get("size");
        const bodySize = paxSize !== undefined ? Number(paxSize) : size;
        if (!Number.isSafeInteger(bodySize) || bodySize < 0) throw new TarFormatError("bad tar size");
        const type = typeOf(flag);
        if (type === "dir" && path.endsWith("/")) path = path.replace(/\/+$/, "");
        let mtime = pax.get("mtime");
        if (mtime === undefined || !/^-?\d+(\.\d+)?$/.test(mtime)) mtime = String(numeric(header, 136, 12));
        // Only files carry a body in the archive (GNU tar writes none for links and dirs).
        remaining = type === "file" || type === "other" ? bodySize : 0;
        padding = (BLOCK - (remaining % BLOCK)) % BLOCK;
        if (type === "other" && (flag === "3" || flag === "4" || flag === "6")) {
          remaining = 0;
          padding = 0;
        }
        return { type, path, linkpath, size: type === "file" ? bodySize : 0, mode: numeric(header, 100, 8), mtime: canonicalMtime(mtime), typeflag: flag };
      }
    },
    async read(max = 1 << 20) {
      if (remaining <= 0) return null;
      const chunk = await reader.some(Math.min(max, remaining));
      remaining -= chunk.length;
      return chunk;
    },
  };
}

/** "sec.nnnnnnnnn" (nine digits) from any decimal seconds text. */
export function canonicalMtime(text: string): string {
  const dot = text.indexOf(".");
  // The common case, find's "%T@" and tar's pax mtime: at least nine digits after the point.
  if (dot > 0 && text.length - dot > 9 && text.charCodeAt(text.length - 1) > 32 && text.charCodeAt(0) > 32) return text.slice(0, dot + 10);
  const [sec = "0", frac = ""] = text.trim().split(".");
  return `${sec}.${(frac + "000000000").slice(0, 9)}`;
}

export function mtimeMsOf(mtime: string): number {
  return Math.round(Number(mtime) * 1000);
}

function octal(value: number, length: number): string {
  return value.toString(8).padStart(length - 1, "0") + "\0";
}

function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`, "latin1"), value, Buffer.from("\n")]);
  let length = body.length + 1;
  while (String(length).length + body.length !== length) length = String(length).length + body.length;
  return Buffer.concat([Buffer.from(String(length), "latin1"), body]);
}

function rawHeader(name: string, flag: string, size: number, mode: number, mtimeSec: number, linkname = ""): Buffer {
  const header = Buffer.alloc(BLOCK);
  header.write(name.slice(0, 100), 0, 100, "latin1");
  header.write(octal(mode & 0o7777, 8), 100, 8, "latin1");
  header.write(octal(0, 8), 108, 8, "latin1");
  header.write(octal(0, 8), 116, 8, "latin1");
  header.write(octal(size, 12), 124, 12, "latin1");
  header.write(octal(Math.max(0, Math.floor(mtimeSec)), 12), 136, 12, "latin1");
  header.write("        ", 148, 8, "latin1");
  header.write(flag, 156, 1, "latin1");
  header.write(linkname.slice(0, 100), 157, 100, "latin1");
  header.write("ustar\u000000", 257, 8, "latin1");
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(octal(sum, 7) + " ", 148, 8, "latin1");
  return header;
}

const padTo = (size: number) => Buffer.alloc((BLOCK - (size % BLOCK)) % BLOCK);

/** Header blocks (a pax record set, then ustar) for one entry; names are raw latin1 strings. */
export function tarHeader(entry: { type: "file" | "dir" | "symlink" | "hardlink"; path: string; size?: number; mode: number; mtime: string; linkpath?: string }): Buffer {
  const size = entry.type === "file" ? entry.size ?? 0 : 0;
  const records = [paxRecord("path", Buffer.from(entry.path, "latin1")), paxRecord("mtime", Buffer.from(entry.mtime, "latin1"))];
  if (entry.linkpath !== undefined) records.push(paxRecord("linkpath", Buffer.from(entry.linkpath, "latin1")));
  if (size > 0o77777777777) records.push(paxRecord("size", Buffer.from(String(size))));
  const pax = Buffer.concat(records);
  const flag = entry.type === "file" ? "0" : entry.type === "dir" ? "5" : entry.type === "hardlink" ? "1" : "2";
  // The ustar fields hold a plain fallback name; readers take the pax path.
  const fallback = Buffer.from(entry.path, "latin1").subarray(0, 99).toString("latin1");
  return Buffer.concat([
    rawHeader("PaxHeader", "x", pax.length, 0o644, 0),
    pax,
    padTo(pax.length),
    rawHeader(fallback, flag, size > 0o77777777777 ? 0 : size, entry.mode, Number(entry.mtime), (entry.linkpath ?? "").slice(0, 99)),
  ]);
}

/** Zero bytes that end a file's body in the archive. */
export function tarPadding(size: number): Buffer {
  return padTo(size);
}

/** The end-of-archive marker. */
export const TAR_END = Buffer.alloc(BLOCK * 2);
