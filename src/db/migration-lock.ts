/**
 * One migrating server at a time, using only a table: no advisory locks, so
 * the same SQL runs on SQLite, PostgreSQL and CockroachDB. The lock is a row
 * with an expiry that its holder keeps pushing forward; a holder that died
 * leaves a row that expires and is taken over. See
 * docs/decisions/db-migration-lock-table.md.
 */
import { randomUUID } from "node:crypto";
import { hostname } from "node:os";
import { consola } from "consola";
import { formatSeconds, jitteredDelay, sleep } from "../retry";
import type { AshDatabase } from "./types";

const log = consola.withTag("db");

export const MIGRATION_LOCK_TABLE_SQL =
  "CREATE TABLE IF NOT EXISTS ash_migration_lock (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at BIGINT NOT NULL)";

const LOCK_NAME = "migrate";

export interface MigrationLockOptions {
  /** Give up waiting for another holder after this long. Default 5 minutes. */
  waitMs?: number;
  /** A holder that stops renewing loses the lock after this long. Default 30 s. */
  ttlMs?: number;
}

export async function withMigrationLock<T>(
  db: AshDatabase,
  fn: () => Promise<T>,
  options: MigrationLockOptions = {},
): Promise<T> {
  const waitMs = options.waitMs ?? 5 * 60_000;
  const ttlMs = options.ttlMs ?? 30_000;
  const holder = `${hostname()}/${process.pid}/${randomUUID().slice(0, 8)}`;

  await acquire(db, holder, ttlMs, waitMs);
  const stopRenewing = keepRenewing(db, holder, ttlMs);
  try {
    return await fn();
  } finally {
    stopRenewing();
    await db
      .run("DELETE FROM ash_migration_lock WHERE name = ? AND holder = ?", [LOCK_NAME, holder])
      .catch((err: Error) => log.warn(`could not release the migration lock (it expires on its own): ${err.message}`));
  }
}

async function acquire(db: AshDatabase, holder: string, ttlMs: number, waitMs: number): Promise<void> {
  const deadline = Date.now() + waitMs;
  let announced = false;
  for (let attempt = 1; ; attempt++) {
    const now = Date.now();
    const inserted = await db.run(
      "INSERT INTO ash_migration_lock (name, holder, expires_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
      [LOCK_NAME, holder, now + ttlMs],
    );
    if (inserted.changes === 1) return;

    const current = await db.get<{ holder: string; expires_at: number }>(
      "SELECT holder, expires_at FROM ash_migration_lock WHERE name = ?",
      [LOCK_NAME],
    );
    if (current && Number(current.expires_at) < now) {
      // Only one contender's UPDATE can still match the old expiry.
      const taken = await db.run(
        "UPDATE ash_migration_lock SET holder = ?, expires_at = ? WHERE name = ? AND holder = ? AND expires_at = ?",
        [holder, now + ttlMs, LOCK_NAME, current.holder, current.expires_at],
      );
      if (taken.changes === 1) {
        log.warn(`took over the migration lock from ${current.holder}, which stopped renewing it`);
        return;
      }
    }

    if (Date.now() >= deadline) {
      throw new Error(
        `timed out after ${formatSeconds(waitMs)} waiting for ${current?.holder ?? "another server"} to finish migrating the database`,
      );
    }
    if (!announced && current) {
      log.info(`waiting for ${current.holder} to finish migrating the database`);
      announced = true;
    }
    await sleep(Math.min(jitteredDelay(attempt, 50, 500), Math.max(0, deadline - Date.now())));
  }
}

/** Pushes the expiry forward every third of the TTL while the work runs; returns the stop function. */
function keepRenewing(db: AshDatabase, holder: string, ttlMs: number): () => void {
  let busy = false;
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    db.run("UPDATE ash_migration_lock SET expires_at = ? WHERE name = ? AND holder = ?", [
      Date.now() + ttlMs,
      LOCK_NAME,
      holder,
    ])
      .then(({ changes }) => {
        if (changes !== 1) log.warn("lost the migration lock to another server while migrating");
      })
      .catch((err: Error) => log.warn(`could not renew the migration lock: ${err.message}`))
      .finally(() => {
        busy = false;
      });
  }, Math.max(50, Math.floor(ttlMs / 3)));
  timer.unref();
  return () => clearInterval(timer);
}
