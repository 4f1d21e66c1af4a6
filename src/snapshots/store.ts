import { isAbsolute, join, resolve } from "node:path";
import { Readable } from "node:stream";
import { normalizeRelativePath } from "../sandbox/snapshot-keys";
import { COARSE_MARGIN_MS } from "../sandbox/timestamps";
import { createHash, hash as oneShotHash } from "node:crypto";
import { mtimeMsOf, NEED, TAR_END, TarFormatError, tarHeaderInto, tarPadding, type TarEntry, type TarHeaderEntry, type TarParser } from "../sandbox/tar-stream";
import {
  displayName,
  entryPath,
  listTree,
  rawName,
  relativeLinkTarget,
  tarIn,
  tarOutDone,
  tarOutParsed,
  writeAll,
  type IoProcess,
  type ListedEntry,
  type WorkspaceIo,
} from "../sandbox/workspace-io";
import {
  createSnapshotStore,
  SnapshotCorruptError,
  SnapshotTooLargeError,
  type SnapshotInfo,
  type SnapshotListEntry,
  type SnapshotStoreOptions,
} from "./legacy";
import { driverObjects, forEachParallel, fsObjects, isObjectKey, PARALLEL, s3Objects, type ObjectStore } from "./objects";
import { Batcher, BufferPool } from "./batches";
import { PieceIndex } from "./piece-index";
import { Census } from "./census";
import { byName, decodeTree, encodeRows, sha256hex, treeOf, walkOrder, type Piece, type Tree, type TreeEntry } from "./tree";

/** One saved state of a workspace: immutable, named by its root tree's id. */
export interface WorkspaceVersion {
  /** Root tree id. */
  id: string;
  /** Files (hard links included) and their bytes (each hard-linked file once). */
  fileCount: number;
  bytes: number;
  /** Files whose bytes differ from what their name held in the base (all of them without a base). */
  changedFiles: number;
  changedBytes: number;
  /** Every object key this version needs: `packs/<id>` and `trees/<id>`. */
  objects: string[];
  /** Entries left out, each as "name: why". */
  skipped: string[];
  /** False when only entries changed since this folder's last save were listed (the rest kept as they were). */
  walked: boolean;
}

export interface VersionSaveOptions {
  /** A version this save starts from: files with its size and mtime are not read again, and its bytes are reused. */
  base?: string | null;
  /** Refuse (SnapshotTooLargeError) when the workspace's files add up to more. */
  maxBytes?: number;
  /** One line per entry left out or not readable. */
  onNote?: (line: string) => void;
  /** Called with the keys of every batch of new objects before any of them is written. */
  onWrite?: (keys: string[]) => Promise<void>;
}

export interface VersionStore {
  save(io: WorkspaceIo, options?: VersionSaveOptions): Promise<WorkspaceVersion>;
  /** Extracts a version into an empty workspace through `io`. */
  restore(versionId: string, io: WorkspaceIo, options?: { onNote?: (line: string) => void }): Promise<void>;
  /** True when the live tree matches the version by type, size, mtime, mode and link target. */
  verify(versionId: string, io: WorkspaceIo): Promise<boolean>;
  list(versionId: string): Promise<SnapshotListEntry[]>;
  read(versionId: string, path: string): Promise<Buffer | null>;
  /** A tar archive of the version. */
  archive(versionId: string): Promise<Readable>;
  objectsOf(versionId: string): Promise<string[]>;
  removeObjects(keys: string[]): Promise<void>;
  /** Per-session snapshots of formats 1 and 2 (`sessions/<id>/metadata.json`), still read. */
  legacy: {
    info(sessionId: string): Promise<SnapshotInfo | null>;
    restore(sessionId: string, io: WorkspaceIo, options?: { onNote?: (line: string) => void }): Promise<boolean>;
    list(sessionId: string): Promise<SnapshotListEntry[] | null>;
    read(sessionId: string, path: string): Promise<Buffer | null>;
    archive(sessionId: string): Promise<Readable | null>;
    delete(sessionId: string): Promise<boolean>;
  };
  dispose(): Promise<void>;
}

/** Files are cut into pieces of at most this size (bounded memory; big files dedupe by piece). */
const PIECE = 4 * 1024 * 1024;
/** A pack is written once it holds this much. */
const PACK_TARGET = 8 * 1024 * 1024;
/**
 * ... or this many pieces: folders wait in memory (decoded, with their text) until every pack they
 * name is sealed, and 8 MB of 100-byte files would keep 80,000 files' entries waiting.
 */
const PACK_PIECES = 4096;
/** A save from a base reads changed files in tar streams of at most this many (bounded memory). */
const CHANGED_BATCH = 4096;
/**
 * A save that lists changes reads at least this many bytes: it indexes every piece of the base (a
 * moved folder's files are found wherever they were); below it, only the changed folders' own.
 */
const INDEX_WHOLE_BASE_BYTES = 1024 * 1024;
/** Packs being written while the next one fills. */
const PACKS_IN_FLIGHT = 2;
const TREE_BATCH = 256;
const TREE_BATCH_BYTES = 4 * 1024 * 1024;
/** Decoded trees kept (by the size of their bytes); they are immutable, so never stale. */
const TREE_CACHE_BYTES = 32 * 1024 * 1024;
/** Packs kept while restoring or reading. */
const PACK_CACHE = 4;
/** Bytes gathered before a write to the restoring tar. */
const OUT_BATCH = 256 * 1024;
/** Written batches kept for the next (the stream holds one or two at a time). */
const OUT_POOL = 4;
/** Pieces this big are written to the restoring tar from their pack as they are, not copied into a batch. */
const DIRECT_PIECE = OUT_BATCH;

const VERSION_ID = /^[0-9a-f]{64}$/;

/** The wall clock went back more than this against the monotonic one since the last save: list everything. */
const CLOCK_SLACK_MS = 50;

/** When a folder was last saved, as which version: changes since then are what the next save lists. */
interface SaveMark {
  version: string;
  /** Wall clock (ms since the epoch) and monotonic clock (performance.now) when that save's walk began. */
  real: number;
  mono: number;
  /** Inode of folders of that version by path: every folder a walk listed; a first save, those unchanged all through its tar stream. */
  dirs?: Map<string, number>;
  /** That version's census, so the next save counts only the folders it changes. */
  census?: Census;
}

/** A mark keeps a census of up to this many trees and packs (about 100 bytes each). */
const MARK_CENSUS = 100_000;

/** The listing of changed entries found more than files changed in place: the full walk decides. */
class NeedsWalk extends Error {}

function assertVersionId(id: string): void {
  if (typeof id !== "string" || !VERSION_ID.test(id)) throw new Error(`Invalid workspace version id: ${JSON.stringify(id)}`);
}

function describeKind(kind: string): string {
  return { p: "a named pipe", s: "a socket", b: "a block device", c: "a character device", D: "a door", "6": "a named pipe", "3": "a character device", "4": "a block device" }[kind] ?? "not a regular file";
}


/** At most `n` calls at once. */
function limiter(n: number) {
  let active = 0;
  const queue: Array<() => void> = [];
  return async <T>(call: () => Promise<T>): Promise<T> => {
    if (active >= n) await new Promise<void>((go) => queue.push(go));
    active++;
    try {
      return await call();
    } finally {
      active--;
      queue.shift()?.();
    }
  };
}

const join2 = (parent: string, name: string) => (parent ? `${parent}/${name}` : name);

/** Whether a file read again holds other bytes than `old` (the last version's entry at its name): what a checkpoint counts as changed. */
function bytesDiffer(old: TreeEntry | undefined, size: number, pieces: Piece[]): boolean {
  if (old?.type !== "file" || old.size !== size || old.pieces.length !== pieces.length) return true;
  return pieces.some((piece, i) => piece.hash !== old.pieces[i]!.hash);
}

/** A folder being read, on a stack that follows a depth-first stream (find's or tar's order). */
interface Open {
  path: string;
  names: Set<string>;
}

/**
 * Where an entry goes in a depth-first stream: the index on the stack of
 * its parent folder (every folder above it was left by the stream) and its
 * name; null when it is out of that order or a second entry of one name.
 */
function parentOf<T extends Open>(stack: T[], path: string): { at: number; name: string } | null {
  const slash = path.lastIndexOf("/");
  const parentPath = slash < 0 ? "" : path.slice(0, slash);
  const name = path.slice(slash + 1);
  let at = stack.length - 1;
  while (at >= 0 && stack[at]!.path !== parentPath) at--;
  // A folder the stream already left, or never named: not a depth-first stream; the entry is dropped.
  if (at < 0 || name === "") return null;
  if (stack[at]!.names.has(name)) return null;
  return { at, name };
}

