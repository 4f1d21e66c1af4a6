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

/**
 * Chunks of a readable stream, queued as they arrive so the writer (a tar
 * or find process on the other side of a pipe) keeps running while the
 * queue is parsed; reading pauses above `highWater` bytes queued. Errors
 * and a close without an end are kept and thrown to the reader, never
 * left without a listener.
 */
export class ChunkQueue {
  private chunks: Buffer[] = [];
  private head = 0;
  private queued = 0;
  private ended = false;
  private failure: Error | null = null;
  private paused = false;
  private wake: (() => void) | null = null;

  constructor(
    private readonly stream: NodeJS.ReadableStream & { destroy?(): void },
    private readonly highWater = 4 * 1024 * 1024,
  ) {
    stream.on("data", (chunk: Buffer) => {
      if (chunk.length === 0) return;
      this.chunks.push(chunk);
      this.queued += chunk.length;
      if (this.queued >= this.highWater && !this.paused) {
        this.paused = true;
        stream.pause();
      }
      this.poke();
    });
    stream.on("end", () => {
      this.ended = true;
      this.poke();
    });
    stream.on("error", (error: Error) => {
      this.failure ??= error;
      this.poke();
    });
    stream.on("close", () => {
      if (!this.ended) this.failure ??= Object.assign(new Error("Premature close"), { code: "ERR_STREAM_PREMATURE_CLOSE" });
      this.poke();
    });
  }

