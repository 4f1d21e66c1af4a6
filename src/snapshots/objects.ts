import { randomBytes } from "node:crypto";
import { mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { exponentialDelay, retry } from "../retry";
import { createStorage, type Driver, type Storage } from "unstorage";
import s3Driver from "unstorage/drivers/s3";

/**
 * Immutable, content-addressed objects shared by every workspace version:
 * `packs/<id>` (file bytes) and `trees/<id>` (one folder each). A put is
 * all or nothing (a temporary file renamed into place; an object store's
 * PUT), so a crash never leaves half an object under its key.
 */
export interface ObjectStore {
  /**
   * The object's bytes, or null. With `into`, a store that learns the size
   * first reads into the buffer `into(size)` gives (at least that long), so a
   * reader may fill the same few buffers again; others ignore it.
   */
  get(key: string, into?: (size: number) => Buffer): Promise<Buffer | null>;
  /** Once it resolves, `data` is not read again: the caller may fill it anew. */
  put(key: string, data: Buffer): Promise<void>;
  remove(key: string): Promise<void>;
  dispose(): Promise<void>;
}

const KEY = /^(packs|trees)\/[0-9a-f]{64}$/;

export function isObjectKey(key: unknown): key is string {
  return typeof key === "string" && KEY.test(key);
}

function assertKey(key: string): void {
  if (!isObjectKey(key)) throw new Error(`Invalid object key: ${JSON.stringify(key)}`);
}

export function toBuffer(value: unknown): Buffer | null {
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
export function retried<T>(call: () => Promise<T>, attempts = 4): Promise<T> {
  return retry(call, { attempts, delay: (attempt) => exponentialDelay(attempt, 50, Infinity, 4) });
}

/** Temporary files older than this are left by a crashed put and removed. */
const STALE_TMP_MS = 60 * 60 * 1000;

/** `<base>/packs/<2 hex>/<id>`, `<base>/trees/<2 hex>/<id>`; puts go through `<base>/tmp/`. */
export function fsObjects(base: string): ObjectStore {
  const tmp = join(base, "tmp");
  const made = new Set<string>();
  const pathOf = (key: string) => {
    const [kind, id] = key.split("/") as [string, string];
    return { dir: join(base, kind, id.slice(0, 2)), file: join(base, kind, id.slice(0, 2), id) };
  };
  const ensure = async (dir: string) => {
    if (made.has(dir)) return;
    await mkdir(dir, { recursive: true });
    made.add(dir);
  };
  let swept = false;
  const sweep = async () => {
    swept = true;
    const now = Date.now();
    for (const name of await readdir(tmp).catch(() => [] as string[])) {
      const info = await stat(join(tmp, name)).catch(() => null);
      if (info && now - info.mtimeMs > STALE_TMP_MS) await rm(join(tmp, name), { force: true });
    }
  };
  return {
    async get(key, into) {
      assertKey(key);
      try {
        if (!into) return await readFile(pathOf(key).file);
        const handle = await open(pathOf(key).file, "r");
        try {
          const { size } = await handle.stat();
          const buffer = into(size);
          let at = 0;
          while (at < size) {
            const { bytesRead } = await handle.read(buffer, at, size - at, at);
            if (bytesRead === 0) break;
            at += bytesRead;
          }
          // Cut short, the piece checks find it.
          return buffer.subarray(0, at);
        } finally {
          await handle.close();
        }
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
        throw error;
      }
    },
    async put(key, data) {
      assertKey(key);
      if (!swept) await sweep();
      const { dir, file } = pathOf(key);
      await ensure(tmp);
      await ensure(dir);
      const temporary = join(tmp, `${key.replace("/", "-")}.${randomBytes(6).toString("hex")}`);
      await writeFile(temporary, data);
      // Same key, same bytes: replacing an existing object changes nothing a reader sees.
      await rename(temporary, file);
    },
    async remove(key) {
      assertKey(key);
      await rm(pathOf(key).file, { force: true });
    },
    async dispose() {},
  };
}

/** Any unstorage storage; keys become `<prefix>:packs:<id>`. Every call is retried. */
export function storageObjects(storage: Storage, prefix: string): ObjectStore {
  const full = (key: string) => (assertKey(key), `${prefix}:${key.replace("/", ":")}`);
  return {
    get: async (key) => toBuffer(await retried(() => storage.getItemRaw(full(key)))),
    // A copy: a driver may keep what it is given (memory) while the caller fills its buffer again.
    put: (key, data) => {
      const own = Buffer.from(data);
      return retried(() => storage.setItemRaw(full(key), own));
    },
    remove: (key) => retried(() => storage.removeItem(full(key))),
    dispose: () => storage.dispose(),
  };
}

export function s3Objects(options: { endpoint: string; bucket: string; region: string; accessKeyId: string; secretAccessKey: string }, prefix: string): ObjectStore {
  return storageObjects(createStorage({ driver: s3Driver(options) }), prefix);
}

export function driverObjects(driver: Driver, prefix: string): ObjectStore {
  return storageObjects(createStorage({ driver }), prefix);
}

/** Object calls in flight at once for one save, restore or removal. */
export const PARALLEL = 8;

/** Runs `task` over items, at most `parallel` at once; the first failure is thrown once all have stopped. */
export async function forEachParallel<T>(items: T[], task: (item: T) => Promise<void>, parallel = PARALLEL): Promise<void> {
  let index = 0;
  let failure: unknown;
  const worker = async () => {
    while (failure === undefined && index < items.length) {
      const item = items[index++]!;
      try {
        await task(item);
      } catch (error) {
        failure ??= error;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(parallel, items.length) }, worker));
  if (failure !== undefined) throw failure;
}
