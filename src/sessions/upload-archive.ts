import { posix } from "node:path";
import { createGunzip } from "node:zlib";
import { Readable, pipeline } from "node:stream";
import { tarReader, TarFormatError } from "../sandbox/tar-stream";
import { displayName, isUtf8Name, listTree, type WorkspaceIo } from "../sandbox/workspace-io";
import { badRequest, conflict, tooLarge } from "../errors";
import type { UploadEntry } from "./workspace-files";

/** Most entries one upload may hold. */
const MAX_ENTRIES = 100_000;

/**
 * Reads an uploaded tar (gzipped or not) into checked entries, holding at
 * most `maxBytes` of unpacked content: a small archive that unpacks past it
 * (a decompression bomb) is stopped as soon as it does, with 413. Every
 * entry must stay inside the workspace: no absolute path, no `..`, no
 * device, FIFO or socket, symlinks only to a relative target that stays
 * inside without passing through another link, hard links only to a file
 * earlier in the same archive (written as a copy). Anything else is a 400
 * naming the entry, and nothing has been written yet.
 */
export async function readUploadArchive(body: AsyncIterable<Buffer>, maxBytes: number, target = ""): Promise<UploadEntry[]> {
  const tooBig = () => tooLarge(`The archive unpacks to more than ${maxBytes} bytes (ASH_MAX_UPLOAD_BYTES).`);
  const source = decompressed(body, maxBytes, tooBig);
  const reader = tarReader(Readable.from(source));
  const entries: UploadEntry[] = [];
  const files = new Map<string, Buffer>();
  let unpacked = 0;
  try {
    for (let entry = await reader.next(); entry; entry = await reader.next()) {
      if (entries.length >= MAX_ENTRIES) throw badRequest(`The archive has more than ${MAX_ENTRIES} entries.`);
      if (!isUtf8Name(entry.path)) throw badRequest("The archive has an entry whose name is not UTF-8.");
      const name = displayName(entry.path);
      const path = insidePath(name, target);
      if (path === null) continue; // "./": the workspace itself
      if (entry.type === "file") {
        unpacked += entry.size;
        if (unpacked > maxBytes) throw tooBig();
        const parts: Buffer[] = [];
        for (let part = await reader.read(); part; part = await reader.read()) parts.push(part);
        const content = Buffer.concat(parts);
        files.set(path, content);
        entries.push({ type: "file", path, mode: fileMode(entry.mode), content });
      } else if (entry.type === "dir") {
        entries.push({ type: "dir", path, mode: (entry.mode & 0o777) | 0o700 });
      } else if (entry.type === "symlink") {
        const link = displayName(entry.linkpath);
        if (link === "" || link.startsWith("/")) throw badRequest(`The archive's symlink "${shown(name)}" points to an absolute path; links must stay inside the workspace.`);
        entries.push({ type: "symlink", path, target: link });
      } else if (entry.type === "hardlink") {
        const linked = insidePath(displayName(entry.linkpath), target);
        const content = linked === null ? undefined : files.get(linked);
        if (content === undefined) throw badRequest(`The archive's hard link "${shown(name)}" does not point to a file earlier in the archive; links must stay inside it.`);
        unpacked += content.length;
        if (unpacked > maxBytes) throw tooBig();
        entries.push({ type: "file", path, mode: fileMode(entry.mode), content });
      } else {
        throw badRequest(`The archive's entry "${shown(name)}" is a device, FIFO or other special file; only files, folders and links inside the workspace can be uploaded.`);
      }
    }
  } catch (error) {
    if (error instanceof TarFormatError) throw badRequest(`The upload is not a valid tar or tar.gz archive: ${error.message}.`);
    if (error instanceof Error && "code" in error && typeof (error as { code: unknown }).code === "string" && String((error as { code: string }).code).startsWith("Z_")) {
      throw badRequest("The upload is not a valid gzip stream.");
    }
    throw error;
  }
  checkLinks(entries);
  checkShapes(entries);
  return entries;
}

/** Unpacked bytes as they arrive, gunzipped when the stream starts like gzip; past `maxBytes` is an error. */
async function* decompressed(body: AsyncIterable<Buffer>, maxBytes: number, tooBig: () => Error): AsyncGenerator<Buffer> {
  const iterator = body[Symbol.asyncIterator]();
  const first = await iterator.next();
  if (first.done) throw badRequest("The upload is empty; send a tar.gz archive as the request body.");
  const head = first.value;
  async function* all() {
    yield head;
    for (let next = await iterator.next(); !next.done; next = await iterator.next()) yield next.value;
  }
  let stream: AsyncIterable<Buffer> = all();
  if (head[0] === 0x1f && head[1] === 0x8b) {
    // pipeline, not pipe: an error of the body (too large, the client gone) must end the gunzip
    // stream with it, or it is thrown with no one listening and the upload waits forever.
    stream = pipeline(Readable.from(all()), createGunzip(), () => {});
  }
  let seen = 0;
  // Headers and padding count too, so a stream of empty entries is bounded as well.
  const limit = maxBytes + 64 * 1024 * 1024;
  for await (const chunk of stream) {
    seen += chunk.length;
    if (seen > limit) {
      if (stream instanceof Readable) stream.destroy();
      throw tooBig();
    }
    yield chunk;
  }
}

