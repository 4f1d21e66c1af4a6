import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { posix } from "node:path";
import type { Readable, Writable } from "node:stream";
import { canonicalMtime, ChunkQueue, tarReader, tarSource, type TarEntry, type TarParser, type TarReader } from "./tar-stream";

/**
 * Workspace I/O runs in a process that only has the sandbox's own rights
 * (launched like the agent: its cgroups, its mounts, its uid). The server
 * only sees the bytes such a process writes to stdout or reads from stdin,
 * and never opens a path inside the workspace itself: a symlink swapped in
 * at any moment can only redirect that process to what the sandbox user
 * could read or write anyway.
 */
export interface IoProcess {
  stdout: Readable;
  stdin: Writable | null;
  /** Settles when the process has exited; stderr is kept up to a few KiB. */
  done: Promise<{ code: number | null; stderr: string }>;
  kill(): void;
}

export interface WorkspaceIo {
  /** The workspace's absolute path, as the process sees it (its working directory). */
  readonly root: string;
  run(command: string, args: string[], options?: { stdin?: boolean }): IoProcess;
}

const STDERR_KEEP = 16 * 1024;

/** Wraps a spawned child into an IoProcess. */
export function ioProcessOf(
  child: { stdout: Readable | null; stderr: Readable | null; stdin: Writable | null },
  exited: Promise<{ code: number | null; error?: Error }>,
  kill: () => void,
): IoProcess {
  let stderr = "";
  child.stderr?.on("data", (chunk: Buffer) => {
    if (stderr.length < STDERR_KEEP) stderr += chunk.toString("utf8").slice(0, STDERR_KEEP - stderr.length);
  });
  // Every stream of the child has an error listener from the start: a
  // reader that stopped early, or has not started yet, never turns a pipe
  // error (or a close without an end) into an uncaught exception. Readers
  // get the error through their own listeners (ChunkQueue).
  child.stdout?.on("error", () => {});
  child.stderr?.on("error", () => {});
  child.stdin?.on("error", () => {});
  const stderrDone = child.stderr ? new Promise<void>((done) => child.stderr!.once("close", done)) : Promise.resolve();
  return {
    stdout: child.stdout!,
    stdin: child.stdin,
    done: exited.then(async ({ code, error }) => {
      await Promise.race([stderrDone, new Promise((r) => setTimeout(r, 200))]);
      // A tool that never started has no stderr: its spawn error says why (a missing folder, a missing tool).
      return { code, stderr: stderr || (error ? `could not start ${error.message.replace(/^spawn /, "")}` : "") };
    }),
    kill,
  };
}

/**
 * Runs the tools directly as the server's user on a folder. Only for folders
 * no sandbox can write (tests, benchmarks, tools): a sandbox's workspace
 * goes through the sandbox's own io.
 */
export function trustedFolderIo(root: string): WorkspaceIo {
  return {
    root,
    run(command, args, options = {}) {
      const child = spawn(command, args, { cwd: root, env: IO_ENV, stdio: [options.stdin ? "pipe" : "ignore", "pipe", "pipe"] });
      const exited = new Promise<{ code: number | null; error?: Error }>((resolve) => {
        child.once("close", (code) => resolve({ code }));
        child.once("error", (error) => {
          // It never started: end its streams so readers finish.
          child.stdout?.destroy();
          child.stderr?.destroy();
          // ENOENT names the tool even when what is missing is the folder it was to run in.
          const missingFolder = (error as NodeJS.ErrnoException).code === "ENOENT" && !existsSync(root);
          resolve({ code: null, error: missingFolder ? new Error(`${command}: the folder ${root} does not exist`) : error });
        });
      });
      return ioProcessOf(child, exited, () => child.kill("SIGKILL"));
    },
  };
}

/** The whole environment of an io process: nothing of the server's. */
export const IO_ENV: Record<string, string> = { PATH: "/usr/bin:/bin", LC_ALL: "C" };

