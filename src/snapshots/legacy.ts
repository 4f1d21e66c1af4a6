import { createHash, randomBytes } from "node:crypto";
import { rm } from "node:fs/promises";
import { isAbsolute, join, resolve } from "node:path";
import { Readable } from "node:stream";
import { createStorage, type Driver, type Storage } from "unstorage";
import fsDriver from "unstorage/drivers/fs";
import s3Driver from "unstorage/drivers/s3";
import { assertSessionId, fileKey, normalizeRelativePath } from "../sandbox/snapshot-keys";
import { TAR_END, tarHeader, tarPadding, mtimeMsOf } from "../sandbox/tar-stream";
import { forEachParallel, retried } from "./objects";
import {
  displayName,
  entryPath,
  isUtf8Name,
  listTree,
  rawName,
  relativeLinkTarget,
  tarIn,
  tarOut,
  tarOutDone,
  writeAll,
  type ListedEntry,
  type WorkspaceIo,
} from "../sandbox/workspace-io";

/** What the caller records with a snapshot. Fields other than agentName are kept as `extra`. */
export interface SnapshotMetadataInput {
  agentName: string;
  [field: string]: unknown;
}

/** One entry of a format-2 manifest. */
export interface SnapshotEntry {
  type: "file" | "dir" | "symlink";
  /** The name as UTF-8 text (lossy when `raw` is set). */
  path: string;
  /** base64 of the name's bytes, when they are not UTF-8. */
  raw?: string;
  /** Permission bits (files without setuid/setgid). */
  mode: number;
  /** "seconds.nanoseconds" as the filesystem reported it. */
  mtime: string;
  /** Files: bytes. */
  size?: number;
  /** Files: SHA-256 of each piece of at most CHUNK bytes, in order; the bytes are the blob of that name. */
  chunks?: string[];
  /** Symlinks: target relative to the link's folder (text; `targetRaw` holds bytes that are not UTF-8). */
  target?: string;
  targetRaw?: string;
}

/** What every format of metadata.json records about a save; also what callers learn of one. */
export interface SnapshotInfo {
  sessionId: string;
  agentName: string;
  /** ISO 8601. */
  persistedAt: string;
  generation: string;
  fileCount: number;
  bytes: number;
  /** Entries left out, each with why (sockets, fifos, devices, unreadable, links leading outside). */
  skipped: string[];
  extra: Record<string, unknown>;
}

/** metadata.json, format 2: a manifest over content-addressed blobs (`blobs/<sha256>`). */
export interface SnapshotRecordV2 extends SnapshotInfo {
  format: 2;
  entries: SnapshotEntry[];
}

/** metadata.json as earlier versions wrote it (files under `workspace/<escaped path>`); still read. */
export interface SnapshotRecordV1 extends SnapshotInfo {
  format: 1;
  files: Array<{ path: string; size: number; mode: number; mtimeMs: number; sha256: string; loc: string }>;
  dirs: Array<{ path: string; mode: number }>;
  symlinks: Array<{ path: string; target: string }>;
  pending?: { generation: string; remove: string[] };
}

export type SnapshotRecord = SnapshotRecordV2 | SnapshotRecordV1;


export interface SnapshotListEntry {
  path: string;
  type: "file" | "dir" | "symlink";
  /** Bytes (files); 0 otherwise. */
  size: number;
  /** Permission bits. */
  mode?: number;
  mtimeMs?: number;
  /** Symlink target, relative. */
  target?: string;
}

export interface SnapshotSaveOptions {
  /** Refuse (SnapshotTooLargeError) when the workspace's files add up to more. */
  maxBytes?: number;
  /** Called with one line per entry left out or not readable. */
  onNote?: (line: string) => void;
}