/** A name from the archive, relative to the workspace (under `target`), or null for the workspace itself. */
function insidePath(name: string, target: string): string | null {
  if (name.startsWith("/") || /^[a-zA-Z]:[\\/]/.test(name)) throw badRequest(`The archive's entry "${shown(name)}" has an absolute path; entries must be relative to the workspace.`);
  const parts = name.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.includes("..")) throw badRequest(`The archive's entry "${shown(name)}" contains ".."; entries must stay inside the workspace.`);
  if (/[\u0000-\u001f]/.test(name)) throw badRequest(`The archive's entry "${shown(name)}" contains control characters.`);
  if (parts.length === 0) return target || null;
  return target ? `${target}/${parts.join("/")}` : parts.join("/");
}

/**
 * Symlinks resolve, step by step from the link's folder, to a place inside
 * the workspace, and no step (of a link's target or of any entry's path)
 * goes through another link of the archive, whose own target could move
 * the rest of the path elsewhere.
 */
function checkLinks(entries: UploadEntry[]): void {
  const links = new Set(entries.filter((e) => e.type === "symlink").map((e) => e.path));
  if (links.size === 0) return;
  const throughLink = (path: string) => {
    const parts = path.split("/");
    for (let i = 1; i < parts.length; i++) if (links.has(parts.slice(0, i).join("/"))) return parts.slice(0, i).join("/");
    return undefined;
  };
  for (const entry of entries) {
    const via = throughLink(entry.path);
    if (via !== undefined) throw badRequest(`The archive's entry "${shown(entry.path)}" is inside "${shown(via)}", which the archive makes a symlink; links must not carry other entries.`);
    if (entry.type !== "symlink") continue;
    const place = posix.dirname(entry.path) === "." ? [] : posix.dirname(entry.path).split("/");
    for (const part of entry.target.split("/")) {
      if (part === "" || part === ".") continue;
      if (part === "..") {
        if (place.length === 0) throw badRequest(`The archive's symlink "${shown(entry.path)}" points outside the workspace ("${shown(entry.target)}").`);
        place.pop();
      } else place.push(part);
      if (links.has(place.join("/")) && place.join("/") !== entry.path) {
        throw badRequest(`The archive's symlink "${shown(entry.path)}" points through another symlink of the archive; links must point at files or folders directly.`);
      }
    }
  }
}

/** A file may not also be needed as a folder, in either order. */
function checkShapes(entries: UploadEntry[]): void {
  const kinds = new Map<string, UploadEntry["type"]>();
  for (const entry of entries) {
    const earlier = kinds.get(entry.path);
    if (earlier !== undefined && (earlier === "dir") !== (entry.type === "dir")) {
      throw badRequest(`The archive has "${shown(entry.path)}" both as a folder and as a file or link.`);
    }
    kinds.set(entry.path, entry.type);
  }
  for (const path of kinds.keys()) {
    const parts = path.split("/");
    for (let i = 1; i < parts.length; i++) {
      const parent = parts.slice(0, i).join("/");
      const kind = kinds.get(parent);
      if (kind !== undefined && kind !== "dir") throw badRequest(`The archive has "${shown(parent)}" as a file or link, but "${shown(path)}" needs it to be a folder.`);
    }
  }
}

/**
 * Checks the entries against the live workspace, as its own user lists it,
 * before anything is written: a file where an entry needs a folder, or a
 * folder where an entry is a file, is a 409 (tar would stop half-way).
 */
export async function checkAgainstWorkspace(io: WorkspaceIo, entries: UploadEntry[]): Promise<void> {
  const folders = new Set<string>();
  const leaves = new Map<string, UploadEntry["type"]>();
  for (const entry of entries) {
    const parts = entry.path.split("/");
    for (let i = 1; i < parts.length; i++) folders.add(parts.slice(0, i).join("/"));
    if (entry.type === "dir") folders.add(entry.path);
    else leaves.set(entry.path, entry.type);
  }
  let clash: string | undefined;
  await listTree(io, (listed) => {
    if (clash) return;
    const path = displayName(listed.path);
    if (folders.has(path) && listed.type !== "dir" && listed.type !== "symlink") clash = `"${shown(path)}" is a file in the workspace, but the upload needs it to be a folder`;
    else if (leaves.has(path) && listed.type === "dir") clash = `"${shown(path)}" is a folder in the workspace, but the upload has a file or link there`;
  });
  if (clash) throw conflict(`${clash}; nothing was written.`);
}

function fileMode(mode: number): number {
  return mode & 0o111 ? 0o755 : 0o644;
}

/** A name for an error sentence: cut short, control characters escaped. */
function shown(name: string): string {
  const short = name.length > 200 ? `${name.slice(0, 200)}…` : name;
  return short.replace(/[\u0000-\u001f"\\]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}