export interface ListedEntry {
  type: "file" | "dir" | "symlink" | "other";
  /** Relative path, raw bytes as latin1. */
  path: string;
  size: number;
  /** Permission bits. */
  mode: number;
  mtime: string;
  /** Symlink target, raw bytes as latin1. */
  target?: string;
  /** find's type letter, for notes on skipped entries. */
  kind: string;
  /** Hard link count. */
  links: number;
  /** Inode number: whether a folder at a path is still the same folder. */
  ino: number;
}

/** Bytes of a latin1-held name as the text a person reads (lossy only when it is not UTF-8). */
export function displayName(raw: string): string {
  return Buffer.from(raw, "latin1").toString("utf8");
}

/** The raw form (latin1 held) of a UTF-8 name a caller passes. */
export function rawName(text: string): string {
  return Buffer.from(text, "utf8").toString("latin1");
}

/** True when the raw bytes are valid UTF-8 (then `displayName` round-trips). */
export function isUtf8Name(raw: string): boolean {
  const bytes = Buffer.from(raw, "latin1");
  return Buffer.from(bytes.toString("utf8"), "utf8").equals(bytes);
}

/** Settles with the process's exit; rejects with its stderr when `ok` says the exit is a failure. */
async function finished(proc: IoProcess, what: string, ok: (code: number | null) => boolean): Promise<{ code: number | null; stderr: string }> {
  const result = await proc.done;
  if (!ok(result.code)) throw new Error(`${what} failed (exit ${result.code}): ${result.stderr.trim().split("\n").slice(-3).join("; ")}`);
  return result;
}

const FIND_FORMAT = "%y\\0%s\\0%T@\\0%m\\0%n\\0%i\\0%P\\0%l\\0";
/** The same with each path as find was given its start point ("./" + the path): for listings from named folders. */
const FIND_FORMAT_FROM = FIND_FORMAT.replace("%P", "%p");
const FIND_FIELDS = 8;
/** No field find prints is longer than a path (PATH_MAX) or a link target; anything longer is not find's output. */
const MAX_FIELD = 64 * 1024;

/**
 * Everything under the workspace, as the sandbox user sees it, in find's
 * order (a folder, then what is in it). `onEntry` gets entries as they
 * arrive (nothing is held here); when it returns a promise, reading waits
 * for it. Entries the user cannot list end up in `errors`.
 *
 * With `changedSince` (ms since the epoch), only entries whose inode changed
 * after that time (ctime: set by the kernel on every change of bytes, name,
 * mode or links, and not settable by the sandbox's user) are listed, the
 * workspace folder itself too (as path ""). With `from`, what is in those
 * folders (raw relative paths, "" for the workspace) is listed instead, one
 * level deep with `depth: 1`. With `foldersUnchangedSince`, only the folders
 * whose inode did not change after that time (so they were at their path,
 * with the same entries, all along since then).
 */
