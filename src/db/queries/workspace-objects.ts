import type { Queryable } from "../types";

// The catalog of snapshot objects (packs and trees in the shared store) and of
// which workspace version needs which. The store never lists or deletes on its
// own: the garbage collector works from these rows, so it runs the same on the
// fs driver and on S3, and on several servers at once.

/** A save's object is being collected right now: the save gives up and is tried again later. */
export class ObjectCollectedError extends Error {
  constructor(readonly keys: string[]) {
    super(`${keys.length} snapshot object(s) this save needs are being garbage-collected; the save is refused and the previous one kept`);
    this.name = "ObjectCollectedError";
  }
}

/** SQLite's default limit on bound parameters is 999 on older builds; PostgreSQL's 65,535. */
const BATCH = 400;

function batches<T>(items: T[]): T[][] {
  const out: T[][] = [];
  for (let at = 0; at < items.length; at += BATCH) out.push(items.slice(at, at + BATCH));
  return out;
}

const marks = (n: number) => new Array(n).fill("?").join(", ");

/**
 * Before a save writes objects: records them as just touched, so a collector
 * running now leaves them alone. Refuses (ObjectCollectedError) when one of
 * them is being removed at this moment.
 */
export async function touchObjects(db: Queryable, keys: string[], now: number): Promise<void> {
  const unique = [...new Set(keys)];
  const busy: string[] = [];
  for (const part of batches(unique)) {
    for (const key of part) {
      await db.run(
        `INSERT INTO snapshot_objects (object_key, touched_at, deleting_at) VALUES (?, ?, NULL)
           ON CONFLICT (object_key) DO UPDATE SET touched_at = excluded.touched_at WHERE snapshot_objects.deleting_at IS NULL`,
        [key, now],
      );
    }
    const rows = await db.all<any>(`SELECT object_key FROM snapshot_objects WHERE deleting_at IS NOT NULL AND object_key IN (${marks(part.length)})`, part);
    busy.push(...rows.map((r) => r.object_key));
  }
  if (busy.length > 0) throw new ObjectCollectedError(busy);
}

/**
 * Commits a version: records the objects it needs. Run in the transaction
 * that makes the version a session's or a checkpoint's, so a collector either
 * sees the reference or loses the race and leaves them. Refuses
 * (ObjectCollectedError) when an object is gone or being removed.
 *
 * Reads only, for a version already recorded (its rows are written in one
 * transaction, so all are there), and never updates an object's row: sessions
 * of one agent often save the very same version and share its objects, and
 * writing the same rows from all of them at once made SERIALIZABLE
 * transactions conflict until the save gave up.
 */
export async function commitVersion(tx: Queryable, version: string, keys: string[]): Promise<void> {
  const unique = [...new Set(keys)];
  const recorded = (await tx.get<any>(`SELECT 1 AS one FROM version_objects WHERE version = ? LIMIT 1`, [version])) !== undefined;
  for (const part of batches(unique)) {
    if (!recorded) for (const key of part) await tx.run(`INSERT INTO version_objects (version, object_key) VALUES (?, ?) ON CONFLICT DO NOTHING`, [version, key]);
    const live = new Set(
      (await tx.all<any>(`SELECT object_key FROM snapshot_objects WHERE deleting_at IS NULL AND object_key IN (${marks(part.length)})`, part)).map((r) => r.object_key),
    );
    if (live.size !== part.length) throw new ObjectCollectedError(part.filter((key) => !live.has(key)));
  }
}

/** Drops the object lists of versions no session and no checkpoint uses any more. */
export async function forgetUnusedVersions(db: Queryable): Promise<number> {
  const { changes } = await db.run(
    `DELETE FROM version_objects WHERE NOT EXISTS (SELECT 1 FROM checkpoints c WHERE c.version = version_objects.version)
       AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.workspace_version = version_objects.version)`,
  );
  return changes;
}

/**
 * Marks for deletion the objects no version needs that nobody touched since
 * `before`, and answers every object marked (also those a collector that
 * crashed marked earlier), at most `limit`.
 */
export async function markGarbage(tx: Queryable, before: number, now: number, limit: number): Promise<string[]> {
  await tx.run(
    `UPDATE snapshot_objects SET deleting_at = ?
       WHERE deleting_at IS NULL AND touched_at < ?
         AND NOT EXISTS (SELECT 1 FROM version_objects v WHERE v.object_key = snapshot_objects.object_key)`,
    [now, before],
  );
  const rows = await tx.all<any>(`SELECT object_key FROM snapshot_objects WHERE deleting_at IS NOT NULL ORDER BY object_key LIMIT ?`, [limit]);
  return rows.map((r) => r.object_key);
}

/** After their bytes are gone: the rows of collected objects. */
export async function forgetObjects(db: Queryable, keys: string[]): Promise<void> {
  for (const part of batches(keys)) await db.run(`DELETE FROM snapshot_objects WHERE deleting_at IS NOT NULL AND object_key IN (${marks(part.length)})`, part);
}

export async function countObjects(db: Queryable): Promise<{ objects: number; versions: number }> {
  const o = await db.get<any>(`SELECT COUNT(*) AS n FROM snapshot_objects`);
  const v = await db.get<any>(`SELECT COUNT(DISTINCT version) AS n FROM version_objects`);
  return { objects: Number(o?.n ?? 0), versions: Number(v?.n ?? 0) };
}

/** The objects a committed version needs; empty when no session or checkpoint keeps it any more. */
export async function versionObjects(db: Queryable, version: string): Promise<string[]> {
  return (await db.all<any>(`SELECT object_key FROM version_objects WHERE version = ?`, [version])).map((r) => r.object_key);
}

/** A save in progress: registered before it writes anything, removed when it ends. */
export async function beginSave(db: Queryable, id: string, now: number): Promise<void> {
  await db.run(`INSERT INTO snapshot_saves (id, started_at, heartbeat_at) VALUES (?, ?, ?)`, [id, now, now]);
}

export async function heartbeatSave(db: Queryable, id: string, now: number): Promise<void> {
  await db.run(`UPDATE snapshot_saves SET heartbeat_at = ? WHERE id = ?`, [now, id]);
}

export async function endSave(db: Queryable, id: string): Promise<void> {
  await db.run(`DELETE FROM snapshot_saves WHERE id = ?`, [id]);
}

/**
 * When the oldest save still running started (a save whose heartbeat is older
 * than `staleBefore` died with its server and is forgotten); null when none runs.
 */
export async function oldestRunningSave(db: Queryable, staleBefore: number): Promise<number | null> {
  await db.run(`DELETE FROM snapshot_saves WHERE heartbeat_at < ?`, [staleBefore]);
  const row = await db.get<any>(`SELECT MIN(started_at) AS t FROM snapshot_saves`);
  return row?.t === null || row?.t === undefined ? null : Number(row.t);
}