  private poke(): void {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  /** A queued chunk, or undefined when none is queued right now. */
  shift(): Buffer | undefined {
    if (this.head >= this.chunks.length) return undefined;
    const chunk = this.chunks[this.head]!;
    this.chunks[this.head++] = undefined as unknown as Buffer;
    if (this.head > 1024 || this.head === this.chunks.length) {
      this.chunks = this.chunks.slice(this.head);
      this.head = 0;
    }
    this.queued -= chunk.length;
    if (this.paused && this.queued < this.highWater / 2) {
      this.paused = false;
      this.stream.resume();
    }
    return chunk;
  }

  /** The next chunk, or null at the end of the stream; throws what the stream failed with. */
  async next(): Promise<Buffer | null> {
    for (;;) {
      const chunk = this.shift();
      if (chunk) return chunk;
      if (this.failure) throw this.failure;
      if (this.ended) return null;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  /** Stops reading and drops what is queued. */
  destroy(): void {
    this.chunks = [];
    this.head = 0;
    this.queued = 0;
    this.ended = true;
    this.stream.destroy?.();
  }
}

/** Marks "more input is needed" in the synchronous parser's answers. */
export const NEED: unique symbol = Symbol("need more input");
export type Need = typeof NEED;

/** Takes exact byte counts out of pushed chunks, synchronously. */
class Bytes {
  private chunks: Buffer[] = [];
  /** Chunks before this index are used up; bytes of chunks[head] before `offset` too. */
  private head = 0;
  private offset = 0;
  buffered = 0;
  ended = false;

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    if (this.head > 64) {
      this.chunks = this.chunks.slice(this.head);
      this.head = 0;
    }
    this.chunks.push(chunk);
    this.buffered += chunk.length;
  }

  /** Up to n (> 0) bytes of the first chunk, as a view (one view made, the chunk is not sliced again). */
  some(n: number): Buffer {
    const first = this.chunks[this.head]!;
    const start = this.offset;
    const left = first.length - start;
    if (left <= n) {
      this.chunks[this.head++] = undefined as unknown as Buffer;
      this.offset = 0;
      this.buffered -= left;
      return start === 0 ? first : first.subarray(start);
    }
    this.offset += n;
    this.buffered -= n;
    return first.subarray(start, start + n);
  }

  /** Exactly n bytes (n <= buffered): a view within one chunk, a copy across chunks. */
  take(n: number): Buffer {
    const first = this.chunks[this.head]!;
    if (first.length - this.offset >= n) return this.some(n);
    const out = Buffer.allocUnsafe(n);
    let at = 0;
    while (at < n) {
      const part = this.some(n - at);
      part.copy(out, at);
      at += part.length;
    }
    return out;
  }

  /** Drops up to n bytes; how many were dropped (no view is made). */
  skip(n: number): number {
    let dropped = 0;
    while (dropped < n && this.buffered > 0) {
      const first = this.chunks[this.head]!;
      const left = first.length - this.offset;
      const step = Math.min(n - dropped, left);
      if (step === left) {
        this.chunks[this.head++] = undefined as unknown as Buffer;
        this.offset = 0;
      } else this.offset += step;
      this.buffered -= step;
      dropped += step;
    }
    return dropped;
  }

  clear(): void {
    this.chunks = [];
    this.head = 0;
    this.offset = 0;
    this.buffered = 0;
  }
}

/** A NUL-ended field read in place (a header has several: no view of it is made). */
function cString(buf: Buffer, start: number, length: number): string {
  if (buf[start] === 0) return "";
  let end = start;
  const limit = start + length;
  while (end < limit && buf[end] !== 0) end++;
  return buf.toString("latin1", start, end);
}

function numeric(buf: Buffer, start: number, length: number): number {
  const first = buf[start]!;
  if (first & 0x80) {
    // base-256 (GNU): big-endian, first byte's top bit is the marker
    let value = first & 0x7f;
    for (let i = 1; i < length; i++) value = value * 256 + buf[start + i]!;
    if (!Number.isSafeInteger(value)) throw new TarFormatError("tar number out of range");
    return value;
  }
  // Octal digits, optionally led by spaces and ended by a NUL or spaces: read in place (every header has several).
  const end = start + length;
  let i = start;
  while (i < end && buf[i] === 0x20) i++;
  let value = 0;
  let digits = 0;
  for (; i < end; i++) {
    const c = buf[i]!;
    if (c < 0x30 || c > 0x37) break;
    value = value * 8 + (c - 0x30);
    digits++;
  }
  // Then only spaces up to a NUL (what follows a NUL is not part of the number) or the field's end.
  while (i < end && buf[i] === 0x20) i++;
  if (i < end && buf[i] !== 0) throw new TarFormatError(`bad tar number ${JSON.stringify(cString(buf, start, length))}`);
  return digits === 0 ? 0 : value;
}

/** The name of a ustar header: POSIX ustar ("ustar\0") puts a prefix before it; GNU ("ustar  ") does not. */
function headerName(header: Buffer): string {
  const name = cString(header, 0, 100);
  const posix = header[257] === 0x75 && header[258] === 0x73 && header[259] === 0x74 && header[260] === 0x61 && header[261] === 0x72 && header[262] !== 0x20;
  const prefix = posix ? cString(header, 345, 155) : "";
  return prefix ? `${prefix}/${name}` : name;
}

function checksumOk(header: Buffer): boolean {
  // The checksum field itself counts as eight spaces.
  return byteTotal(header) - byteTotalOf(header, 148, 156) + 8 * 32 === numeric(header, 148, 8);
}

/** The sum of a block's 512 bytes, four at a time when the block is aligned (two per 16-bit lane). */
function byteTotal(block: Buffer): number {
  if (block.byteOffset % 4 !== 0) return byteTotalOf(block, 0, BLOCK);
  const words = new Uint32Array(block.buffer, block.byteOffset, BLOCK / 4);
  // Each lane gains at most 2 * 255 per word: 128 words stay below 2^16.
  let lanes = 0;
  for (let i = 0; i < words.length; i++) {
    const word = words[i]!;
    lanes += (word & 0x00ff00ff) + ((word >>> 8) & 0x00ff00ff);
  }
  return (lanes & 0xffff) + (lanes >>> 16);
}

function byteTotalOf(block: Buffer, start: number, end: number): number {
  let sum = 0;
  for (let i = start; i < end; i++) sum += block[i]!;
  return sum;
}

/** pax records ("<len> key=value\n") into `out`; values are raw bytes (latin1 strings). */
function parsePax(data: Buffer, out: Map<string, string>): void {
  let at = 0;
  while (at < data.length) {
    const space = data.indexOf(0x20, at);
    if (space === -1) break;
    // The decimal length, read in place (every entry of a pax archive has a record set).
    let length = 0;
    for (let i = at; i < space; i++) {
      const digit = data[i]! - 0x30;
      if (digit < 0 || digit > 9 || length > 1e9) {
        length = NaN;
        break;
      }
      length = length * 10 + digit;
    }
    if (!(length > 0) || at + length > data.length) throw new TarFormatError("bad pax record");
    // "key=value" between the space and the record's newline, read in place.
    const end = at + length - 1;
    let eq = space + 1;
    while (eq < end && data[eq] !== 0x3d) eq++;
    if (eq > space + 1 && eq < end) out.set(data.toString("latin1", space + 1, eq), data.toString("latin1", eq + 1, end));
    at += length;
  }
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

/**
 * A ustar/pax/GNU archive parsed synchronously from pushed chunks: each
 * call answers at once, with NEED when it has to be given more input
 * first (`push`, or `end` at the end of the input). No promise per entry.
 */
export class TarParser {
  private readonly bytes = new Bytes();
  private remaining = 0;
  private padding = 0;
  private done = false;
  /** Records of the pax header before the next entry (emptied once that entry is read). */
  private readonly pax = new Map<string, string>();
  private longName: string | undefined;
  private longLink: string | undefined;
  /** A metadata record whose header was read: its type and size. */
  private meta: { flag: string; size: number } | null = null;

  push(chunk: Buffer): void {
    if (!this.done) this.bytes.push(chunk);
  }

  /** The input ended. */
  end(): void {
    this.bytes.ended = true;
  }

  /** True once the end marker was read (what follows it is padding). */
  get finished(): boolean {
    return this.done;
  }

  /** Bytes of the current entry's body not yet read. */
  get left(): number {
    return this.remaining;
  }

  /** The next entry (after skipping what is left of the current body), null at the end marker, NEED for more input. */
  next(): TarEntry | null | Need {
    const bytes = this.bytes;
    if (this.done) return null;
    if (this.remaining > 0) {
      this.remaining -= bytes.skip(this.remaining);
      if (this.remaining > 0) return this.starved("tar stream ended in the middle of a file");
    }
    if (this.padding > 0) {
      this.padding -= bytes.skip(this.padding);
      if (this.padding > 0) return this.starved("tar stream ended in the middle of a record");
    }
    for (;;) {
      if (this.meta) {
        const { flag, size } = this.meta;
        const pad = (BLOCK - (size % BLOCK)) % BLOCK;
        if (bytes.buffered < size + pad) return this.starved("tar stream ended in a metadata record");
        // Read into strings at once, so a view of the input is enough.
        const data = bytes.take(size);
        bytes.skip(pad);
        this.meta = null;
        if (flag === "x") parsePax(data, this.pax);
        else if (flag === "L" || flag === "K") {
          const text = data.toString("latin1").replace(/\0+$/, "");
          if (flag === "L") this.longName = text;
          else this.longLink = text;
        }
        continue;
      }
      if (bytes.buffered < BLOCK) {
        if (bytes.ended && bytes.buffered === 0) throw new TarFormatError("tar stream ended without its end marker");
        return this.starved("tar stream ended in the middle of a record");
      }
      const header = bytes.take(BLOCK);
      if (header[0] === 0 && header[156] === 0 && header.every((byte) => byte === 0)) {
        this.done = true;
        bytes.clear();
        return null;
      }
      if (!checksumOk(header)) throw new TarFormatError("bad tar header checksum");
      const flag = String.fromCharCode(header[156]!);
      const size = numeric(header, 124, 12);
      if (flag === "x" || flag === "g" || flag === "L" || flag === "K") {
        if (size > MAX_META) throw new TarFormatError("tar metadata record too large");
        this.meta = { flag, size };
        continue;
      }
      const pax = this.pax;
      // The header's own name fields only when no pax record or GNU long name gave them (read in place).
      let path = pax.get("path") ?? this.longName ?? headerName(header);
      const linkpath = pax.get("linkpath") ?? this.longLink ?? cString(header, 157, 100);
      const paxSize = pax.get("size");
      const bodySize = paxSize !== undefined ? Number(paxSize) : size;
      if (!Number.isSafeInteger(bodySize) || bodySize < 0) throw new TarFormatError("bad tar size");
      const type = typeOf(flag);
      if (type === "dir" && path.endsWith("/")) path = path.replace(/\/+$/, "");
      let mtime = pax.get("mtime");
      if (mtime === undefined || !/^-?\d+(\.\d+)?$/.test(mtime)) mtime = String(numeric(header, 136, 12));
      if (pax.size > 0) pax.clear();
      this.longName = undefined;
      this.longLink = undefined;
      // Only files carry a body in the archive (GNU tar writes none for links and dirs).
      this.remaining = type === "file" || type === "other" ? bodySize : 0;
      if (type === "other" && (flag === "3" || flag === "4" || flag === "6")) this.remaining = 0;
      this.padding = (BLOCK - (this.remaining % BLOCK)) % BLOCK;
      return { type, path, linkpath, size: type === "file" ? bodySize : 0, mode: numeric(header, 100, 8), mtime: canonicalMtime(mtime), typeflag: flag };
    }
  }

  /** Up to `max` (> 0) bytes of the current body as a view of the input, null when it is all read, NEED for more input. */
  body(max: number): Buffer | null | Need {
    if (this.remaining <= 0) return null;
    if (this.bytes.buffered === 0) return this.starved("tar stream ended in the middle of a file");
    const part = this.bytes.some(Math.min(max, this.remaining));
    this.remaining -= part.length;
    return part;
  }

  private starved(why: string): Need {
    if (this.bytes.ended) throw new TarFormatError(why);
    return NEED;
  }
}

/** Reads the rest of a source after an archive's end marker (tar pads it to whole records), up to a limit. */
async function drain(source: ChunkQueue, limit = 1 << 20): Promise<void> {
  let seen = 0;
  for (let chunk = await source.next(); chunk; chunk = await source.next()) {
    seen += chunk.length;
    if (seen > limit) {
      source.destroy();
      return;
    }
  }
}

/**
 * Reads a ustar/pax/GNU archive from a stream (chunks are queued as they
 * arrive; parsing is synchronous and only waits when it needs more input).
 */
export function tarReader(stream: NodeJS.ReadableStream): TarReader {
  const source = new ChunkQueue(stream);
  const parser = new TarParser();
  const more = async () => {
    const chunk = await source.next();
    if (chunk) parser.push(chunk);
    else parser.end();
  };
  return {
    async next() {
      for (;;) {
        const entry = parser.next();
        if (entry !== NEED) {
          // The writer only finishes once its padding is read.
          if (entry === null) await drain(source);
          return entry;
        }
        await more();
      }
    },
    async read(max = 1 << 20) {
      for (;;) {
        const part = parser.body(max);
        if (part !== NEED) return part;
        await more();
      }
    },
  };
}

/** A tar parser fed from a stream: `more()` waits for the next chunk (or the end) and pushes it. */
export function tarSource(stream: NodeJS.ReadableStream): { parser: TarParser; more(): Promise<void>; rest(): Promise<void>; source: ChunkQueue } {
  const source = new ChunkQueue(stream);
  const parser = new TarParser();
  return {
    parser,
    source,
    async more() {
      const chunk = source.next();
      const got = await chunk;
      if (got) parser.push(got);
      else parser.end();
    },
    rest: () => drain(source),
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

/** A numeric field of exactly `length` bytes (digits that do not fit are cut, as a bounded write would). */
function octal(value: number, length: number): string {
  return (value.toString(8).padStart(length - 1, "0") + "\0").slice(0, length);
}

/** One pax record; the value is raw bytes as latin1, so a string's length is its byte count. */
function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let length = body.length + 1;
  while (String(length).length + body.length !== length) length = String(length).length + body.length;
  return `${length}${body}`;
}

/** The sum of the bytes a latin1 write of the text puts down. */
function byteSum(text: string): number {
  let sum = 0;
  for (let i = 0; i < text.length; i++) sum += text.charCodeAt(i) & 0xff;
  return sum;
}

/** Writes a numeric field at `at` and returns the sum of its bytes (a header has a dozen: no strings). */
function putOctal(out: Buffer, at: number, length: number, value: number): number {
  if (!Number.isSafeInteger(value) || value < 0 || value >= 8 ** (length - 1)) {
    const text = octal(value, length);
    out.write(text, at, "latin1");
    return byteSum(text);
  }
  let sum = 0;
  for (let i = at + length - 2; i >= at; i--) {
    const digit = 48 + (value % 8);
    out[i] = digit;
    sum += digit;
    value = Math.floor(value / 8);
  }
  out[at + length - 1] = 0;
  return sum;
}

/** A ustar block with what every header here shares (owner ids 0, the magic), and its byte sum with blank checksum. */
function baseBlock(fill: (block: Buffer) => void): { block: Buffer; sum: number } {
  const block = Buffer.alloc(BLOCK);
  block.write("0000000\0" + "0000000\0", 108, "latin1");
  block.write("ustar\u000000", 257, "latin1");
  fill(block);
  let sum = 8 * 0x20;
  for (let i = 0; i < BLOCK; i++) if (i < 148 || i >= 156) sum += block[i]!;
  return { block, sum };
}

const USTAR_BASE = baseBlock(() => {});
const PAX_BASE = baseBlock((block) => {
  block.write("PaxHeader", 0, "latin1");
  block.write("0000644\0", 100, "latin1");
  block.write("00000000000\0", 136, "latin1");
  block.write("x", 156, "latin1");
});

/** The checksum field: six octal digits, NUL, blank. */
function putChecksum(out: Buffer, at: number, sum: number): void {
  putOctal(out, at + 148, 7, sum);
  out[at + 155] = 0x20;
}

const MAX_USTAR_SIZE = 0o77777777777;

export interface TarHeaderEntry {
  type: "file" | "dir" | "symlink" | "hardlink";
  /** Raw bytes as latin1. */
  path: string;
  size?: number;
  mode: number;
  mtime: string;
  linkpath?: string;
}

/** Header blocks (a pax record set, then ustar) for one entry, in one buffer; names are raw latin1 strings. */
export function tarHeader(entry: TarHeaderEntry): Buffer {
  let out: Buffer | undefined;
  // One small buffer from the shared pool.
  tarHeaderInto(entry, (length) => ({ buffer: (out = Buffer.allocUnsafe(length)), at: 0 }));
  return out!;
}

/**
 * The same header blocks written where `room` says, which gives a buffer and
 * an offset with `length` bytes free: an archive of many small files then
 * makes no buffer per entry.
 */
export function tarHeaderInto(entry: TarHeaderEntry, room: (length: number) => { buffer: Buffer; at: number }): void {
  const size = entry.type === "file" ? entry.size ?? 0 : 0;
  let pax = paxRecord("path", entry.path) + paxRecord("mtime", entry.mtime);
  if (entry.linkpath !== undefined) pax += paxRecord("linkpath", entry.linkpath);
  if (size > MAX_USTAR_SIZE) pax += paxRecord("size", String(size));
  const paxBlocks = pax.length + ((BLOCK - (pax.length % BLOCK)) % BLOCK);
  const { buffer: out, at: start } = room(BLOCK + paxBlocks + BLOCK);
  PAX_BASE.block.copy(out, start);
  putChecksum(out, start, PAX_BASE.sum + putOctal(out, start + 124, 12, pax.length));
  out.write(pax, start + BLOCK, "latin1");
  const at = start + BLOCK + paxBlocks;
  out.fill(0, start + BLOCK + pax.length, at);
  // The ustar fields hold a plain fallback name; readers take the pax path.
  USTAR_BASE.block.copy(out, at);
  const name = entry.path.slice(0, 99);
  const link = (entry.linkpath ?? "").slice(0, 99);
  out.write(name, at, "latin1");
  out.write(link, at + 157, "latin1");
  const flag = entry.type === "file" ? 0x30 : entry.type === "dir" ? 0x35 : entry.type === "hardlink" ? 0x31 : 0x32;
  out[at + 156] = flag;
  let sum = USTAR_BASE.sum + byteSum(name) + byteSum(link) + flag;
  sum += putOctal(out, at + 100, 8, entry.mode & 0o7777);
  sum += putOctal(out, at + 124, 12, size > MAX_USTAR_SIZE ? 0 : size);
  sum += putOctal(out, at + 136, 12, Math.max(0, Math.floor(Number(entry.mtime))));
  putChecksum(out, at, sum);
}

const ZEROS = Buffer.alloc(BLOCK);

/** Zero bytes that end a file's body in the archive (a view of one shared block: never written to). */
export function tarPadding(size: number): Buffer {
  return ZEROS.subarray(0, (BLOCK - (size % BLOCK)) % BLOCK);
}

/** The end-of-archive marker. */
export const TAR_END = Buffer.alloc(BLOCK * 2);