export async function listTree(
  io: WorkspaceIo,
  onEntry: (entry: ListedEntry) => void | Promise<void>,
  options: { changedSince?: number; from?: string[]; depth?: 1; foldersUnchangedSince?: number } = {},
): Promise<{ errors: string[] }> {
  const { changedSince: since, from, foldersUnchangedSince: unchanged } = options;
  const depth = options.depth === 1 ? ["-maxdepth", "1"] : [];
  const args = from
    ? ["-files0-from", "-", "-mindepth", "1", ...depth, "-printf", FIND_FORMAT_FROM]
    : unchanged !== undefined
      ? [".", "-mindepth", "1", "-type", "d", "!", "-newerct", findTime(unchanged), "-printf", FIND_FORMAT]
      : since === undefined
        ? [".", "-mindepth", "1", ...depth, "-printf", FIND_FORMAT]
        : [".", "-newerct", findTime(since), "-printf", FIND_FORMAT];
  const root = since !== undefined && !from;
  const proc = io.run("find", args, { stdin: Boolean(from) });
  if (from) {
    // Start points are written as "./<raw name>" ("" is the workspace itself), so a name starting with "-" is not an option.
    proc.stdin!.on("error", () => {});
    proc.stdin!.end(Buffer.from(from.map((path) => (path === "" ? ".\0" : `./${path}\0`)).join(""), "latin1"));
  }
  const source = new ChunkQueue(proc.stdout);
  let pending: Buffer | null = null;
  let failure: unknown;
  let callerFailed = false;
  try {
    for (let chunk = await source.next(); chunk; chunk = await source.next()) {
      const data: Buffer = pending ? Buffer.concat([pending, chunk]) : chunk;
      pending = null;
      // Whole records (seven NUL-terminated fields) are parsed at once, without waiting in between,
      // unless the caller asks to wait.
      let start = 0;
      for (;;) {
        const entry = parseRecord(data, start, root, Boolean(from));
        if (entry === null) break;
        start = entry.next;
        if (entry.listed === null) continue;
        let waiting: void | Promise<void>;
        try {
          waiting = onEntry(entry.listed);
          if (waiting) await waiting;
        } catch (error) {
          callerFailed = true;
          throw error;
        }
      }
      if (start < data.length) {
        pending = data.subarray(start);
        if (pending.length > MAX_FIELD) throw new Error("Listing the workspace failed: a field longer than any path");
      }
    }
  } catch (error) {
    failure = error;
    proc.kill();
    source.destroy();
  }
  if (callerFailed) {
    // The caller's own error wins over find's exit after the kill.
    await proc.done;
    throw failure;
  }
  // find exits 1 when it could not read some folder: the rest is still right.
  const { stderr } = await finished(proc, "Listing the workspace", (code) => code === 0 || code === 1);
  if (failure) throw failure;
  if (pending && pending.length > 0) throw new Error("Listing the workspace failed: its output ended in the middle of an entry");
  return { errors: stderr.split("\n").filter(Boolean) };
}

/** A time (ms since the epoch) as find's -newerct takes it. */
function findTime(ms: number): string {
  return `@${(ms / 1000).toFixed(3)}`;
}

/** A decimal or octal number from ASCII digits; NaN for anything else. */
function digits(data: Buffer, from: number, to: number, radix: 8 | 10): number {
  if (from === to) return Number.NaN;
  let value = 0;
  for (let at = from; at < to; at++) {
    const digit = data[at]! - 48;
    if (digit < 0 || digit >= radix) return Number.NaN;
    value = value * radix + digit;
  }
  return value;
}

/**
 * One record of find's output starting at `start`: null when it is not all
 * there yet; `listed` null for a record that is dropped (an unusable name;
 * the workspace folder itself, path "", unless `root`).
 */
function parseRecord(data: Buffer, start: number, root = false, prefixed = false): { next: number; listed: ListedEntry | null } | null {
  const ends: number[] = [];
  let at = start;
  for (let field = 0; field < FIND_FIELDS; field++) {
    const nul = data.indexOf(0, at);
    if (nul === -1) return null;
    ends.push(nul);
    at = nul + 1;
  }
  const [yEnd, sizeEnd, mtimeEnd, modeEnd, linksEnd, inoEnd, pathEnd, linkEnd] = ends as [number, number, number, number, number, number, number, number];
  // "./<path>" from a named start point: the same relative path as %P gives from ".".
  const skip = prefixed && data[inoEnd + 1] === 46 && data[inoEnd + 2] === 47 ? 2 : 0;
  const path = data.toString("latin1", inoEnd + 1 + skip, pathEnd);
  if ((path === "" && !root) || path.charCodeAt(0) === 47 || (path.includes("..") && path.split("/").includes(".."))) return { next: at, listed: null };
  const y = yEnd - start === 1 ? String.fromCharCode(data[start]!) : data.toString("latin1", start, yEnd);
  const type = y === "f" ? "file" : y === "d" ? "dir" : y === "l" ? "symlink" : "other";
  return {
    next: at,
    listed: {
      type,
      path,
      size: digits(data, yEnd + 1, sizeEnd, 10) || 0,
      mode: digits(data, mtimeEnd + 1, modeEnd, 8) || 0,
      mtime: canonicalMtime(data.toString("latin1", sizeEnd + 1, mtimeEnd)),
      target: type === "symlink" ? data.toString("latin1", pathEnd + 1, linkEnd) : undefined,
      kind: y,
      links: digits(data, modeEnd + 1, linksEnd, 10) || 1,
      ino: digits(data, linksEnd + 1, inoEnd, 10) || 0,
    },
  };
}