export interface SnapshotStore {
  /**
   * Saves a workspace read through `io` (a process with only the sandbox's
   * rights); the previous snapshot stays whole until this one is committed.
   */
  snapshotWorkspace(sessionId: string, io: WorkspaceIo, metadata: SnapshotMetadataInput, options?: SnapshotSaveOptions): Promise<SnapshotInfo>;
  /** Extracts the snapshot into the (empty) workspace through `io`; false when there is none. */
  restoreWorkspace(sessionId: string, io: WorkspaceIo, options?: { onNote?: (line: string) => void }): Promise<boolean>;
  /** A tar archive of the snapshot, or null when there is none. */
  archive(sessionId: string): Promise<Readable | null>;
  /** Copies one session's snapshot to another (a fork); false when there is none. */
  copySnapshot(fromSessionId: string, toSessionId: string, extra?: Record<string, unknown>): Promise<boolean>;
  /** Removes the snapshot; false when there was none. */
  deleteSnapshot(sessionId: string): Promise<boolean>;
  /** One file's bytes, or null when the snapshot or the file does not exist. */
  readSnapshotFile(sessionId: string, path: string): Promise<Buffer | null>;
  /** Files, dirs and symlinks in the snapshot, or null when there is none. */
  listSnapshotFiles(sessionId: string): Promise<SnapshotListEntry[] | null>;
  readSnapshotInfo(sessionId: string): Promise<SnapshotInfo | null>;
  dispose(): Promise<void>;
}

/** An S3-compatible bucket (AWS S3, MinIO, R2, ...). */
export interface S3SnapshotOptions {
  /** e.g. `https://s3.eu-west-1.amazonaws.com` or a MinIO URL; the bucket is appended as a path. */
  endpoint: string;
  bucket: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** Folder in the bucket; default `sessions`, giving `sessions/<session-id>/blobs/...`. */
  prefix?: string;
  /** Folder in the bucket for the shared workspace version objects (format 3); default `store`. */
  storePrefix?: string;
}

export type SnapshotStoreOptions =
  /** Files under `<dataDir>/sessions/<session-id>/`. */
  | { dataDir: string }
  /** Objects under `<prefix>/<session-id>/` in an S3-compatible bucket. */
  | { s3: S3SnapshotOptions }
  /** Any unstorage driver. Keys: `<session-id>:blobs:<sha256>`, `<session-id>:metadata.json`. */
  | { driver: Driver };

/** Raised when stored bytes do not match the snapshot's record of them. */
export class SnapshotCorruptError extends Error {
  override name = "SnapshotCorruptError";
}

/** Raised when a workspace is over the size a snapshot may have; the previous snapshot is kept. */
export class SnapshotTooLargeError extends Error {
  override name = "SnapshotTooLargeError";
  constructor(
    readonly bytes: number,
    readonly limitBytes: number,
  ) {
    super(
      `The workspace holds ${mb(bytes)} of files, more than the sandbox's disk limit of ${mb(limitBytes)}; ` +
        `it was not saved and the last save is kept. Delete files in the workspace (ask the agent, or use exec) to get under the limit.`,
    );
  }
}

const mb = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;

const POINTER = "metadata.json";
/** Written before metadata.json; read when metadata.json is torn. */
const POINTER_NEXT = "metadata.next.json";
/** Marks a save in progress; `staging:p<n>` list the keys it may have written. */
const INTENT = "staging.json";
/** Files are stored in pieces of at most this size: bounded memory, and big files dedupe by piece. */
const CHUNK = 4 * 1024 * 1024;
/** Blobs written per intent part, and bytes held before they are written. */
const BATCH_KEYS = 512;
const BATCH_BYTES = 32 * 1024 * 1024;

/** Byte access the snapshot logic needs. */
interface Blobs {
  get(key: string): Promise<Buffer | null>;
  set(key: string, value: Buffer): Promise<void>;
  remove(key: string): Promise<void>;
  /** fs: remove a folder (or a whole session). */
  removeTree?(sessionId: string, sub?: string): Promise<void>;
}