/** A file, folder or link while a save builds its folder's tree; files wait for their bytes. */
type Building =
  | { type: "file"; name: string; mode: number; mtime: string; size: number; pieces: Piece[] | null; links: number; dropped?: boolean }
  | { type: "dir"; name: string; mode: number; mtime: string; tree: string; dropped?: boolean }
  | { type: "symlink"; name: string; mtime: string; target: string; dropped?: boolean }
  | { type: "hardlink"; name: string; mode: number; mtime: string; target: string; dropped?: boolean };

interface Node extends Open {
  parent: Node | null;
  /** This folder's entry in its parent. */
  entry: Extract<Building, { type: "dir" }> | null;
  entries: Building[];
  /** Files waiting for bytes and sub-folders not yet encoded. */
  waiting: number;
  closed: boolean;
  /** Incremental saves: the base version's tree of this folder, loading. */
  base: Promise<BaseFolder | null> | null;
  /** The same once loaded (undefined while it loads). */
  before: BaseFolder | null | undefined;
}

interface BaseFolder {
  id: string;
  tree: Tree;
  byName: Map<string, TreeEntry>;
}

/** Synchronous work runs at most this long before the event loop gets a turn. */
const SLICE_MS = 8;
const breathe = () => new Promise<void>((resolve) => setImmediate(resolve));

export interface VersionStoreTuning {
  /**
   * A save from a base this very folder was saved as lists only entries whose
   * inode changed since that save's walk began, less this much: at least the
   * file system's timestamp step and the kernel's coarse clock tick
   * (changeTimeMarginMs), so nothing changed during or just before that walk
   * is missed. Unknown: two seconds.
   */
  changedMarginMs?: number;
  /** The wall clock (ms since the epoch) and a monotonic one (ms); tests set them. */
  clocks?: { wall(): number; monotonic(): number };
}