const TAR_CREATE = ["--format=posix", "--numeric-owner", "--hard-dereference", "--pax-option=delete=atime,delete=ctime", "-f", "-"];

/**
 * A tar stream of the named entries (raw latin1 names, relative), or of
 * everything when `paths` is undefined. Entries that vanish or cannot be
 * read are left out by tar (it says so on stderr and exits 1 or 2); the
 * stream is still well-formed, which the reader checks.
 */
export function tarOut(io: WorkspaceIo, paths?: string[], options: { hardLinks?: boolean; sorted?: boolean } = {}): { proc: IoProcess; reader: TarReader } {
  const proc = startTar(io, paths, options);
  return { proc, reader: tarReader(proc.stdout) };
}

/** tarOut with a synchronous parser: `more()` is awaited only when the parser answers NEED. */
export function tarOutParsed(
  io: WorkspaceIo,
  paths?: string[],
  options: { hardLinks?: boolean; sorted?: boolean } = {},
): { proc: IoProcess; parser: TarParser; more(): Promise<void>; rest(): Promise<void>; stop(): void } {
  const proc = startTar(io, paths, options);
  const { parser, more, rest, source } = tarSource(proc.stdout);
  return { proc, parser, more, rest, stop: () => source.destroy() };
}

function startTar(io: WorkspaceIo, paths: string[] | undefined, options: { hardLinks?: boolean; sorted?: boolean }): IoProcess {
  // hardLinks: a second name of a file already in the stream comes as a hard link entry, not as a copy.
  const create = options.hardLinks ? TAR_CREATE.filter((arg) => arg !== "--hard-dereference") : TAR_CREATE;
  // sorted: each folder's entries in byte order of their names, so the stream is in a stable order.
  const order = options.sorted ? ["--sort=name"] : [];
  const args = paths
    ? ["-c", ...create, "--no-recursion", "--null", "--verbatim-files-from", "-T", "-"]
    : ["-c", ...create, ...order, "."];
  const proc = io.run("tar", args, { stdin: Boolean(paths) });
  if (paths) {
    const stdin = proc.stdin!;
    void (async () => {
      let batch: string[] = [];
      let batchBytes = 0;
      const flush = async () => {
        const data = Buffer.from(batch.join(""), "latin1");
        batch = [];
        batchBytes = 0;
        // Waits for room, or gives up when tar is gone (its reader sees why).
        if (!stdin.write(data)) await new Promise<void>((resolve) => {
          const done = () => {
            stdin.off("drain", done);
            stdin.off("close", done);
            resolve();
          };
          stdin.on("drain", done);
          stdin.on("close", done);
        });
      };
      for (const path of paths) {
        if (stdin.destroyed) return;
        batch.push(`./${path}\0`);
        batchBytes += path.length + 3;
        if (batchBytes >= 64 * 1024) await flush();
      }
      if (batch.length > 0) await flush();
      stdin.end();
    })().catch(() => {});
  }
  return proc;
}

/** Anything entryPath must look at part by part: an empty, "." or ".." part, a leading or doubled slash, a NUL. */
const UNUSUAL_PATH = /(?:^|\/)\.{0,2}(?:\/|$)|\0/;

