import { createHash, randomBytes } from "node:crypto";
import { chmod, lchown, lstat, mkdir, readFile, readdir, rename, rm, rmdir, symlink, utimes, writeFile } from "node:fs/promises";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { createStorage, type Driver, type Storage } from "unstorage";
import fsDriver from "unstorage/drivers/fs";
import s3Driver from "unstorage/drivers/s3";
import { assertSessionId, fileKey, filePath, normalizeRelativePath } from "./snapshot-keys";
import { walkWorkspace, type WalkedDir, type WalkedLink } from "./snapshot-walk";

/** What the caller records with a snapshot. Fields other than agentName are kept as `extra`. */
export interface SnapshotMetadataInput {
  agentName: string;
  [field: string]: unknown;
}

export interface SnapshotFileEntry {
  path: string;
  size: number;
  /** Permission bits, e.g. 0o755 (493) for an executable. */
  mode: number;
  mtimeMs: number;
  sha256: string;
  /** Where the bytes live: "workspace", or "staging/<generation>" until promoted. */
  loc: string;
}

/** The content of metadata.json. */
export interface SnapshotRecord {
  format: 1;
  sessionId: string;
  agentName: string;
  /** ISO 8601. */
  persistedAt: string;
  generation: string;
  fileCount: number;
  bytes: number;
  files: SnapshotFileEntry[];
  dirs: WalkedDir[];
  symlinks: WalkedLink[];
  /** Paths left out: symlinks leading outside the workspace, sockets, fifos, devices. */
  skipped: string[];
  extra: Record<string, unknown>;
  /** Set between the commit of a generation and the end of its promotion into workspace/. */
  pending?: { generation: string; remove: string[] };
}

export interface SnapshotInfo {
  sessionId: string;
  agentName: string;
  persistedAt: string;
  generation: string;
  fileCount: number;
  bytes: number;
  skipped: string[];
  extra: Record<string, unknown>;
}

export interface SnapshotListEntry {
  path: string;
  type: "file" | "dir" | "symlink";
  /** Bytes (files); 0 otherwise. */
  size: number;
  /** Permission bits (files and dirs). */
  mode?: number;
  mtimeMs?: number;
  /** Symlink target, relative. */
  target?: string;
}

export interface SnapshotStore {
  /** Copies a workspace into the store; the previous snapshot stays readable until this one is complete. */
  snapshotWorkspace(sessionId: string, workspaceDir: string, metadata: SnapshotMetadataInput): Promise<SnapshotInfo>;
  /**
   * Writes the snapshot's files into `targetDir`, which must be empty or
   * missing; false when the session has no snapshot. With `owner`, every
   * restored entry is chowned to it (the sandbox user).
   */
  restoreWorkspace(sessionId: string, targetDir: string, options?: { owner?: { uid: number; gid: number } }): Promise<boolean>;
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
  /** Folder in the bucket; default `sessions`, giving `sessions/<session-id>/workspace/...`. */
  prefix?: string;
}

export type SnapshotStoreOptions =
  /** Files under `<dataDir>/sessions/<session-id>/`. */
  | { dataDir: string }
  /** Objects under `<prefix>/<session-id>/` in an S3-compatible bucket. */
  | { s3: S3SnapshotOptions }
  /** Any unstorage driver. Keys: `<session-id>:workspace:<path>`, `<session-id>:metadata.json`. */
  | { driver: Driver };

/** Raised when stored bytes do not match the snapshot's record of them. */
export class SnapshotCorruptError extends Error {
  override name = "SnapshotCorruptError";
}

const POINTER = "metadata.json";
/** Written before metadata.json; read when metadata.json is torn. */
const POINTER_NEXT = "metadata.next.json";
/** Keys a snapshot in progress may write, so a crashed one can be cleaned up without listing. */
const INTENT = "staging.json";
const PARALLEL_FILES = 8;
const IN_FLIGHT_BYTES = 64 * 1024 * 1024;

/** Byte access the snapshot logic needs, with fs-only shortcuts where a driver is a plain folder. */
interface Blobs {
  get(key: string): Promise<Buffer | null>;
  set(key: string, value: Buffer): Promise<void>;
  remove(key: string): Promise<void>;
  /** fs: rename a staged file into workspace/ instead of copying it. */
  move?(fromKey: string, toKey: string): Promise<boolean>;
  /** fs: remove a folder left empty (or a whole session). */
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

/**
 * Object stores answer "InternalError, please try again" now and then
 * (S3 documents retrying 500/503); each call is retried a few times.
 */
async function retried<T>(call: () => Promise<T>, attempts = 4): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await call();
    } catch (error) {
      if (attempt >= attempts) throw error;
      await sleep(50 * 4 ** (attempt - 1));
    }
  }
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
  const pathOf = (key: string) => join(base, key.replace(/:/g, "/"));
  return {
    ...storageBlobs(storage),
    async move(fromKey, toKey) {
      await mkdir(dirname(pathOf(toKey)), { recursive: true });
      try {
        await rename(pathOf(fromKey), pathOf(toKey));
        return true;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT") return false;
        throw error;
      }
    },
    async removeTree(sessionId, sub) {
      await rm(sub ? join(base, sessionId, sub) : join(base, sessionId), { recursive: true, force: true });
    },
  };
}