export function createVersionStore(options: SnapshotStoreOptions, tuning: VersionStoreTuning = {}): VersionStore {
  const changedMarginMs = tuning.changedMarginMs ?? COARSE_MARGIN_MS;
  const wall = tuning.clocks?.wall ?? Date.now;
  const monotonic = tuning.clocks?.monotonic ?? (() => performance.now());
  let objects: ObjectStore;
  if ("dataDir" in options) {
    if (!isAbsolute(options.dataDir)) throw new Error(`dataDir must be absolute: ${options.dataDir}`);
    objects = fsObjects(join(resolve(options.dataDir), "store"));
  } else if ("s3" in options) {
    const { prefix: _prefix, storePrefix = "store", ...s3 } = options.s3;
    for (const field of ["endpoint", "bucket", "region", "accessKeyId", "secretAccessKey"] as const) {
      if (!s3[field]) throw new Error(`S3 snapshot storage needs ${field}`);
    }
    objects = s3Objects(s3, storePrefix.split("/").filter(Boolean).join(":") || "store");
  } else {
    objects = driverObjects(options.driver, "store");
  }
  const legacyStore = createSnapshotStore(options);
  const reading = limiter(PARALLEL * 2);
  // Per folder (its io): the last save through it. Dropped by a restore into it and by a failed save.
  const marks = new WeakMap<WorkspaceIo, SaveMark>();

  // Decoded trees by id, least recently used first out.
  const treeCache = new Map<string, { tree: Tree; size: number }>();
  let treeCacheBytes = 0;
  const treeLoads = new Map<string, Promise<Tree>>();

  function cacheTree(id: string, tree: Tree, size: number): void {
    if (treeCache.has(id)) return;
    treeCache.set(id, { tree, size });
    treeCacheBytes += size;
    for (const [old, held] of treeCache) {
      if (treeCacheBytes <= TREE_CACHE_BYTES) break;
      treeCache.delete(old);
      treeCacheBytes -= held.size;
    }
  }

  let decoding = Promise.resolve();
  const decodeTurn = () => (decoding = decoding.then(breathe));

  /** A tree, checked against its id; a missing or damaged one is SnapshotCorruptError. */
  function loadTree(id: string): Promise<Tree> {
    const cached = treeCache.get(id);
    if (cached) {
      treeCache.delete(id);
      treeCache.set(id, cached);
      return Promise.resolve(cached.tree);
    }
    let loading = treeLoads.get(id);
    if (!loading) {
      loading = reading(async () => {
        const bytes = await objects.get(`trees/${id}`);
        if (!bytes) throw new SnapshotCorruptError(`Workspace version object trees/${id} is missing`);
        // Trees read at once are decoded one per event loop turn, not all in one go.
        await decodeTurn();
        if (sha256hex(bytes) !== id) throw new SnapshotCorruptError(`Workspace version object trees/${id} does not match its id`);
        let tree: Tree;
        try {
          tree = decodeTree(bytes);
        } catch (error) {
          throw new SnapshotCorruptError(`Workspace version object trees/${id} is not a valid tree: ${(error as Error).message}`);
        }
        cacheTree(id, tree, bytes.length * 3);
        return tree;
      }).finally(() => treeLoads.delete(id));
      treeLoads.set(id, loading);
    }
    return loading;
  }

  const byNames = new WeakMap<Tree, Map<string, TreeEntry>>();
  const namesOf = (tree: Tree) => {
    let map = byNames.get(tree);
    if (!map) {
      map = new Map();
      for (const entry of tree.entries) map.set(entry.name, entry);
      byNames.set(tree, map);
    }
    return map;
  };
  const entryMap = async (id: string) => namesOf(await loadTree(id));
  const baseFolder = async (id: string): Promise<BaseFolder> => {
    const tree = await loadTree(id);
    return { id, tree, byName: namesOf(tree) };
  };

  async function loadPack(id: string, into?: (size: number) => Buffer): Promise<Buffer> {
    const data = await reading(() => objects.get(`packs/${id}`, into));
    if (!data) throw new SnapshotCorruptError(`Workspace version object packs/${id} is missing`);
    return data;
  }

  /**
   * Packs in memory while a version is read: the last few, and the next ones
   * fetched ahead. With a pool, a pack's buffer is filled again once it leaves
   * (only for a reader whose every piece is copied before the next is asked for).
   */
  function packReader(order: string[] = [], pool?: BufferPool) {
    const held = new Map<string, Promise<Buffer>>();
    const position = new Map(order.map((id, at) => [id, at] as const));
    const into = pool && ((size: number) => (size <= pool.size ? pool.take() : Buffer.allocUnsafeSlow(size)));
    /** Packs read and still held: their pieces are served without waiting. */
    const loaded = new Map<string, Buffer>();
    const fetch = (id: string) => {
      let pack = held.get(id);
      if (pack) {
        held.delete(id);
      } else {
        const loading = loadPack(id, into);
        loading.then((data) => void (held.get(id) === loading && loaded.set(id, data)), () => {});
        pack = loading;
      }
      held.set(id, pack);
      while (held.size > PACK_CACHE + 2) {
        const [oldest, old] = held.entries().next().value!;
        held.delete(oldest);
        loaded.delete(oldest);
        if (pool) old.then((data) => pool.give(data), () => {});
      }
      return pack;
    };
    const check = (pack: Buffer, piece: Piece, raw: string) => {
      const data = pack.subarray(piece.offset, piece.offset + piece.length);
      if (data.length !== piece.length || sha256hex(data) !== piece.hash) throw new SnapshotCorruptError(`Workspace version has no intact copy of ${displayName(raw)}`);
      return data;
    };
    return {
      /** A piece's bytes, checked (`raw` names its file); a promise only while its pack is being read. */
      piece(piece: Piece, raw: string): Buffer | Promise<Buffer> {
        const id = piece.pack as string;
        const pack = fetch(id);
        const at = position.get(id);
        if (at !== undefined) for (let next = at + 1; next < Math.min(order.length, at + 3); next++) if (!held.has(order[next]!)) fetch(order[next]!);
        const data = loaded.get(id);
        return data ? check(data, piece, raw) : pack.then((data) => check(data, piece, raw));
      },
    };
  }

  async function save(io: WorkspaceIo, saveOptions: VersionSaveOptions = {}): Promise<WorkspaceVersion> {
    // Taken before anything is read: every change after this moment is found by the next save.
    const started = { real: wall(), mono: monotonic() };
    const mark = marks.get(io);
    marks.delete(io);
    const { version, dirs, census } = await saveFrom(io, saveOptions, mark, started.real);
    marks.set(io, { version: version.id, ...started, dirs, census: census && census.size <= MARK_CENSUS ? census : undefined });
    return version;
  }

  /** What a save begun at `real` (wall clock) lets the next one list changes from: less the file system's timestamp margin. */
  const listedFrom = (real: number) => real - changedMarginMs;

  /** The mark's save time less the margin, when the next save may list only what changed since; else undefined. */
  function changedSince(mark: SaveMark | undefined, base: string | null): number | undefined {
    if (!mark || base === null || mark.version !== base) return undefined;
    // A wall clock set back could give a later change an earlier ctime than the mark's: then everything is listed.
    if (wall() - mark.real < monotonic() - mark.mono - CLOCK_SLACK_MS) return undefined;
    return listedFrom(mark.real);
  }

  async function saveFrom(
    io: WorkspaceIo,
    saveOptions: VersionSaveOptions,
    mark: SaveMark | undefined,
    startedReal: number,
  ): Promise<{ version: WorkspaceVersion; dirs?: Map<string, number>; census?: Census }> {
    const note = saveOptions.onNote ?? (() => {});
    const onWrite = saveOptions.onWrite ?? (async () => {});
    const maxBytes = saveOptions.maxBytes ?? Number.POSITIVE_INFINITY;
    let base = saveOptions.base ?? null;
    if (base !== null) assertVersionId(base);
    if (base !== null) {
      try {
        await loadTree(base);
      } catch (error) {
        if (!(error instanceof SnapshotCorruptError)) throw error;
        note(`the base version could not be read (${error.message}); saving everything`);
        base = null;
      }
    }

    // -- What this save found.
    let changedFiles = 0;
    let changedBytes = 0;
    const skipped: string[] = [];
    const skip = (raw: string, why: string) => {
      skipped.push(`${displayName(raw)}: ${why}`);
      note(`not saved: ${JSON.stringify(displayName(raw))}: ${why}`);
    };
    /** Every folder position this save encodes (a walk and a first save encode them all): its objects, files and bytes. */
    let census = new Census();

    // -- The event loop gets a turn at least every SLICE_MS of work.
    let sliceEnd = performance.now() + SLICE_MS;
    // Undefined (nothing to wait for, no promise made) until the slice is used up.
    const pause = (): Promise<void> | undefined => {
      if (performance.now() < sliceEnd) return undefined;
      return breathe().then(() => void (sliceEnd = performance.now() + SLICE_MS));
    };

    // -- New objects: onWrite first, then the write.
    const packWrites: Array<Promise<void>> = [];
    const allWrites: Array<Promise<void>> = [];
    let treeBatch: Array<{ key: string; data: Buffer }> = [];
    let treeBatchBytes = 0;
    const knownTrees = new Set<string>();
    const flushTrees = async () => {
      if (treeBatch.length === 0) return;
      const batch = treeBatch;
      treeBatch = [];
      treeBatchBytes = 0;
      await onWrite(batch.map((item) => item.key));
      await forEachParallel(batch, (item) => objects.put(item.key, item.data));
    };
    const treesFull = () => treeBatch.length >= TREE_BATCH || treeBatchBytes >= TREE_BATCH_BYTES;

    // -- Packs: pieces by content hash; the base's and this save's are reused. A piece's bytes are
    // copied into the pack being filled as they are read (nothing else holds on to the input).
    // Pieces of the base by hash: its trees' own objects (decoded already), so a Map costs little; this
    // save's new pieces go into the compact index (a first save of 300,000 files makes 300,000).
    const baseIndex = new Map<string, Piece>();
    const index = new PieceIndex();
    const sealed: string[] = [];
    // Pack buffers whose write is done are filled again (a new one would cost its page faults again).
    const packBuffers = new BufferPool(PACK_TARGET, PACKS_IN_FLIGHT + 1);
    let pack: Buffer = packBuffers.take();
    let packBytes = 0;
    // Named by its pieces' hashes and lengths ("hash:length" lines), which fix its bytes; hashed once sealed.
    let packLines: string[] = [];
    /** Folders encoded but for the ids of packs still being filled. */
    let awaitingSeal: Array<{ node: Node; rows: string; packs: Array<string | number>; entries: TreeEntry[] }> = [];
    let awaitingEntries = 0;
    /** The pack being filled is sealed early once this many entries wait for it (a pack of deduped pieces may never fill). */
    const sealSoon = () => awaitingEntries >= PACK_PIECES;

    const indexTree = (tree: Tree) => {
      for (const entry of tree.entries) {
        if (entry.type !== "file") continue;
        for (const piece of entry.pieces) if (!baseIndex.has(piece.hash)) baseIndex.set(piece.hash, piece);
      }
    };

    async function seal(): Promise<void> {
      if (packBytes > 0) {
        const data = pack.subarray(0, packBytes);
        const id = createHash("sha256").update(packLines.join("\n")).digest("hex");
        sealed.push(id);
        const filled = pack;
        pack = packBuffers.take();
        packBytes = 0;
        packLines = [];
        const key = `packs/${id}`;
        await onWrite([key]);
        const write = objects.put(key, data).then(() => packBuffers.give(filled));
        write.catch(() => {});
        packWrites.push(write);
        allWrites.push(write);
        while (packWrites.length >= PACKS_IN_FLIGHT) await packWrites.shift();
      }
      const ready = awaitingSeal;
      awaitingSeal = [];
      awaitingEntries = 0;
      for (const item of ready) {
        finishRows(item.node, item.rows, item.packs, item.entries);
        const paused = pause();
        if (paused) await paused;
      }
    }

    let streamed = 0;
    /** The rest of the current tar entry's body, as pieces (read into the pack being filled). */
    async function readPieces(tar: { parser: TarParser; more(): Promise<void> }): Promise<{ pieces: Piece[]; size: number }> {
      const pieces: Piece[] = [];
      let size = 0;
      const { parser } = tar;
      while (parser.left > 0) {
        const length = Math.min(PIECE, parser.left);
        if (packBytes + length > PACK_TARGET || packLines.length >= PACK_PIECES) await seal();
        let digest: string;
        const whole = parser.body(length);
        if (whole !== NEED && whole !== null && whole.length === length) {
          // The whole piece in one view (most small files): one call hashes it.
          whole.copy(pack, packBytes);
          digest = oneShotHash("sha256", whole, "hex");
        } else {
          const hash = createHash("sha256");
          let have = 0;
          let part = whole;
          for (;;) {
            if (part === NEED) await tar.more();
            else if (part === null) throw new Error("tar body ended early");
            else {
              part.copy(pack, packBytes + have);
              hash.update(part);
              have += part.length;
            }
            if (have >= length) break;
            part = parser.body(length - have);
          }
          digest = hash.digest("hex");
        }
        size += length;
        streamed += length;
        if (streamed > maxBytes) throw new SnapshotTooLargeError(streamed, maxBytes);
        const known = baseIndex.get(digest) ?? index.get(digest);
        if (known) pieces.push(known);
        else {
          // Kept: the bytes already sit at the end of the pack.
          const piece: Piece = { pack: sealed.length, offset: packBytes, length, hash: digest };
          index.insert(piece);
          packBytes += length;
          packLines.push(`${digest}:${length}`);
          pieces.push(piece);
        }
        const paused = pause();
        if (paused) await paused;
      }
      return { pieces, size };
    }

    // -- Folders: encoded once closed and every file has its bytes; written once every pack they name is sealed.
    let rootId: string | null = null;
    const newNode = (path: string, parent: Node | null, entry: Node["entry"]): Node => ({
      path,
      names: new Set(),
      parent,
      entry,
      entries: [],
      waiting: 0,
      closed: false,
      base: null,
      before: undefined,
    });
    const root = newNode("", null, null);

    function settled(node: Node): void {
      if (node.closed && node.waiting === 0) encodeNode(node);
    }

    /** True when every entry is the base folder's own (same pieces, sub-trees, links, modes, mtimes). */
    function sameAsBase(node: Node): boolean {
      const before = node.before;
      if (!before) return false;
      if (node.entries.length !== before.byName.size) return false;
      for (const entry of node.entries) {
        if (entry.dropped) return false;
        const old = before.byName.get(entry.name);
        if (!old || old.type !== entry.type) return false;
        if (entry.type === "file") {
          const file = old as Extract<TreeEntry, { type: "file" }>;
          if (entry.pieces !== file.pieces || entry.mode !== file.mode || entry.mtime !== file.mtime || entry.size !== file.size) return false;
        } else if (entry.type === "dir") {
          const dir = old as Extract<TreeEntry, { type: "dir" }>;
          if (entry.tree !== dir.tree || entry.mode !== dir.mode || entry.mtime !== dir.mtime) return false;
        } else if (entry.type === "symlink") {
          const link = old as Extract<TreeEntry, { type: "symlink" }>;
          if (entry.target !== link.target || entry.mtime !== link.mtime) return false;
        } else {
          const link = old as Extract<TreeEntry, { type: "hardlink" }>;
          if (entry.target !== link.target || entry.mode !== link.mode || entry.mtime !== link.mtime) return false;
        }
      }
      return true;
    }

    function encodeNode(node: Node): void {
      if (sameAsBase(node)) {
        // Unchanged: the base's tree, as it is.
        const { id, tree } = node.before!;
        census.count(id, tree, 1);
        return finishNode(node, id);
      }
      const entries: TreeEntry[] = [];
      let unsealed = false;
      for (const entry of node.entries) {
        if (entry.dropped) continue;
        if (entry.type === "file") {
          const pieces = entry.pieces!.map((piece) => {
            if (typeof piece.pack !== "number") return piece;
            if (piece.pack < sealed.length) return { ...piece, pack: sealed[piece.pack]! };
            unsealed = true;
            return piece;
          });
          entries.push({ type: "file", name: entry.name, mode: entry.mode, mtime: entry.mtime, size: entry.size, pieces });
        } else if (entry.type === "dir") entries.push({ type: "dir", name: entry.name, mode: entry.mode, mtime: entry.mtime, tree: entry.tree });
        else if (entry.type === "symlink") entries.push({ type: "symlink", name: entry.name, mtime: entry.mtime, target: entry.target });
        else entries.push({ type: "hardlink", name: entry.name, mode: entry.mode, mtime: entry.mtime, target: entry.target });
      }
      entries.sort(byName);
      const { rows, packs } = encodeRows(entries);
      node.entries = [];
      node.names = new Set();
      node.before = null;
      // Held as its text (and its entries, for the tree cache) until the pack's id is known.
      if (unsealed) {
        awaitingSeal.push({ node, rows, packs, entries });
        awaitingEntries += entries.length;
      } else finishRows(node, rows, packs, entries);
    }

    function finishRows(node: Node, rows: string, refs: Array<string | number>, entries: TreeEntry[]): void {
      const packs = refs.map((pack) => (typeof pack === "number" ? sealed[pack]! : pack));
      const { id, bytes: data } = treeOf(packs, rows);
      // The next save starts from this one (the next turn's): its folders are then compared
      // without reading and decoding them again. Pieces in packs sealed since get their ids.
      for (const entry of entries) {
        if (entry.type !== "file") continue;
        for (const piece of entry.pieces) if (typeof piece.pack === "number") piece.pack = sealed[piece.pack]!;
      }
      cacheTree(id, { packs, entries }, data.length * 3);
      census.count(id, { packs, entries }, 1);
      if (!knownTrees.has(id)) {
        knownTrees.add(id);
        treeBatch.push({ key: `trees/${id}`, data });
        treeBatchBytes += data.length;
      }
      finishNode(node, id);
    }

    function finishNode(node: Node, id: string): void {
      node.entries = [];
      node.names = new Set();
      node.before = null;
      if (!node.parent) {
        rootId = id;
        return;
      }
      node.entry!.tree = id;
      node.parent.waiting--;
      settled(node.parent);
    }

    const stack: Node[] = [root];
    const closeFull = (node: Node) => {
      node.closed = true;
      settled(node);
    };

    // Set by streamTar while a tar process runs (typed wide: assigned only inside the helpers).
    let proc = null as IoProcess | null;
    let stopReading = null as (() => void) | null;
    /** Folders' inodes by path in the version this save makes, for the next save's mark. */
    let saveDirs: Map<string, number> | undefined;

    type TarReading = { parser: TarParser; more(): Promise<void> };
    /**
     * One tar stream, as the sandbox user, of the named entries (raw, relative) or of everything:
     * `visit` gets each entry with a usable name in turn and may read its bytes. Returns tar's notes.
     */
    async function streamTar(paths: string[] | undefined, visit: (entry: TarEntry, raw: string, tar: TarReading) => void | Promise<void>): Promise<string[]> {
      const tar = tarOutParsed(io, paths, paths ? { hardLinks: true } : { hardLinks: true, sorted: true });
      proc = tar.proc;
      stopReading = tar.stop;
      for (;;) {
        const entry = tar.parser.next();
        if (entry === NEED) {
          await tar.more();
          continue;
        }
        if (entry === null) break;
        const raw = entryPath(entry.path);
        if (raw === null) continue;
        // Awaited only when it returns a promise (reading a file's bytes): one await less per folder or link.
        const visiting = visit(entry, raw, tar);
        if (visiting) await visiting;
        if (sealSoon()) await seal();
        if (treesFull()) await flushTrees();
        const paused = pause();
        if (paused) await paused;
      }
      await tar.rest();
      const notes = await tarOutDone(tar.proc);
      proc = null;
      return notes;
    }

    /** streamTar of the names in `wanted`: `take` gets each once, taken out of `wanted` first; what is left was gone or unreadable. */
    function readNamed<T>(wanted: Map<string, T>, take: (entry: TarEntry, want: T, raw: string, tar: TarReading) => Promise<void>): Promise<string[]> {
      return streamTar([...wanted.keys()].sort(walkOrder), async (entry, raw, tar) => {
        const want = wanted.get(raw);
        if (want === undefined) return;
        wanted.delete(raw);
        await take(entry, want, raw, tar);
      });
    }

    /**
     * From a base this very folder was saved as (`mark`): only entries whose
     * inode changed since `since` are listed (ctime: every change of bytes,
     * mode, links or name sets it, and so does a folder's change of entries).
     * Files among them are read unless their size and mtime say otherwise; a
     * listed folder that is still the same folder (its inode as at the last
     * save) has its entries listed again, and one that is not (made or moved
     * there since) is listed whole. Only those folders and the folders above
     * them are encoded again; every other folder keeps the base's tree
     * without being walked. Special files, files with more names, very many
     * entries, a find error, or an entry that changed while it was read
     * throw NeedsWalk: the full walk decides.
     */
    async function saveChanged(baseId: string, mark: SaveMark, since: number): Promise<WorkspaceVersion> {
      const list = async (options: Parameters<typeof listTree>[2], into: ListedEntry[], limit: number) => {
        try {
          const { errors } = await listTree(
            io,
            (entry) => {
              if (entry.type === "other" || (entry.type === "file" && entry.links > 1) || into.length >= limit) throw new NeedsWalk();
              into.push(entry);
            },
            options,
          );
          if (errors.length > 0) throw new NeedsWalk();
        } catch (error) {
          throw error instanceof NeedsWalk ? error : new NeedsWalk();
        }
      };
      const listed: ListedEntry[] = [];
      await list({ changedSince: since }, listed, CHANGED_BATCH);

      // The base's folders on the way to each changed entry, copied to be changed.
      interface Folder {
        entries: TreeEntry[];
        at: Map<string, number>;
      }
      const folders = new Map<string, Folder>();
      const parentPath = (path: string) => path.slice(0, Math.max(0, path.lastIndexOf("/")));
      const baseName = (path: string) => path.slice(path.lastIndexOf("/") + 1);
      const under = (path: string, folder: string) => folder === "" || path.startsWith(`${folder}/`);
      const setFolder = (path: string, entries: TreeEntry[]): Folder => {
        entries.sort(byName);
        const folder: Folder = { entries, at: new Map(entries.map((entry, index) => [entry.name, index])) };
        folders.set(path, folder);
        return folder;
      };
      /** The id of the base's tree of a folder; null when the base has no folder there. */
      const baseTreeId = async (path: string): Promise<string | null> => {
        if (path === "") return baseId;
        const parent = await baseTreeId(parentPath(path));
        const entry = parent === null ? undefined : namesOf(await loadTree(parent)).get(baseName(path));
        return entry?.type === "dir" ? entry.tree : null;
      };
      const baseTree = async (path: string): Promise<Tree | null> => {
        const id = await baseTreeId(path);
        return id === null ? null : loadTree(id);
      };
      const folderAt = async (path: string): Promise<Folder> => {
        const known = folders.get(path);
        if (known) return known;
        const tree = await baseTree(path);
        if (!tree) throw new NeedsWalk();
        return setFolder(path, tree.entries.slice());
      };
      const dirs = new Map(mark.dirs);

      // Folders whose entries changed: the same folder (listed again, one level) or new there (listed whole).
      const listedDirs = listed.filter((entry) => entry.type === "dir");
      if (listedDirs.length > 0 && !mark.dirs) throw new NeedsWalk();
      const fresh: string[] = [];
      const again: string[] = [];
      for (const entry of listedDirs) {
        if (entry.path !== "" && fresh.some((folder) => under(entry.path, folder))) continue;
        const same = entry.path === "" || ((await baseTree(entry.path)) !== null && mark.dirs!.get(entry.path) === entry.ino);
        if (same) again.push(entry.path);
        else {
          fresh.push(entry.path);
          for (const path of [...dirs.keys()]) if (path === entry.path || under(path, entry.path)) dirs.delete(path);
        }
      }
      const inFresh = (path: string) => fresh.some((folder) => path === folder || under(path, folder));
      // Listed in find's order (a folder before what is in it), but a folder made anew takes in all below it.
      const relisted = again.filter((path) => !inFresh(path));
      const children: ListedEntry[] = [];
      const rest = CHANGED_BATCH * 4;
      if (relisted.length > 0) await list({ from: relisted, depth: 1 }, children, rest);
      const inside: ListedEntry[] = [];
      if (fresh.length > 0) await list({ from: fresh }, inside, rest);
      const listedPaths = new Set(listed.map((entry) => entry.path));

      const toRead = new Map<string, { folder: string; name: string; old: TreeEntry | undefined }>();
      let toReadBytes = 0;
      const changedFolders = new Set<string>();
      const leftOut: string[] = [];
      // The base's census, moved by the folders this save changes; whole base sub-trees no longer there leave it.
      const next = mark.census ? Census.copy(mark.census) : undefined;
      const goneTrees: string[] = [];
      for (const path of fresh) {
        const old = await baseTreeId(path);
        if (old !== null) goneTrees.push(old);
      }
      const entryFor = (entry: ListedEntry, old: TreeEntry | undefined): TreeEntry | null => {
        const name = baseName(entry.path);
        if (entry.type === "dir") {
          dirs.set(entry.path, entry.ino);
          return { type: "dir", name, mode: entry.mode & 0o1777, mtime: entry.mtime, tree: old?.type === "dir" ? old.tree : "" };
        }
        if (entry.type === "symlink") {
          const target = relativeLinkTarget(io.root, entry.path, entry.target ?? "");
          if (target === null) {
            // Noted once this listing is the save's (the walk notes it again otherwise).
            leftOut.push(entry.path);
            return null;
          }
          return { type: "symlink", name, mtime: entry.mtime, target };
        }
        const mode = entry.mode & 0o777;
        // rsync's quick check, but only for an mtime older than the last save's walk: a file written
        // again within the same clock tick as that walk read it may keep its size and mtime.
        if (old?.type === "file" && old.size === entry.size && old.mtime === entry.mtime && mtimeMsOf(entry.mtime) < since) return old.mode === mode ? old : { ...old, mode };
        toRead.set(entry.path, { folder: parentPath(entry.path), name, old });
        toReadBytes += entry.size;
        return { type: "file", name, mode, mtime: entry.mtime, size: entry.size, pieces: [] };
      };

      // Folders made (or moved) there since: every entry is new.
      const made = new Map<string, TreeEntry[]>(fresh.map((path) => [path, []]));
      for (const entry of inside) if (entry.type === "dir") made.set(entry.path, []);
      for (const entry of inside) {
        const into = made.get(parentPath(entry.path));
        // Every entry find lists under a folder comes after that folder.
        if (!into) throw new NeedsWalk();
        const built = entryFor(entry, undefined);
        if (built) into.push(built);
      }
      for (const [path, entries] of made) {
        setFolder(path, entries);
        changedFolders.add(path);
      }
      // Folders listed again: their entries as they are now; an entry not changed since the last save
      // was there then as it is (arriving at a name changes an inode), so it is the base's.
      const childrenOf = new Map<string, ListedEntry[]>(relisted.map((path) => [path, []]));
      for (const entry of children) childrenOf.get(parentPath(entry.path))?.push(entry);
      for (const [path, now] of childrenOf) {
        const before = await folderAt(path);
        const entries: TreeEntry[] = [];
        for (const child of now) {
          const index = before.at.get(baseName(child.path));
          const old = index === undefined ? undefined : before.entries[index];
          if (!listedPaths.has(child.path) && !made.has(child.path)) {
            if (!old || (old.type === "hardlink" ? "file" : old.type) !== child.type) throw new NeedsWalk();
            entries.push(old);
            continue;
          }
          const built = entryFor(child, made.has(child.path) ? undefined : old);
          if (built) entries.push(built);
        }
        // Folders gone from here (or no longer folders) take their own folders along: inodes, census.
        const current = new Map(entries.map((entry) => [entry.name, entry]));
        for (const entry of before.entries) {
          if (entry.type !== "dir" || current.get(entry.name)?.type === "dir") continue;
          const gone = join2(path, entry.name);
          for (const known of [...dirs.keys()]) if (known === gone || under(known, gone)) dirs.delete(known);
          goneTrees.push(entry.tree);
        }
        setFolder(path, entries);
        changedFolders.add(path);
      }
      // Entries changed in folders whose entries did not: files and links in place, a folder's own mode and mtime.
      for (const entry of listed) {
        const path = entry.path;
        if (path === "") continue;
        const parent = parentPath(path);
        if (childrenOf.has(parent) || inFresh(parent)) continue;
        const folder = await folderAt(parent);
        const index = folder.at.get(baseName(path));
        const old = index === undefined ? undefined : folder.entries[index];
        if (index === undefined || !old || old.type !== entry.type) throw new NeedsWalk();
        if (old.type === "dir") {
          dirs.set(path, entry.ino);
          folder.entries[index] = { ...old, mode: entry.mode & 0o1777, mtime: entry.mtime };
          changedFolders.add(parent);
          continue;
        }
        const built = entryFor(entry, old);
        if (!built) throw new NeedsWalk();
        if (built !== old) {
          folder.entries[index] = built;
          changedFolders.add(parent);
        }
      }

      if (toRead.size > 0) {
        if (toReadBytes >= INDEX_WHOLE_BASE_BYTES) {
          // Enough to read that files moved or copied from anywhere in the base are worth finding (not stored twice).
          await walkTrees(baseId, (tree, id) => {
            knownTrees.add(id);
            indexTree(tree);
          });
        } else {
          // The bytes the files had there before (a folder made anew: the base's folder of that name) are reused.
          for (const path of new Set([...toRead.values()].map((want) => want.folder))) {
            const tree = await baseTree(path);
            if (tree) indexTree(tree);
          }
        }
        try {
          const notes = await readNamed(toRead, async (entry, want, _raw, tar) => {
            // Replaced by something else, or a second name made, since it was listed.
            if (entry.type !== "file") throw new NeedsWalk();
            const { pieces, size } = await readPieces(tar);
            const folder = folders.get(want.folder)!;
            folder.entries[folder.at.get(want.name)!] = { type: "file", name: want.name, mode: entry.mode & 0o777, mtime: entry.mtime, size, pieces };
            changedFolders.add(want.folder);
            // Read again only because it was written close to the last save: not a change.
            if (bytesDiffer(want.old, size, pieces)) {
              changedFiles++;
              changedBytes += size;
            }
          });
          // Gone or unreadable since it was listed: its folder changed too.
          if (toRead.size > 0 || notes.length > 0) throw new NeedsWalk();
        } catch (error) {
          if (proc) {
            stopReading?.();
            proc.kill();
            await proc.done;
            proc = null;
          }
          throw error;
        }
        await seal();
      }

      // Changed folders and every folder above them, the deepest first, each encoded once its sub-folders are.
      const dirty = new Set<string>();
      for (let path of changedFolders) {
        for (;;) {
          if (dirty.has(path)) break;
          dirty.add(path);
          if (path === "") break;
          path = parentPath(path);
        }
      }
      const depth = (path: string) => (path === "" ? 0 : path.split("/").length);
      let newRoot = baseId;
      for (const path of [...dirty].sort((a, b) => depth(b) - depth(a))) {
        const folder = await folderAt(path);
        const entries = folder.entries.map((entry) =>
          entry.type === "file" && entry.pieces.some((piece) => typeof piece.pack === "number")
            ? { ...entry, pieces: entry.pieces.map((piece) => (typeof piece.pack === "number" ? { ...piece, pack: sealed[piece.pack]! } : piece)) }
            : entry,
        );
        const { rows, packs } = encodeRows(entries);
        const { id, bytes: data } = treeOf(packs as string[], rows);
        cacheTree(id, { packs: packs as string[], entries }, data.length * 3);
        if (next) {
          // A folder made anew has no position in the base to give back (its old sub-tree left whole).
          const old = inFresh(path) ? null : await baseTreeId(path);
          if (old !== null) next.count(old, await loadTree(old), -1);
          next.count(id, { packs: packs as string[], entries }, 1);
        }
        if (!knownTrees.has(id)) {
          knownTrees.add(id);
          treeBatch.push({ key: `trees/${id}`, data });
          treeBatchBytes += data.length;
          if (treesFull()) await flushTrees();
        }
        if (path === "") newRoot = id;
        else {
          const parent = await folderAt(parentPath(path));
          const index = parent.at.get(baseName(path));
          const entry = index === undefined ? undefined : parent.entries[index];
          // Listed inside a folder that a later listing no longer finds there: changed meanwhile.
          if (entry?.type !== "dir") throw new NeedsWalk();
          parent.entries[index!] = { ...entry, tree: id };
        }
      }
      await flushTrees();
      await Promise.all(allWrites);

      let counted = next;
      if (counted) for (const id of goneTrees) await countTree(counted, id, -1);
      // Without the base's census: every folder of the new version counted once (and kept for the next save).
      else counted = await countTree(new Census(), newRoot, 1);
      if (counted.bytes > maxBytes) throw new SnapshotTooLargeError(counted.bytes, maxBytes);
      for (const path of leftOut) skip(path, "a symlink leading outside the workspace");
      saveDirs = mark.dirs ? dirs : undefined;
      census = counted;
      return { id: newRoot, fileCount: counted.fileCount, bytes: counted.bytes, changedFiles, changedBytes, objects: counted.objects(), skipped, walked: false };
    }

    try {
      const since = changedSince(mark, base);
      if (since !== undefined) {
        try {
          return { version: await saveChanged(base!, mark!, since), dirs: saveDirs, census };
        } catch (error) {
          if (!(error instanceof NeedsWalk)) throw error;
          // Bytes already read stay in the pack being filled; the walk reuses them by their hashes.
          changedFiles = 0;
          changedBytes = 0;
          streamed = 0;
        }
      }
      if (base === null) {
        // -- No base: one sorted tar stream of everything, as the sandbox user, parsed as it arrives.
        const notes = await streamTar(undefined, (entry, raw, tar) => {
          const placed = parentOf(stack, raw);
          if (!placed) {
            skip(raw, "out of order or twice in the stream");
            return;
          }
          while (stack.length - 1 > placed.at) closeFull(stack.pop()!);
          const parent = stack[placed.at]!;
          const name = placed.name;
          parent.names.add(name);
          if (entry.type === "dir") {
            const dirEntry = { type: "dir" as const, name, mode: entry.mode & 0o1777, mtime: entry.mtime, tree: "" };
            parent.entries.push(dirEntry);
            parent.waiting++;
            stack.push(newNode(raw, parent, dirEntry));
          } else if (entry.type === "file") {
            return readPieces(tar).then(({ pieces, size }) => {
              parent.entries.push({ type: "file", name, mode: entry.mode & 0o777, mtime: entry.mtime, size, pieces, links: 1 });
              changedFiles++;
              changedBytes += size;
            });
          } else if (entry.type === "symlink") {
            const target = relativeLinkTarget(io.root, raw, entry.linkpath);
            if (target === null) skip(raw, "a symlink leading outside the workspace");
            else parent.entries.push({ type: "symlink", name, mtime: entry.mtime, target });
          } else if (entry.type === "hardlink") {
            const target = entryPath(entry.linkpath);
            if (target === null) skip(raw, "a hard link to a name outside the workspace");
            else parent.entries.push({ type: "hardlink", name, mode: entry.mode & 0o777, mtime: entry.mtime, target });
          } else skip(raw, describeKind(entry.typeflag));
        });
        for (const line of notes) note(`not saved: ${line}`);
        // The tar stream names no inodes; the folders the next save may trust are listed after it.
        const folders = unchangedFolders(io, listedFrom(startedReal));
        while (stack.length > 0) closeFull(stack.pop()!);
        saveDirs = await folders;
      } else {
        // -- From a base: a stat walk; only files whose size or mtime changed are read.
        const baseId = base;
        // Trees of the base are stored already: an unchanged folder encodes to one of them and is not written again.
        knownTrees.add(baseId);
        const loadBase = (node: Node, folder: Promise<BaseFolder | null>) => {
          node.base = folder;
          folder.then(
            (value) => void (node.before = value),
            () => {},
          );
        };
        loadBase(root, baseFolder(baseId));
        type Changed = Map<string, { node: Node; entry: Extract<Building, { type: "file" }> }>;
        // Changed files are read in batches as their folders close, so a turn that added 300,000 files
        // never holds them all; files with more than one name wait for one last batch, so tar names a
        // second name of the same file as a link to the first.
        let changed: Changed = new Map();
        const linked: Changed = new Map();
        let listedBytes = 0;
        /** Closes a folder whose base tree is loaded; a promise only when trees must be written first. */
        const closeListed = (node: Node): void | Promise<void> => {
          const before = node.before ?? null;
          for (const entry of node.entries) {
            if (entry.type !== "file") continue;
            const old = before?.byName.get(entry.name);
            // rsync's quick check; hard-linked files are read again so their links are found.
            if (old?.type === "file" && old.size === entry.size && old.mtime === entry.mtime && entry.links === 1) {
              entry.pieces = old.pieces;
            } else {
              (entry.links > 1 ? linked : changed).set(join2(node.path, entry.name), { node, entry });
              node.waiting++;
            }
          }
          node.closed = true;
          settled(node);
          if (changed.size >= CHANGED_BATCH) {
            const batch = changed;
            changed = new Map();
            return readChanged(batch).then(() => (treesFull() ? flushTrees() : undefined));
          }
          if (treesFull()) return flushTrees();
        };
        /** Synchronous unless a folder it closes waits for its base tree or for tree writes. */
        const onListed = (listed: ListedEntry): void | Promise<void> => {
          if (listed.type === "file") {
            listedBytes += listed.size;
            if (listedBytes > maxBytes) throw new SnapshotTooLargeError(listedBytes, maxBytes);
            // Counted once even when this entry is handled again after a wait.
            listedBytes -= listed.size;
          }
          const placed = parentOf(stack, listed.path);
          if (!placed) {
            skip(listed.path, "out of order or twice in the listing");
            return;
          }
          while (stack.length - 1 > placed.at) {
            const node = stack.at(-1)!;
            if (node.before === undefined) return node.base!.then(() => onListed(listed));
            stack.pop();
            const writing = closeListed(node);
            if (writing) return writing.then(() => onListed(listed));
          }
          if (listed.type === "file") listedBytes += listed.size;
          const parent = stack[placed.at]!;
          const name = placed.name;
          parent.names.add(name);
          if (listed.type === "dir") {
            const dirEntry = { type: "dir" as const, name, mode: listed.mode & 0o1777, mtime: listed.mtime, tree: "" };
            parent.entries.push(dirEntry);
            parent.waiting++;
            const node = newNode(listed.path, parent, dirEntry);
            const parentBase = parent.base;
            if (parentBase) {
              loadBase(
                node,
                parentBase.then((folder) => {
                  const old = folder?.byName.get(name);
                  if (old?.type !== "dir") return null;
                  knownTrees.add(old.tree);
                  return baseFolder(old.tree);
                }),
              );
            } else node.before = null;
            stack.push(node);
          } else if (listed.type === "file") {
            parent.entries.push({ type: "file", name, mode: listed.mode & 0o777, mtime: listed.mtime, size: listed.size, pieces: null, links: listed.links });
          } else if (listed.type === "symlink") {
            const target = relativeLinkTarget(io.root, listed.path, listed.target ?? "");
            if (target === null) skip(listed.path, "a symlink leading outside the workspace");
            else parent.entries.push({ type: "symlink", name, mtime: listed.mtime, target });
          } else skip(listed.path, describeKind(listed.kind));
          if (performance.now() >= sliceEnd) return pause();
        };
        let baseIndexed = false;
        /** Reads the bytes of these changed files (one tar stream) and settles their folders. */
        async function readChanged(batch: Changed): Promise<void> {
          if (batch.size === 0) return;
          if (!baseIndexed) {
            baseIndexed = true;
            // Bytes of files moved or copied from anywhere in the base are reused too.
            await walkTrees(baseId, (tree, id) => {
              knownTrees.add(id);
              indexTree(tree);
            });
          }
          const notes = await readNamed(batch, async (entry, { node, entry: file }, raw, tar) => {
            if (entry.type === "file") {
              const { pieces, size } = await readPieces(tar);
              Object.assign(file, { mode: entry.mode & 0o777, mtime: entry.mtime, size, pieces });
              // Hard-linked files are read on every walk; only other bytes than before count.
              if (bytesDiffer(node.before?.byName.get(file.name), size, pieces)) {
                changedFiles++;
                changedBytes += size;
              }
            } else if (entry.type === "hardlink" && entryPath(entry.linkpath) !== null) {
              const index = node.entries.indexOf(file);
              node.entries[index] = { type: "hardlink", name: file.name, mode: entry.mode & 0o777, mtime: entry.mtime, target: entryPath(entry.linkpath)! };
            } else {
              file.dropped = true;
              skip(raw, "changed into something else while it was saved");
            }
            node.waiting--;
            settled(node);
          });
          for (const line of notes) note(`not saved: ${line}`);
          for (const [raw, { node, entry: file }] of batch) {
            file.dropped = true;
            skip(raw, "gone or unreadable when its bytes were read");
            node.waiting--;
            settled(node);
          }
        }
        const walkedDirs = new Map<string, number>();
        const { errors } = await listTree(io, (listed) => {
          if (listed.type === "dir") walkedDirs.set(listed.path, listed.ino);
          return onListed(listed);
        });
        saveDirs = walkedDirs;
        for (const line of errors) note(`not saved: ${line}`);
        while (stack.length > 0) {
          const node = stack.at(-1)!;
          await node.base;
          stack.pop();
          await closeListed(node);
        }

        await readChanged(changed);
        await readChanged(linked);
      }
      await seal();
      if (rootId === null) throw new Error("Saving the workspace failed: its folders did not all close");
      await flushTrees();
      await Promise.all(allWrites);
    } catch (error) {
      let failed: unknown = error;
      stopReading?.();
      if (proc) {
        proc.kill();
        const { stderr } = await proc.done;
        // A tool that could not start or broke off says why better than the stream it left.
        if (error instanceof TarFormatError || (error as NodeJS.ErrnoException)?.code === "ERR_STREAM_PREMATURE_CLOSE") {
          const why = stderr.trim().split("\n").slice(-3).join("; ") || (error as Error).message;
          failed = new Error(`Reading the workspace failed: ${why}`, { cause: error });
        }
      }
      await Promise.allSettled(allWrites);
      throw failed;
    }
    const version: WorkspaceVersion = {
      id: rootId,
      fileCount: census.fileCount,
      bytes: census.bytes,
      changedFiles,
      changedBytes,
      objects: census.objects(),
      skipped,
      walked: true,
    };
    return { version, dirs: saveDirs, census };
  }

  /**
   * The folders (inode by path) whose inode has not changed since `since`: each was at its path with
   * the same entries all through a save that began after it (moving a folder, or adding, removing or
   * renaming an entry in it, changes its ctime), so what that save read there is that inode's. A
   * folder changed meanwhile is left out: the next save lists it whole. Undefined when the listing
   * failed (the next save then walks everything).
   */
  async function unchangedFolders(io: WorkspaceIo, since: number): Promise<Map<string, number> | undefined> {
    const dirs = new Map<string, number>();
    try {
      const { errors } = await listTree(io, (entry) => void (entry.type === "dir" && dirs.set(entry.path, entry.ino)), { foldersUnchangedSince: since });
      return errors.length > 0 ? undefined : dirs;
    } catch {
      return undefined;
    }
  }

  /** Counts every folder position of a (sub-)tree into a census (1) or out of it (-1); trees are cached. */
  async function countTree(census: Census, treeId: string, by: 1 | -1): Promise<Census> {
    const stack = [treeId];
    while (stack.length > 0) {
      const id = stack.pop()!;
      const tree = await loadTree(id);
      census.count(id, tree, by);
      for (const entry of tree.entries) if (entry.type === "dir") stack.push(entry.tree);
    }
    return census;
  }

  /** Calls `visit` for every tree of a version, parents before children. */
  async function walkTrees(versionId: string, visit: (tree: Tree, id: string) => void): Promise<void> {
    const seen = new Set<string>();
    const pending: Array<Promise<void>> = [];
    const walk = async (id: string): Promise<void> => {
      if (seen.has(id)) return;
      seen.add(id);
      const tree = await loadTree(id);
      visit(tree, id);
      for (const entry of tree.entries) if (entry.type === "dir") start(entry.tree);
    };
    const start = (id: string) => {
      const walking = walk(id);
      walking.catch(() => {}); // awaited below, in order; the first failure is thrown there
      pending.push(walking);
    };
    start(versionId);
    for (let at = 0; at < pending.length; at++) await pending[at];
  }

  /** The version's entries in archive order (a folder, then what is in it), a run at a time: one await per folder, not per entry. */
  async function* entriesOf(versionId: string): AsyncGenerator<Array<{ path: string; entry: TreeEntry }>> {
    const rootTree = await loadTree(versionId);
    const stack: Array<{ prefix: string; entries: TreeEntry[]; at: number }> = [{ prefix: "", entries: rootTree.entries, at: 0 }];
    while (stack.length > 0) {
      const top = stack.at(-1)!;
      if (top.at >= top.entries.length) {
        stack.pop();
        continue;
      }
      // Up to and with the next folder, whose own entries come next.
      const run: Array<{ path: string; entry: TreeEntry }> = [];
      let folder: { path: string; tree: string } | null = null;
      while (top.at < top.entries.length && !folder) {
        const entry = top.entries[top.at++]!;
        const path = join2(top.prefix, entry.name);
        run.push({ path, entry });
        if (entry.type === "dir") folder = { path, tree: entry.tree };
      }
      yield run;
      if (folder) {
        const tree = await loadTree(folder.tree);
        // Fetch the sub-folders' trees ahead.
        for (const child of tree.entries) if (child.type === "dir") void loadTree(child.tree).catch(() => {});
        stack.push({ prefix: folder.path, entries: tree.entries, at: 0 });
      }
    }
  }

  /** The version as a tar stream: each folder, then what is in it. */
  async function* archiveOf(versionId: string, note: (line: string) => void, pool?: BufferPool): AsyncGenerator<Buffer> {
    const order: string[] = [];
    const inOrder = new Set<string>();
    const linkTargets = new Set<string>();
    for await (const run of entriesOf(versionId)) {
      for (const { entry } of run) {
        if (entry.type === "file") {
          for (const piece of entry.pieces) if (!inOrder.has(piece.pack as string)) (inOrder.add(piece.pack as string), order.push(piece.pack as string));
        } else if (entry.type === "hardlink") linkTargets.add(entry.target);
      }
    }
    // Pieces are copied into batches as they come only with a pool of those.
    const packs = packReader(order, pool && new BufferPool(PACK_TARGET, PACK_CACHE + 3));
    const written = new Set<string>();
    const batches = new Batcher(OUT_BATCH, pool);
    const put = (data: Buffer) => batches.put(data);
    const room = (length: number) => batches.room(length);
    const header = (entry: TarHeaderEntry) => tarHeaderInto(entry, room);
    /** A file's header, pieces and padding; a promise only when a pack has to be read first. */
    const putFile = (path: string, entry: Extract<TreeEntry, { type: "file" }>, mode = entry.mode, mtime = entry.mtime): Promise<void> | undefined => {
      header({ type: "file", path, mode, mtime, size: entry.size });
      for (let at = 0; at < entry.pieces.length; at++) {
        const data = packs.piece(entry.pieces[at]!, path);
        if (data instanceof Promise) {
          return (async () => {
            put(await data);
            for (let next = at + 1; next < entry.pieces.length; next++) put(await packs.piece(entry.pieces[next]!, path));
            put(tarPadding(entry.size));
          })();
        }
        put(data);
      }
      put(tarPadding(entry.size));
      return undefined;
    };
    /**
     * A file with big pieces, written with a pool: each big piece goes out as a view of its pack, after
     * what waits before it. The reader writes it before it asks for more, and a pack's buffer is filled
     * again only when a later piece is asked for, so the view is never read after that.
     */
    async function* putDirect(path: string, entry: Extract<TreeEntry, { type: "file" }>): AsyncGenerator<Buffer> {
      header({ type: "file", path, mode: entry.mode, mtime: entry.mtime, size: entry.size });
      for (const piece of entry.pieces) {
        const data = await packs.piece(piece, path);
        if (data.length < DIRECT_PIECE) {
          put(data);
          continue;
        }
        yield* batches.take();
        yield data;
      }
      put(tarPadding(entry.size));
    }
    for await (const run of entriesOf(versionId)) {
      for (const { path, entry } of run) {
        if (entry.type === "dir") header({ type: "dir", path, mode: entry.mode, mtime: entry.mtime });
        else if (entry.type === "symlink") header({ type: "symlink", path, mode: 0o777, mtime: entry.mtime, linkpath: entry.target });
        else if (entry.type === "file") {
          if (pool && entry.pieces.some((piece) => piece.length >= DIRECT_PIECE)) yield* putDirect(path, entry);
          else {
            const reading = putFile(path, entry);
            if (reading) await reading;
          }
          if (linkTargets.has(path)) written.add(path);
        } else if (written.has(entry.target)) {
          header({ type: "hardlink", path, mode: entry.mode, mtime: entry.mtime, linkpath: entry.target });
        } else {
          // Its first name is not in the archive before it: a copy keeps the bytes.
          const target = await lookup(versionId, entry.target);
          if (target?.type === "file") await putFile(path, target, entry.mode, entry.mtime);
          else note(`${JSON.stringify(displayName(path))}: a hard link to a file the version does not hold`);
        }
        if (batches.full) yield* batches.take();
      }
    }
    put(TAR_END);
    yield* batches.take();
  }

  /** The entry at a relative raw path, or null. */
  async function lookup(versionId: string, raw: string): Promise<TreeEntry | null> {
    let tree = await loadTree(versionId);
    const parts = raw.split("/");
    for (let at = 0; at < parts.length; at++) {
      const entry = tree.entries.find((e) => e.name === parts[at]);
      if (!entry) return null;
      if (at === parts.length - 1) return entry;
      if (entry.type !== "dir") return null;
      tree = await loadTree(entry.tree);
    }
    return null;
  }

  async function restore(versionId: string, io: WorkspaceIo, restoreOptions: { onNote?: (line: string) => void } = {}): Promise<void> {
    assertVersionId(versionId);
    // The folder's files are written anew: the next save through it walks everything.
    marks.delete(io);
    const note = restoreOptions.onNote ?? (() => {});
    await loadTree(versionId);
    const pool = new BufferPool(2 * OUT_BATCH, OUT_POOL);
    const notes = await tarIn(io, async (stdin) => {
      for await (const data of archiveOf(versionId, (line) => note(`not restored: ${line}`), pool)) {
        if (pool.owns(data)) await writeAll(stdin, data, () => pool.give(data));
        // A view of a pack (a big piece): written out before the next is asked for, which may refill that pack's buffer.
        else await new Promise<void>((resolve, reject) => void writeAll(stdin, data, resolve).catch(reject));
      }
    });
    for (const line of notes) note(`not restored: ${line}`);
  }

  async function verify(versionId: string, io: WorkspaceIo): Promise<boolean> {
    assertVersionId(versionId);
    const since = changedSince(marks.get(io), versionId);
    if (since !== undefined) {
      const quick = await verifyChanged(versionId, io, since).catch((error) => {
        if (error instanceof NeedsWalk) return undefined;
        throw error;
      });
      if (quick !== undefined) return quick;
    }
    return verifyWalking(versionId, io);
  }

  /**
   * Verify of the folder last saved as this version: only entries changed
   * since that save are compared. NeedsWalk when a folder (or a file with
   * more names, or a special file) is among them.
   */
  async function verifyChanged(versionId: string, io: WorkspaceIo, since: number): Promise<boolean> {
    const listed: ListedEntry[] = [];
    const { errors } = await listTree(
      io,
      (entry) => {
        if ((entry.type !== "file" && entry.type !== "symlink") || entry.links > 1 || listed.length >= CHANGED_BATCH) throw new NeedsWalk();
        listed.push(entry);
      },
      { changedSince: since },
    );
    if (errors.length > 0) throw new NeedsWalk();
    for (const entry of listed) {
      const slash = entry.path.lastIndexOf("/");
      let tree = await loadTree(versionId);
      for (const name of slash < 0 ? [] : entry.path.slice(0, slash).split("/")) {
        const dir = namesOf(tree).get(name);
        if (dir?.type !== "dir") return false;
        tree = await loadTree(dir.tree);
      }
      const want = namesOf(tree).get(entry.path.slice(slash + 1));
      if (entry.type === "symlink") {
        if (want?.type !== "symlink" || want.mtime !== entry.mtime || want.target !== relativeLinkTarget(io.root, entry.path, entry.target ?? "")) return false;
      } else if (want?.type !== "file" || want.size !== entry.size || want.mode !== (entry.mode & 0o777) || want.mtime !== entry.mtime) return false;
    }
    return true;
  }

  async function verifyWalking(versionId: string, io: WorkspaceIo): Promise<boolean> {
    interface Live extends Open {
      expected: Promise<Map<string, TreeEntry> | null>;
      /** The same once loaded (undefined while it loads). */
      known: Map<string, TreeEntry> | null | undefined;
      count: number;
    }
    const mismatch = new Error("mismatch");
    const live = (path: string, expected: Promise<Map<string, TreeEntry> | null>): Live => {
      const node: Live = { path, names: new Set(), expected, known: undefined, count: 0 };
      expected.then(
        (value) => void (node.known = value),
        () => {},
      );
      return node;
    };
    const stack: Live[] = [live("", entryMap(versionId))];
    const same = (listed: ListedEntry, want: TreeEntry | undefined): boolean => {
      if (!want) return false;
      if (listed.type === "dir") return want.type === "dir" && want.mode === (listed.mode & 0o7777) && want.mtime === listed.mtime;
      if (listed.type === "file") {
        if (want.type === "hardlink") return want.mode === (listed.mode & 0o7777) && want.mtime === listed.mtime;
        return want.type === "file" && want.size === listed.size && want.mode === (listed.mode & 0o7777) && want.mtime === listed.mtime;
      }
      if (listed.type === "symlink") return want.type === "symlink" && want.target === relativeLinkTarget(io.root, listed.path, listed.target ?? "") && want.mtime === listed.mtime;
      return false;
    };
    const close = (node: Live) => {
      if (!node.known || node.known.size !== node.count) throw mismatch;
    };
    let sliceEnd = performance.now() + SLICE_MS;
    /** Synchronous unless it must wait for a tree (or give the event loop a turn). */
    const onListed = (listed: ListedEntry): void | Promise<void> => {
      const placed = parentOf(stack, listed.path);
      if (!placed) throw mismatch;
      // Each entry is compared once its folder's tree is there; the stack only holds folders being listed.
      for (let at = stack.length - 1; at >= placed.at; at--) {
        if (stack[at]!.known === undefined) return stack[at]!.expected.then(() => onListed(listed));
      }
      while (stack.length - 1 > placed.at) close(stack.pop()!);
      const parent = stack[placed.at]!;
      parent.names.add(placed.name);
      parent.count++;
      const want = parent.known?.get(placed.name);
      if (!same(listed, want)) throw mismatch;
      if (listed.type === "dir") stack.push(live(listed.path, want?.type === "dir" ? entryMap(want.tree) : Promise.resolve(null)));
      if (performance.now() >= sliceEnd) {
        sliceEnd = performance.now() + SLICE_MS;
        return breathe();
      }
    };
    try {
      const { errors } = await listTree(io, onListed);
      if (errors.length > 0) return false;
      while (stack.length > 0) {
        await stack.at(-1)!.expected;
        close(stack.pop()!);
      }
      return true;
    } catch (error) {
      if (error === mismatch) return false;
      throw error;
    }
  }

  async function list(versionId: string): Promise<SnapshotListEntry[]> {
    assertVersionId(versionId);
    const sizes = new Map<string, number>();
    const out: SnapshotListEntry[] = [];
    for await (const run of entriesOf(versionId)) {
      for (const { path, entry } of run) {
        const shown = displayName(path);
        if (entry.type === "file") {
          sizes.set(path, entry.size);
          out.push({ path: shown, type: "file", size: entry.size, mode: entry.mode, mtimeMs: mtimeMsOf(entry.mtime) });
        } else if (entry.type === "hardlink") out.push({ path: shown, type: "file", size: sizes.get(entry.target) ?? 0, mode: entry.mode, mtimeMs: mtimeMsOf(entry.mtime) });
        else if (entry.type === "dir") out.push({ path: shown, type: "dir", size: 0, mode: entry.mode });
        else out.push({ path: shown, type: "symlink", size: 0, target: displayName(entry.target) });
      }
    }
    return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  }

  async function read(versionId: string, path: string): Promise<Buffer | null> {
    assertVersionId(versionId);
    const raw = rawName(normalizeRelativePath(path));
    let entry = await lookup(versionId, raw);
    if (entry?.type === "hardlink") entry = await lookup(versionId, entry.target);
    if (entry?.type !== "file") return null;
    const packs = packReader();
    const parts: Buffer[] = [];
    for (const piece of entry.pieces) parts.push(await packs.piece(piece, raw));
    return Buffer.concat(parts);
  }

  async function archive(versionId: string): Promise<Readable> {
    assertVersionId(versionId);
    await loadTree(versionId);
    return Readable.from(archiveOf(versionId, () => {}), { objectMode: false });
  }

  async function objectsOf(versionId: string): Promise<string[]> {
    assertVersionId(versionId);
    const packs = new Set<string>();
    const trees: string[] = [];
    await walkTrees(versionId, (tree, id) => {
      trees.push(`trees/${id}`);
      for (const pack of tree.packs) packs.add(`packs/${pack}`);
    });
    return [...packs, ...trees];
  }

  async function removeObjects(keys: string[]): Promise<void> {
    for (const key of keys) if (!isObjectKey(key)) throw new Error(`Invalid object key: ${JSON.stringify(key)}`);
    await forEachParallel([...new Set(keys)], async (key) => {
      if (key.startsWith("trees/")) {
        const held = treeCache.get(key.slice(6));
        if (held) {
          treeCache.delete(key.slice(6));
          treeCacheBytes -= held.size;
        }
      }
      await objects.remove(key);
    });
  }

  return {
    save,
    restore,
    verify,
    list,
    read,
    archive,
    objectsOf,
    removeObjects,
    legacy: {
      info: (sessionId) => legacyStore.readSnapshotInfo(sessionId),
      restore: (sessionId, io, restoreOptions) => legacyStore.restoreWorkspace(sessionId, io, restoreOptions),
      list: (sessionId) => legacyStore.listSnapshotFiles(sessionId),
      read: (sessionId, path) => legacyStore.readSnapshotFile(sessionId, path),
      archive: (sessionId) => legacyStore.archive(sessionId),
      delete: (sessionId) => legacyStore.deleteSnapshot(sessionId),
    },
    async dispose() {
      await objects.dispose();
      await legacyStore.dispose();
    },
  };
}