function toBuffer(value: unknown): Buffer | null {
  if (value === null || value === undefined) return null;
  if (Buffer.isBuffer(value)) return value;
  if (value instanceof ArrayBuffer) return Buffer.from(value);
  if (ArrayBuffer.isView(value)) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  if (typeof value === "string") return Buffer.from(value, "utf8");
  throw new Error(`Unexpected stored value of type ${typeof value}`);
}


function storageBlobs(storage: Storage, retry = false, prefix = ""): Blobs {
  const wrap = retry ? retried : <T>(call: () => Promise<T>) => call();
  const full = (key: string) => (prefix ? `${prefix}:${key}` : key);
  return {
    get: async (key) => toBuffer(await wrap(() => storage.getItemRaw(full(key)))),
    set: (key, value) => wrap(() => storage.setItemRaw(full(key), value)),
    remove: (key) => wrap(() => storage.removeItem(full(key))),
  };
}

function fsBlobs(base: string): Blobs {
  const storage = createStorage({ driver: fsDriver({ base, ignore: [] }) });
  return {
    ...storageBlobs(storage),
    async removeTree(sessionId, sub) {
      await rm(sub ? join(base, sessionId, sub) : join(base, sessionId), { recursive: true, force: true });
    },
  };
}

const sha256 = (data: Buffer) => createHash("sha256").update(data).digest("hex");
const newGeneration = () => `g${Date.now().toString(36)}${randomBytes(4).toString("hex")}`;


/** An entry's name as raw bytes (latin1 held). */
const rawPathOf = (entry: SnapshotEntry) => (entry.raw !== undefined ? Buffer.from(entry.raw, "base64").toString("latin1") : rawName(entry.path));
const rawTargetOf = (entry: SnapshotEntry) =>
  entry.targetRaw !== undefined ? Buffer.from(entry.targetRaw, "base64").toString("latin1") : rawName(entry.target ?? "");

function named(raw: string): { path: string; raw?: string } {
  return isUtf8Name(raw) ? { path: displayName(raw) } : { path: displayName(raw), raw: Buffer.from(raw, "latin1").toString("base64") };
}

function linkTarget(raw: string): { target: string; targetRaw?: string } {
  return isUtf8Name(raw) ? { target: displayName(raw) } : { target: displayName(raw), targetRaw: Buffer.from(raw, "latin1").toString("base64") };
}

const byRawPath = (a: { raw: string }, b: { raw: string }) => (a.raw < b.raw ? -1 : a.raw > b.raw ? 1 : 0);

/** A committed snapshot as every reader sees it, whichever format is on disk. */
interface View {
  record: SnapshotRecord;
  entries: Array<SnapshotEntry & { legacy?: { loc: string; sha256: string } }>;
}

function describeKind(kind: string): string {
  return { p: "a named pipe", s: "a socket", b: "a block device", c: "a character device", D: "a door" }[kind] ?? "not a regular file";
}