const sha256 = (data: Buffer) => createHash("sha256").update(data).digest("hex");
const newGeneration = () => `g${Date.now().toString(36)}${randomBytes(4).toString("hex")}`;

/** Runs `task` over items, at most PARALLEL_FILES at once and about IN_FLIGHT_BYTES of file data in memory. */
async function forEachBounded<T>(items: T[], sizeOf: (item: T) => number, task: (item: T) => Promise<void>): Promise<void> {
  let index = 0;
  let inFlight = 0;
  let failure: unknown;
  const waiters: Array<() => void> = [];
  const release = (size: number) => {
    inFlight -= size;
    waiters.splice(0).forEach((wake) => wake());
  };
  const worker = async () => {
    while (failure === undefined && index < items.length) {
      const item = items[index++]!;
      const size = sizeOf(item);
      while (inFlight > 0 && inFlight + size > IN_FLIGHT_BYTES) await new Promise<void>((wake) => waiters.push(wake));
      inFlight += size;
      try {
        await task(item);
      } catch (error) {
        failure ??= error;
      } finally {
        release(size);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(PARALLEL_FILES, items.length) }, worker));
  if (failure !== undefined) throw failure;
}

export function createSnapshotStore(options: SnapshotStoreOptions): SnapshotStore {
  let blobs: Blobs;
  let storage: Storage | undefined;
  if ("dataDir" in options) {
    if (!isAbsolute(options.dataDir)) throw new Error(`dataDir must be absolute: ${options.dataDir}`);
    blobs = fsBlobs(join(resolve(options.dataDir), "sessions"));
  } else if ("s3" in options) {
    const { prefix = "sessions", ...s3 } = options.s3;
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
  /** One snapshot/restore/delete per session at a time. */
  function locked<T>(sessionId: string, fn: () => Promise<T>): Promise<T> {
    const previous = locks.get(sessionId) ?? Promise.resolve();
    const next = previous.catch(() => {}).then(fn);
    locks.set(sessionId, next);
    void next.finally(() => {
      if (locks.get(sessionId) === next) locks.delete(sessionId);
    }).catch(() => {});
    return next;
  }

  const workspaceKey = (sessionId: string, path: string) => fileKey(`${sessionId}:workspace`, path);
  const keyAt = (sessionId: string, loc: string, path: string) =>
    loc === "workspace" ? workspaceKey(sessionId, path) : fileKey(`${sessionId}:${loc.replace(/\//g, ":")}`, path);

  async function readRecord(key: string): Promise<SnapshotRecord | null> {
    const raw = await blobs.get(key);
    if (!raw) return null;
    try {
      const record = JSON.parse(raw.toString("utf8")) as SnapshotRecord;
      return record && record.format === 1 && Array.isArray(record.files) ? record : null;
    } catch {
      return null; // torn write
    }
  }

  /** The committed record: metadata.json, or metadata.next.json if metadata.json was torn mid-write. */
  async function readPointer(sessionId: string): Promise<SnapshotRecord | null> {
    return (await readRecord(`${sessionId}:${POINTER}`)) ?? (await readRecord(`${sessionId}:${POINTER_NEXT}`));
  }

  async function writePointer(record: SnapshotRecord): Promise<void> {
    const body = Buffer.from(JSON.stringify(record));
    await blobs.set(`${record.sessionId}:${POINTER_NEXT}`, body);
    await blobs.set(`${record.sessionId}:${POINTER}`, body);
  }

  /** A file's bytes from its recorded place; if a promotion already moved it, from workspace/. Verified by hash. */
  async function readEntry(sessionId: string, entry: SnapshotFileEntry): Promise<Buffer> {
    const places = entry.loc === "workspace" ? ["workspace"] : [entry.loc, "workspace"];
    for (const loc of places) {
      const data = await blobs.get(keyAt(sessionId, loc, entry.path));
      if (data && data.length === entry.size && sha256(data) === entry.sha256) return data;
    }
    throw new SnapshotCorruptError(`Snapshot of session ${sessionId} has no intact copy of ${entry.path}`);
  }

  /** Finishes moving a committed generation's staged files into workspace/, then drops the pending mark. */
  async function promote(record: SnapshotRecord): Promise<SnapshotRecord> {
    const { sessionId } = record;
    if (!record.pending) return record;
    const staging = `staging/${record.pending.generation}`;
    const staged = record.files.filter((file) => file.loc === staging);
    await forEachBounded(staged, (file) => file.size, async (file) => {
      const from = keyAt(sessionId, staging, file.path);
      const to = workspaceKey(sessionId, file.path);
      if (blobs.move && (await blobs.move(from, to))) return;
      const data = await readEntry(sessionId, file);
      await blobs.set(to, data);
      await blobs.remove(from);
    });
    await forEachBounded(record.pending.remove, () => 0, (path) => blobs.remove(workspaceKey(sessionId, path)));
    const done: SnapshotRecord = { ...record, files: record.files.map((file) => ({ ...file, loc: "workspace" })) };
    delete done.pending;
    await writePointer(done);
    await blobs.remove(`${sessionId}:${INTENT}`);
    await blobs.removeTree?.(sessionId, "staging");
    await pruneEmptyDirs(sessionId, record.pending.remove);
    return done;
  }

  /** fs only: folders in workspace/ emptied by removed files. */
  async function pruneEmptyDirs(sessionId: string, removed: string[]): Promise<void> {
    if (!blobs.removeTree || !("dataDir" in options)) return;
    const root = join(resolve(options.dataDir), "sessions", sessionId, "workspace");
    const dirs = new Set<string>();
    for (const path of removed) for (let dir = dirname(path); dir !== "."; dir = dirname(dir)) dirs.add(dir);
    for (const dir of [...dirs].sort((a, b) => b.length - a.length)) await rmdir(join(root, filePath(dir))).catch(() => {});
  }

  /** Removes what a snapshot that crashed before its commit wrote. */
  async function dropAbandonedStaging(sessionId: string): Promise<void> {
    const intent = await blobs.get(`${sessionId}:${INTENT}`);
    if (intent) {
      try {
        const { keys } = JSON.parse(intent.toString("utf8")) as { keys: string[] };
        await forEachBounded(keys, () => 0, (key) => blobs.remove(key));
      } catch {
        // a torn intent: fs cleanup below still removes the folder
      }
    }
    await blobs.removeTree?.(sessionId, "staging");
    await blobs.remove(`${sessionId}:${INTENT}`);
  }

  function infoOf(record: SnapshotRecord): SnapshotInfo {
    const { sessionId, agentName, persistedAt, generation, fileCount, bytes, skipped, extra } = record;
    return { sessionId, agentName, persistedAt, generation, fileCount, bytes, skipped, extra };
  }

  async function snapshotWorkspace(sessionId: string, workspaceDir: string, metadata: SnapshotMetadataInput): Promise<SnapshotInfo> {
    assertSessionId(sessionId);
    if (!metadata || typeof metadata.agentName !== "string" || metadata.agentName === "") {
      throw new Error("Snapshot metadata needs an agentName");
    }
    if (!isAbsolute(workspaceDir)) throw new Error(`workspaceDir must be absolute: ${workspaceDir}`);
    const info = await lstat(workspaceDir).catch(() => null);
    if (!info?.isDirectory()) throw new Error(`Workspace ${workspaceDir} is not a directory`);

    return locked(sessionId, async () => {
      let previous = await readPointer(sessionId);
      if (previous?.pending) previous = await promote(previous);
      await dropAbandonedStaging(sessionId);

      const tree = await walkWorkspace(workspaceDir);
      const generation = newGeneration();
      const staging = `staging/${generation}`;
      const before = new Map((previous?.files ?? []).map((file) => [file.path, file]));
      // rsync's quick check: same size and mtime as last time means the copy in workspace/ is current.
      const unchanged = (path: string, size: number, mtimeMs: number) => {
        const old = before.get(path);
        return old !== undefined && old.size === size && old.mtimeMs === mtimeMs && old.loc === "workspace";
      };
      const changed = tree.files.filter((file) => !unchanged(file.path, file.size, file.mtimeMs));
      await blobs.set(
        `${sessionId}:${INTENT}`,
        Buffer.from(JSON.stringify({ generation, keys: changed.map((file) => keyAt(sessionId, staging, file.path)) })),
      );

      const hashes = new Map<string, { sha256: string; size: number }>();
      await forEachBounded(changed, (file) => file.size, async (file) => {
        const data = await readFile(join(workspaceDir, file.path));
        hashes.set(file.path, { sha256: sha256(data), size: data.length });
        await blobs.set(keyAt(sessionId, staging, file.path), data);
      });

      const files: SnapshotFileEntry[] = tree.files.map((file) => {
        const fresh = hashes.get(file.path);
        if (fresh) return { ...file, size: fresh.size, sha256: fresh.sha256, loc: staging };
        return { ...file, sha256: before.get(file.path)!.sha256, loc: "workspace" };
      });
      const kept = new Set(files.map((file) => file.path));
      const { agentName, ...extra } = metadata;
      const record: SnapshotRecord = {
        format: 1,
        sessionId,
        agentName,
        persistedAt: new Date().toISOString(),
        generation,
        fileCount: files.length,
        bytes: files.reduce((sum, file) => sum + file.size, 0),
        files,
        dirs: tree.dirs,
        symlinks: tree.symlinks,
        skipped: tree.skipped,
        extra,
        pending: { generation, remove: [...before.keys()].filter((path) => !kept.has(path)) },
      };
      // The commit point: from here on the new generation is the snapshot.
      await writePointer(record);
      return infoOf(await promote(record));
    });
  }

  async function restoreWorkspace(
    sessionId: string,
    targetDir: string,
    restoreOptions: { owner?: { uid: number; gid: number } } = {},
  ): Promise<boolean> {
    assertSessionId(sessionId);
    if (!isAbsolute(targetDir)) throw new Error(`targetDir must be absolute: ${targetDir}`);
    return locked(sessionId, async () => {
      const record = await readPointer(sessionId);
      if (!record) return false;
      const owner = restoreOptions.owner;
      await mkdir(targetDir, { recursive: true });
      // Into an empty folder only: an existing symlink named like a snapshot
      // folder would make these root-owned writes land outside the target.
      if ((await readdir(targetDir)).length > 0) throw new Error(`Restore target ${targetDir} is not empty`);
      const dirs = [...record.dirs].sort((a, b) => a.path.length - b.path.length);
      for (const dir of dirs) await mkdir(join(targetDir, dir.path), { recursive: true });
      await forEachBounded(record.files, (file) => file.size, async (file) => {
        const data = await readEntry(sessionId, file);
        const path = join(targetDir, file.path);
        await writeFile(path, data, { mode: file.mode });
        await chmod(path, file.mode);
        await utimes(path, new Date(), new Date(file.mtimeMs));
        if (owner) await lchown(path, owner.uid, owner.gid);
      });
      for (const link of record.symlinks) {
        const path = join(targetDir, link.path);
        await rm(path, { force: true, recursive: true });
        await symlink(link.target, path);
        if (owner) await lchown(path, owner.uid, owner.gid);
      }
      // Deepest first, after the files: a read-only folder must not stop writes into it.
      for (const dir of [...dirs].reverse()) {
        const path = join(targetDir, dir.path);
        await chmod(path, dir.mode);
        if (owner) await lchown(path, owner.uid, owner.gid);
      }
      if (owner) await lchown(targetDir, owner.uid, owner.gid);
      return true;
    });
  }

  async function deleteSnapshot(sessionId: string): Promise<boolean> {
    assertSessionId(sessionId);
    return locked(sessionId, async () => {
      const record = await readPointer(sessionId);
      const intent = await blobs.get(`${sessionId}:${INTENT}`);
      if (!record && !intent) return false;
      await dropAbandonedStaging(sessionId);
      if (record) {
        const keys = new Set(record.files.flatMap((file) => [keyAt(sessionId, file.loc, file.path), workspaceKey(sessionId, file.path)]));
        await forEachBounded([...keys], () => 0, (key) => blobs.remove(key));
      }
      await blobs.remove(`${sessionId}:${POINTER}`);
      await blobs.remove(`${sessionId}:${POINTER_NEXT}`);
      await blobs.removeTree?.(sessionId);
      return record !== null;
    });
  }

  async function readSnapshotFile(sessionId: string, path: string): Promise<Buffer | null> {
    assertSessionId(sessionId);
    const wanted = normalizeRelativePath(path);
    const record = await readPointer(sessionId);
    const entry = record?.files.find((file) => file.path === wanted);
    if (!record || !entry) return null;
    return readEntry(sessionId, entry);
  }

  async function listSnapshotFiles(sessionId: string): Promise<SnapshotListEntry[] | null> {
    assertSessionId(sessionId);
    const record = await readPointer(sessionId);
    if (!record) return null;
    const entries: SnapshotListEntry[] = [
      ...record.dirs.map((dir) => ({ path: dir.path, type: "dir" as const, size: 0, mode: dir.mode })),
      ...record.files.map((file) => ({ path: file.path, type: "file" as const, size: file.size, mode: file.mode, mtimeMs: file.mtimeMs })),
      ...record.symlinks.map((link) => ({ path: link.path, type: "symlink" as const, size: 0, target: link.target })),
    ];
    return entries.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  }

  async function readSnapshotInfo(sessionId: string): Promise<SnapshotInfo | null> {
    assertSessionId(sessionId);
    const record = await readPointer(sessionId);
    return record ? infoOf(record) : null;
  }

  return {
    snapshotWorkspace,
    restoreWorkspace,
    deleteSnapshot,
    readSnapshotFile,
    listSnapshotFiles,
    readSnapshotInfo,
    async dispose() {
      await storage?.dispose();
    },
  };
}
