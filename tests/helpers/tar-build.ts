// Builds tar archives byte by byte, including the kinds a hostile client sends
// (absolute names, "..", links out, device nodes) that tools refuse to make.
import { gzipSync } from "node:zlib";

export interface RawEntry {
  name: string;
  type?: "file" | "dir" | "symlink" | "hardlink" | "char" | "fifo";
  content?: string | Buffer;
  linkname?: string;
  mode?: number;
}

const FLAGS = { file: "0", hardlink: "1", symlink: "2", char: "3", dir: "5", fifo: "6" } as const;

function header(entry: RawEntry, size: number): Buffer {
  const h = Buffer.alloc(512);
  const octal = (n: number, len: number) => n.toString(8).padStart(len - 1, "0") + "\0";
  h.write(entry.name, 0, 100, "utf8");
  h.write(octal(entry.mode ?? (entry.type === "dir" ? 0o755 : 0o644), 8), 100, 8, "latin1");
  h.write(octal(0, 8), 108, 8, "latin1");
  h.write(octal(0, 8), 116, 8, "latin1");
  h.write(octal(size, 12), 124, 12, "latin1");
  h.write(octal(1_700_000_000, 12), 136, 12, "latin1");
  h.write("        ", 148, 8, "latin1");
  h.write(FLAGS[entry.type ?? "file"], 156, 1, "latin1");
  h.write(entry.linkname ?? "", 157, 100, "utf8");
  h.write("ustar\u000000", 257, 8, "latin1");
  let sum = 0;
  for (const byte of h) sum += byte;
  h.write(octal(sum, 7) + " ", 148, 8, "latin1");
  return h;
}

export function tarOf(entries: RawEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const entry of entries) {
    const content = entry.type === undefined || entry.type === "file" ? Buffer.from(entry.content ?? "") : Buffer.alloc(0);
    parts.push(header(entry, content.length), content, Buffer.alloc((512 - (content.length % 512)) % 512));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

export function tarGzOf(entries: RawEntry[]): Buffer {
  return gzipSync(tarOf(entries));
}