export function createSnapshotStore(options: SnapshotStoreOptions): SnapshotStore {
  let blobs: Blobs;
  let storage: Storage | undefined;
  if ("dataDir" in options) {
    if (!isAbsolute(options.dataDir)) throw new Error(`dataDir must be absolute: ${options.dataDir}`);
    blobs = fsBlobs(join(resolve(options.dataDir), "sessions"));
  } else if ("s3" in options) {
    const { prefix = "sessions", storePrefix: _store, ...s3 } = options.s3;
    for (const field of ["endpoint", "bucket", "region", "accessKeyId", "secretAccessKey"] as const) {
      if (!s3[field]) throw new Error(`S3 snapshot storage needs ${field}`);
    }
    storage = createStorage({ driver: s3Driver(s3) });
    blobs = storageBlobs(storage, true, prefix.split("/").filter(Boolean).join(":"));
  } else {
    storage = createStorage({ driver: options.driver });
    blobs = storageBlobs(storage, true);
  }

  const locks = new Map<string, Promise<unknown>>();
  /** One save/restore/copy/delete per session at a time. */
  function locked<T>(sessionId: string, fn: () => Promise<T>): Promise<T> {
    const previous = locks.get(sessionId) ?? Promise.resolve();
    const next = previous.catch(() => {}).then(fn);
    locks.set(sessionId, next);
    void next
      .finally(() => {
        if (locks.get(sessionId) === next) locks.delete(sessionId);
      })
      .catch(() => {});
    return next;
  }

  const blobKey = (sessionId: string, hash: string) => `${sessionId}:blobs:${hash}`;
  const partKey = (sessionId: string, n: number) => `${sessionId}:staging:p${n}`;
  // Format 1 kept each file at its escaped path.
  const legacyKey = (sessionId: string, loc: string, path: string) =>
    loc === "workspace" ? fileKey(`${sessionId}:workspace`, path) : fileKey(`${sessionId}:${loc.replace(/\//g, ":")}`, path);

  async function readRecord(key: string): Promise<SnapshotRecord | null> {
    const raw = await blobs.get(key);
    if (!raw) return null;
    try {
      const record = JSON.parse(raw.toString("utf8")) as SnapshotRecord;
      if (record?.format === 2 && Array.isArray(record.entries)) return record;
      if (record?.format === 1 && Array.isArray(record.files)) return record;
      return null;
    } catch {
      return null; // torn write
    }
  }

  /** The committed snapshot: metadata.json, or metadata.next.json if metadata.json was torn mid-write. */
  async function readView(sessionId: string): Promise<View | null> {
    const record = (await readRecord(`${sessionId}:${POINTER}`)) ?? (await readRecord(`${sessionId}:${POINTER_NEXT}`));
    if (!record) return null;
    if (record.format === 2) return { record, entries: record.entries };
    const entries: View["entries"] = [
      ...record.dirs.map((dir) => ({ type: "dir" as const, path: dir.path, mode: dir.mode, mtime: "0.000000000" })),
      ...record.files.map((file) => ({
        type: "file" as const,
        path: file.path,
        mode: file.mode,
        mtime: `${Math.floor(file.mtimeMs / 1000)}.${String(Math.round(file.mtimeMs % 1000) * 1_000_000).padStart(9, "0")}`,
        size: file.size,
        legacy: { loc: file.loc, sha256: file.sha256 },
      })),
      ...record.symlinks.map((link) => ({ type: "symlink" as const, path: link.path, mode: 0o777, mtime: "0.000000000", target: link.target })),
    ];
    return { record, entries };
  }

  /** Every key the committed snapshot needs. */
  function referencedKeys(sessionId: string, view: View | null): Set<string> {
    const keys = new Set<string>();
    for (const entry of view?.entries ?? []) {
      for (const hash of entry.chunks ?? []) keys.add(blobKey(sessionId, hash));
      if (entry.legacy) {
        keys.add(legacyKey(sessionId, entry.legacy.loc, entry.path));
        keys.add(legacyKey(sessionId, "workspace", entry.path));
      }
    }
    return keys;
  }

  async function writePointer(record: SnapshotRecordV2): Promise<void> {
    const body = Buffer.from(JSON.stringify(record));
    await blobs.set(`${record.sessionId}:${POINTER_NEXT}`, body);
    await blobs.set(`${record.sessionId}:${POINTER}`, body);
  }

  /** A file's bytes, piece by piece, each checked against its hash. */
  async function* fileBytes(sessionId: string, entry: View["entries"][number]): AsyncGenerator<Buffer> {
    if (entry.legacy) {
      const places = entry.legacy.loc === "workspace" ? ["workspace"] : [entry.legacy.loc, "workspace"];
      for (const loc of places) {
        const data = await blobs.get(legacyKey(sessionId, loc, entry.path));
        if (data && data.length === entry.size && sha256(data) === entry.legacy.sha256) {
          yield data;
          return;
        }
      }
      throw new SnapshotCorruptError(`Snapshot of session ${sessionId} has no intact copy of ${entry.path}`);
    }
    let total = 0;
    for (const hash of entry.chunks ?? []) {
      const data = await blobs.get(blobKey(sessionId, hash));
      if (!data || sha256(data) !== hash) throw new SnapshotCorruptError(`Snapshot of session ${sessionId} has no intact copy of ${entry.path}`);
      total += data.length;
      yield data;
    }
    if (total !== (entry.size ?? 0)) throw new SnapshotCorruptError(`Snapshot of session ${sessionId} has a wrong size for ${entry.path}`);
  }

  /**
   * Removes what a save that crashed wrote and never committed (or what a
   * committed save had still to delete): every key its intent parts list
   * that the committed snapshot does not need.
   */
  async function recover(sessionId: string, view: View | null): Promise<void> {
    const intent = await blobs.get(`${sessionId}:${INTENT}`);
    if (!intent) return;
    const needed = referencedKeys(sessionId, view);
    let legacyKeys: string[] = [];
    try {
      legacyKeys = (JSON.parse(intent.toString("utf8")) as { keys?: string[] }).keys ?? [];
    } catch {
      // torn: the parts below still name what was written
    }
    await forEachParallel(legacyKeys.filter((key) => !needed.has(key)), (key) => blobs.remove(key));
    for (let n = 0; ; n++) {
      const part = await blobs.get(partKey(sessionId, n));
      if (!part) break;
      let keys: string[] = [];
      try {
        keys = JSON.parse(part.toString("utf8")) as string[];
      } catch {
        // torn part: written before any blob it lists, so none of them exists
      }
      await forEachParallel(keys.filter((key) => typeof key === "string" && key.startsWith(`${sessionId}:`) && !needed.has(key)), (key) => blobs.remove(key));
      await blobs.remove(partKey(sessionId, n));
    }
    await blobs.removeTree?.(sessionId, "staging");
    await blobs.remove(`${sessionId}:${INTENT}`);
  }

  /** Writes blobs in batches, each named in an intent part before it is written. */
  function blobWriter(sessionId: string, known: Set<string>) {
    let parts = 0;
    let batch: Array<{ key: string; data: Buffer }> = [];
    let batchBytes = 0;
    const flush = async () => {
      if (batch.length === 0) return;
      const current = batch;
      batch = [];
      batchBytes = 0;
      await blobs.set(partKey(sessionId, parts++), Buffer.from(JSON.stringify(current.map((b) => b.key))));
      await forEachParallel(current, (b) => blobs.set(b.key, b.data));
    };
    return {
      async add(data: Buffer): Promise<string> {
        const hash = sha256(data);
        const key = blobKey(sessionId, hash);
        // A blob the committed snapshot uses is never written again: a torn rewrite would damage it.
        if (!known.has(key)) {
          known.add(key);
          batch.push({ key, data });
          batchBytes += data.length;
          if (batch.length >= BATCH_KEYS || batchBytes >= BATCH_BYTES) await flush();
        }
        return hash;
      },
      flush,
      /** Names keys about to be deleted, so a crash in the middle still finishes the job later. */
      async intendRemoval(keys: string[]) {
        for (let at = 0; at < keys.length; at += 4096) await blobs.set(partKey(sessionId, parts++), Buffer.from(JSON.stringify(keys.slice(at, at + 4096))));
      },
      get parts() {
        return parts;
      },
    };
  }

  async function finishIntent(sessionId: string, parts: number): Promise<void> {
    for (let n = 0; n < parts; n++) await blobs.remove(partKey(sessionId, n));
    await blobs.removeTree?.(sessionId, "staging");
    await blobs.remove(`${sessionId}:${INTENT}`);
  }

  /** After a commit: deletes what only the previous snapshot used. */
  async function collect(sessionId: string, previous: View | null, record: SnapshotRecordV2, writer: ReturnType<typeof blobWriter>): Promise<void> {
    const now = referencedKeys(sessionId, { record, entries: record.entries });
    const stale = [...referencedKeys(sessionId, previous)].filter((key) => !now.has(key));
    await writer.intendRemoval(stale);
    await forEachParallel(stale, (key) => blobs.remove(key));
    if (previous?.record.format === 1) await blobs.removeTree?.(sessionId, "workspace");
    await finishIntent(sessionId, writer.parts);
  }

  function infoOf(record: SnapshotRecord): SnapshotInfo {
    const { sessionId, agentName, persistedAt, generation, fileCount, bytes, skipped, extra } = record;
    return { sessionId, agentName, persistedAt, generation, fileCount, bytes, skipped, extra };
  }

  async function snapshotWorkspace(sessionId: string, io: WorkspaceIo, metadata: SnapshotMetadataInput, saveOptions: SnapshotSaveOptions = {}): Promise<SnapshotInfo> {
    assertSessionId(sessionId);
    if (!metadata || typeof metadata.agentName !== "string" || metadata.agentName === "") {
      throw new Error("Snapshot metadata needs an agentName");
    }
    const note = saveOptions.onNote ?? (() => {});
    const maxBytes = saveOptions.maxBytes ?? Number.POSITIVE_INFINITY;

    return locked(sessionId, async () => {
      const previous = await readView(sessionId);
      await recover(sessionId, previous);

      // 1. What is there, as the sandbox user sees it.
      const listed: ListedEntry[] = [];
      const { errors } = await listTree(io, (entry) => void listed.push(entry));
      for (const line of errors) note(`not saved: ${line}`);
      const listedBytes = listed.reduce((sum, entry) => sum + (entry.type === "file" ? entry.size : 0), 0);
      if (listedBytes > maxBytes) throw new SnapshotTooLargeError(listedBytes, maxBytes);

      // 2. rsync's quick check: same size and mtime as the committed entry means its blobs are current.
      const before = new Map<string, SnapshotEntry>();
      for (const entry of previous?.entries ?? []) if (entry.type === "file" && entry.chunks) before.set(rawPathOf(entry), entry);
      const result = new Map<string, SnapshotEntry>();
      const skipped: string[] = [];
      const skip = (raw: string, why: string) => {
        skipped.push(displayName(raw));
        note(`not saved: ${JSON.stringify(displayName(raw))}: ${why}`);
      };
      const changed: string[] = [];
      const addLink = (raw: string, target: string, mtime: string) => {
        const relative = relativeLinkTarget(io.root, raw, target);
        if (relative === null) skip(raw, "a symlink leading outside the workspace");
        else result.set(raw, { type: "symlink", ...named(raw), mode: 0o777, mtime, ...linkTarget(relative) });
      };
      for (const entry of listed) {
        if (entry.type === "dir") result.set(entry.path, { type: "dir", ...named(entry.path), mode: entry.mode & 0o1777, mtime: entry.mtime });
        else if (entry.type === "symlink") addLink(entry.path, entry.target ?? "", entry.mtime);
        else if (entry.type === "other") skip(entry.path, describeKind(entry.kind));
        else {
          const old = before.get(entry.path);
          // setuid/setgid bits are dropped: a restore must never mint a privileged binary.
          if (old && old.size === entry.size && old.mtime === entry.mtime) result.set(entry.path, { ...old, ...named(entry.path), mode: entry.mode & 0o777 });
          else changed.push(entry.path);
        }
      }
      listed.length = 0;

      const generation = newGeneration();
      await blobs.set(`${sessionId}:${INTENT}`, Buffer.from(JSON.stringify({ generation })));
      const writer = blobWriter(sessionId, referencedKeys(sessionId, previous));

      // 3. The changed files' bytes, streamed by tar as the sandbox user.
      if (changed.length > 0) {
        const wanted = new Set(changed);
        const { proc, reader } = tarOut(io, changed);
        let streamed = 0;
        try {
          for (let entry = await reader.next(); entry; entry = await reader.next()) {
            const raw = entryPath(entry.path);
            if (raw === null || !wanted.has(raw)) continue;
            wanted.delete(raw);
            if (entry.type === "dir") result.set(raw, { type: "dir", ...named(raw), mode: entry.mode & 0o1777, mtime: entry.mtime });
            else if (entry.type === "symlink") addLink(raw, entry.linkpath, entry.mtime);
            else if (entry.type !== "file") skip(raw, "not a regular file");
            else {
              const chunks: string[] = [];
              let size = 0;
              for (;;) {
                const pieces: Buffer[] = [];
                let have = 0;
                while (have < CHUNK) {
                  const piece = await reader.read(CHUNK - have);
                  if (!piece) break;
                  pieces.push(piece);
                  have += piece.length;
                }
                if (have === 0 && size > 0) break;
                size += have;
                streamed += have;
                if (streamed > maxBytes) throw new SnapshotTooLargeError(streamed, maxBytes);
                chunks.push(await writer.add(pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces, have)));
                if (have < CHUNK) break;
              }
              result.set(raw, { type: "file", ...named(raw), mode: entry.mode & 0o777, mtime: entry.mtime, size, chunks });
            }
          }
        } catch (error) {
          proc.kill();
          await proc.done;
          throw error;
        }
        for (const line of await tarOutDone(proc)) note(`not saved: ${line}`);
        // Gone or unreadable by the time tar got there.
        for (const raw of wanted) skipped.push(displayName(raw));
      }
      await writer.flush();

      // 4. The commit point: from here on the new manifest is the snapshot.
      const entries = [...result].map(([raw, entry]) => ({ raw, entry })).sort(byRawPath).map(({ entry }) => entry);
      const files = entries.filter((entry) => entry.type === "file");
      const { agentName, ...extra } = metadata;
      const record: SnapshotRecordV2 = {
        format: 2,
        sessionId,
        agentName,
        persistedAt: new Date().toISOString(),
        generation,
        fileCount: files.length,
        bytes: files.reduce((sum, file) => sum + (file.size ?? 0), 0),
        entries,
        skipped,
        extra,
      };
      await writePointer(record);
      await collect(sessionId, previous, record, writer);
      return infoOf(record);
    });
  }

  /** The snapshot as a tar archive: folders, then files, then symlinks. */
  async function* archiveOf(sessionId: string, view: View): AsyncGenerator<Buffer> {
    const sorted = view.entries.map((entry) => ({ raw: rawPathOf(entry), entry })).sort(byRawPath);
    for (const pass of ["dir", "file", "symlink"] as const) {
      for (const { raw, entry } of sorted) {
        if (entry.type !== pass) continue;
        if (pass === "symlink") {
          yield tarHeader({ type: "symlink", path: raw, mode: 0o777, mtime: entry.mtime, linkpath: rawTargetOf(entry) });
        } else if (pass === "dir") {
          yield tarHeader({ type: "dir", path: raw, mode: entry.mode, mtime: entry.mtime });
        } else {
          yield tarHeader({ type: "file", path: raw, mode: entry.mode, mtime: entry.mtime, size: entry.size ?? 0 });
          yield* fileBytes(sessionId, entry);
          yield tarPadding(entry.size ?? 0);
        }
      }
    }
    yield TAR_END;
  }

  async function restoreWorkspace(sessionId: string, io: WorkspaceIo, restoreOptions: { onNote?: (line: string) => void } = {}): Promise<boolean> {
    assertSessionId(sessionId);
    return locked(sessionId, async () => {
      const view = await readView(sessionId);
      if (!view) return false;
      const notes = await tarIn(io, async (stdin) => {
        for await (const data of archiveOf(sessionId, view)) if (data.length) await writeAll(stdin, data);
      });
      for (const line of notes) restoreOptions.onNote?.(`not restored: ${line}`);
      return true;
    });
  }

  async function archive(sessionId: string): Promise<Readable | null> {
    assertSessionId(sessionId);
    const view = await readView(sessionId);
    return view ? Readable.from(archiveOf(sessionId, view), { objectMode: false }) : null;
  }

  async function copySnapshot(fromSessionId: string, toSessionId: string, extra: Record<string, unknown> = {}): Promise<boolean> {
    assertSessionId(fromSessionId);
    assertSessionId(toSessionId);
    const view = await locked(fromSessionId, () => readView(fromSessionId));
    if (!view) return false;
    return locked(toSessionId, async () => {
      const previous = await readView(toSessionId);
      await recover(toSessionId, previous);
      await blobs.set(`${toSessionId}:${INTENT}`, Buffer.from(JSON.stringify({ generation: newGeneration() })));
      const writer = blobWriter(toSessionId, referencedKeys(toSessionId, previous));
      const entries: SnapshotEntry[] = [];
      for (const entry of view.entries) {
        const { legacy, ...plain } = entry;
        if (entry.type !== "file") {
          entries.push(plain);
          continue;
        }
        const chunks: string[] = [];
        for await (const data of fileBytes(fromSessionId, entry)) {
          for (let at = 0; at < data.length || (at === 0 && chunks.length === 0); at += CHUNK) chunks.push(await writer.add(data.subarray(at, at + CHUNK)));
        }
        entries.push({ ...plain, chunks });
        void legacy;
      }
      await writer.flush();
      const source = view.record;
      const record: SnapshotRecordV2 = {
        format: 2,
        sessionId: toSessionId,
        agentName: source.agentName,
        persistedAt: new Date().toISOString(),
        generation: newGeneration(),
        fileCount: source.fileCount,
        bytes: source.bytes,
        entries,
        skipped: source.skipped,
        extra: { ...source.extra, ...extra },
      };
      await writePointer(record);
      await collect(toSessionId, previous, record, writer);
      return true;
    });
  }

  async function deleteSnapshot(sessionId: string): Promise<boolean> {
    assertSessionId(sessionId);
    return locked(sessionId, async () => {
      const view = await readView(sessionId);
      const intent = await blobs.get(`${sessionId}:${INTENT}`);
      if (!view && !intent) return false;
      await recover(sessionId, view);
      await forEachParallel([...referencedKeys(sessionId, view)], (key) => blobs.remove(key));
      await blobs.remove(`${sessionId}:${POINTER}`);
      await blobs.remove(`${sessionId}:${POINTER_NEXT}`);
      await blobs.removeTree?.(sessionId);
      return view !== null;
    });
  }

  async function readSnapshotFile(sessionId: string, path: string): Promise<Buffer | null> {
    assertSessionId(sessionId);
    const wanted = rawName(normalizeRelativePath(path));
    const view = await readView(sessionId);
    const entry = view?.entries.find((e) => e.type === "file" && rawPathOf(e) === wanted);
    if (!view || !entry) return null;
    const parts: Buffer[] = [];
    for await (const data of fileBytes(sessionId, entry)) parts.push(data);
    return Buffer.concat(parts);
  }

  async function listSnapshotFiles(sessionId: string): Promise<SnapshotListEntry[] | null> {
    assertSessionId(sessionId);
    const view = await readView(sessionId);
    if (!view) return null;
    const entries: SnapshotListEntry[] = view.entries.map((entry) =>
      entry.type === "file"
        ? { path: entry.path, type: "file", size: entry.size ?? 0, mode: entry.mode, mtimeMs: mtimeMsOf(entry.mtime) }
        : entry.type === "dir"
          ? { path: entry.path, type: "dir", size: 0, mode: entry.mode }
          : { path: entry.path, type: "symlink", size: 0, target: entry.target },
    );
    return entries.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  }

  async function readSnapshotInfo(sessionId: string): Promise<SnapshotInfo | null> {
    assertSessionId(sessionId);
    const view = await readView(sessionId);
    return view ? infoOf(view.record) : null;
  }

  return {
    snapshotWorkspace,
    restoreWorkspace,
    archive,
    copySnapshot,
    deleteSnapshot,
    readSnapshotFile,
    listSnapshotFiles,
    readSnapshotInfo,
    async dispose() {
      await storage?.dispose();
    },
  };
}
