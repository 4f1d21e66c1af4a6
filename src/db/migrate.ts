/**
 * Applying schema migrations at start-up. Each missing migration runs, with
 * its `ash_migrations` record, in one transaction. Servers starting at the
 * same moment take turns through the lock table, and the record's primary
 * key is a second guard: a migration another server applied first is
 * skipped, never applied twice. A start with nothing missing takes no lock.
 */
import { consola } from "consola";
import { jitteredDelay, retry } from "../retry";
import { DatabaseUnavailableError, isUniqueViolation } from "./errors";
import { MIGRATION_LOCK_TABLE_SQL, type MigrationLockOptions, withMigrationLock } from "./migration-lock";
import type { AshDatabase, Migration } from "./types";

const log = consola.withTag("db");

const MIGRATIONS_TABLE_SQL =
  "CREATE TABLE IF NOT EXISTS ash_migrations (id INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)";

export type MigrateOptions = MigrationLockOptions;

export interface MigrateResult {
  /** Ids of the migrations this call applied, in order; empty when the schema was current. */
  applied: number[];
}

export async function migrate(
  db: AshDatabase,
  migrations: Migration[],
  options: MigrateOptions = {},
): Promise<MigrateResult> {
  const ordered = validated(migrations);
  await createTableRacing(db, MIGRATIONS_TABLE_SQL);
  await createTableRacing(db, MIGRATION_LOCK_TABLE_SQL);

  if ((await missing(db, ordered)).length === 0) return { applied: [] };

  return withMigrationLock(
    db,
    async () => {
      const applied: number[] = [];
      for (const migration of await missing(db, ordered)) {
        if (await applyOne(db, migration)) applied.push(migration.id);
      }
      return { applied };
    },
    options,
  );
}

function validated(migrations: Migration[]): Migration[] {
  const seen = new Set<number>();
  for (const m of migrations) {
    const label = `migration ${JSON.stringify(m?.id)}`;
    if (!Number.isSafeInteger(m?.id) || m.id < 1) throw new Error(`${label}: id must be a positive integer`);
    if (seen.has(m.id)) throw new Error(`${label}: id is used twice`);
    seen.add(m.id);
    if (typeof m.name !== "string" || !m.name.trim()) throw new Error(`${label}: name must be a non-empty string`);
    if (!Array.isArray(m.statements) || m.statements.some((s) => typeof s !== "string" || !s.trim())) {
      throw new Error(`${label} (${m.name}): statements must be non-empty SQL strings`);
    }
  }
  return [...migrations].sort((a, b) => a.id - b.id);
}

async function missing(db: AshDatabase, ordered: Migration[]): Promise<Migration[]> {
  const rows = await db.all<{ id: number }>("SELECT id FROM ash_migrations");
  const done = new Set(rows.map((r) => Number(r.id)));
  const known = new Set(ordered.map((m) => m.id));
  const unknown = [...done].filter((id) => !known.has(id));
  if (unknown.length > 0) {
    log.warn(`the database has migrations this version does not know (${unknown.join(", ")}); was it used by a newer version?`);
  }
  return ordered.filter((m) => !done.has(m.id));
}

/** True when this call applied it; false when it was already there. */
async function applyOne(db: AshDatabase, migration: Migration): Promise<boolean> {
  try {
    const applied = await db.transaction(async (tx) => {
      if (await tx.get("SELECT id FROM ash_migrations WHERE id = ?", [migration.id])) return false;
      // The record goes first: a second server doing the same waits on this
      // row, then fails on the primary key instead of running the statements.
      await tx.run("INSERT INTO ash_migrations (id, name, applied_at) VALUES (?, ?, ?)", [
        migration.id,
        migration.name,
        Date.now(),
      ]);
      for (const statement of migration.statements) await tx.run(statement);
      return true;
    });
    if (applied) log.info(`applied migration ${migration.id} (${migration.name})`);
    return applied;
  } catch (err) {
    if (err instanceof DatabaseUnavailableError) throw err;
    if (isUniqueViolation(err) && (await db.get("SELECT id FROM ash_migrations WHERE id = ?", [migration.id]))) {
      return false;
    }
    const reason = err instanceof Error ? err.message : String(err);
    throw new Error(`migration ${migration.id} (${migration.name}) failed and was rolled back: ${reason}`, { cause: err });
  }
}

/**
 * On PostgreSQL, two sessions running the same CREATE TABLE IF NOT EXISTS at
 * once can both miss the table, and the slower one then fails on a catalog
 * unique index (23505), or with "relation/type already exists" (42P07, 42710).
 * Running it again finds the table.
 */
const CREATE_RACE_CODES = new Set(["42P07", "42710"]);

async function createTableRacing(db: AshDatabase, ddl: string): Promise<void> {
  await retry(() => db.run(ddl), {
    attempts: 5,
    retryIf: (err) => isUniqueViolation(err) || CREATE_RACE_CODES.has((err as { code?: string }).code ?? ""),
    delay: (attempt) => jitteredDelay(attempt, 20, 200),
  });
}