/** A relative, normalized entry name from an archive, or null when it is unusable (absolute, "..", empty). */
export function entryPath(name: string): string | null {
  // tar names every entry "./<path>": the common case is checked with one expression, not split.
  const rest = name.startsWith("./") ? name.slice(2) : name;
  if (!UNUSUAL_PATH.test(rest)) return rest;
  // A NUL cannot be in a file name; a pax record can still carry one.
  if (name.startsWith("/") || name.includes("\0")) return null;
  const parts = name.split("/").filter((part) => part !== "" && part !== ".");
  if (parts.length === 0 || parts.includes("..")) return null;
  return parts.join("/");
}

/** Waits for a tarOut process; a stderr note per entry tar could not read. */
export async function tarOutDone(proc: IoProcess): Promise<string[]> {
  const { stderr } = await finished(proc, "Reading the workspace", (code) => code === 0 || code === 1 || code === 2);
  return stderr.split("\n").filter(Boolean);
}

/**
 * Extracts a tar stream into the (empty) workspace as the sandbox user.
 * Entries tar could not make (a path past PATH_MAX, say) are left out and
 * come back as notes: tar read the whole stream, so the rest is in place.
 */
export async function tarIn(io: WorkspaceIo, produce: (stdin: Writable) => Promise<void>): Promise<string[]> {
  const proc = io.run(
    "tar",
    ["-x", "-f", "-", "--numeric-owner", "--no-same-owner", "--same-permissions", "--delay-directory-restore", "--warning=no-timestamp"],
    { stdin: true },
  );
  const stdin = proc.stdin!;
  proc.stdout.resume();
  let failure: unknown;
  try {
    await produce(stdin);
  } catch (error) {
    failure = error;
    proc.kill();
  }
  stdin.end();
  const result = await proc.done;
  if (failure) throw failure;
  // 1 and 2 after the whole stream was taken: some entries failed, each named on stderr.
  if (result.code !== 0 && result.code !== 1 && result.code !== 2) {
    throw new Error(`Restoring the workspace failed (exit ${result.code}): ${result.stderr.trim().split("\n").slice(-3).join("; ")}`);
  }
  return result.code === 0 ? [] : result.stderr.split("\n").filter(Boolean);
}

/**
 * Writes to a stream, waiting when it is full; fails when the reader went
 * away. `onWritten` runs once the stream no longer holds `data` (written or
 * failed), so its buffer may be filled again.
 */
export async function writeAll(stream: Writable, data: Buffer, onWritten?: () => void): Promise<void> {
  if (stream.destroyed || stream.writableEnded) throw new Error("The restoring process ended early");
  if (stream.write(data, onWritten && (() => onWritten()))) return;
  await new Promise<void>((resolve, reject) => {
    const cleanup = () => {
      stream.off("drain", onDrain);
      stream.off("close", onClose);
    };
    const onDrain = () => (cleanup(), resolve());
    const onClose = () => (cleanup(), reject(new Error("The restoring process ended early")));
    stream.on("drain", onDrain);
    stream.on("close", onClose);
  });
}

/**
 * A symlink's target rewritten relative to the link's folder when it
 * resolves inside the workspace, else null (it would dangle elsewhere after
 * a restore into another sandbox folder). Raw latin1 strings throughout.
 */
export function relativeLinkTarget(root: string, linkPath: string, target: string): string | null {
  const rawRoot = rawName(root);
  const base = posix.dirname(`/${linkPath}`);
  let inside: string;
  if (target.startsWith("/")) {
    const resolved = posix.resolve(target);
    if (resolved === rawRoot) inside = "/";
    else if (resolved.startsWith(`${rawRoot}/`)) inside = resolved.slice(rawRoot.length);
    else return null;
  } else {
    inside = posix.resolve(base, target);
    // resolve() clamps at "/": count whether the target climbs above the root.
    let depth = base === "/" ? 0 : base.split("/").length - 1;
    for (const part of target.split("/")) {
      if (part === "..") depth--;
      else if (part !== "" && part !== ".") depth++;
      if (depth < 0) return null;
    }
  }
  return posix.relative(base, inside) || ".";
}

export type { TarEntry };
