import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { openDatabase } from "../../src/db/connect";
import { migrate } from "../../src/db/migrate";
import type { AshDatabase, Migration } from "../../src/db/types";
import { createPostgresDatabase, describeWithPostgres } from "../helpers/postgres";

const migrations: Migration[] = [
  {
    id: 1,
    name: "create_sessions",
    statements: [
      "CREATE TABLE sessions (id TEXT PRIMARY KEY, created_at BIGINT NOT NULL)",
      "CREATE INDEX sessions_created ON sessions (created_at)",
    ],
  },
  { id: 2, name: "create_events", statements: ["CREATE TABLE events (session_id TEXT NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY (session_id, seq))"] },
  { id: 3, name: "add_model", statements: ["ALTER TABLE sessions ADD COLUMN model TEXT"] },
];

describeWithPostgres("migrate on PostgreSQL", () => {
  let dataDir: string;
  const cleanups: Array<() => Promise<unknown>> = [];

  beforeAll(() => {
    dataDir = mkdtempSync(join(tmpdir(), "ash-db-pg-migrate-"));
  });

  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  /** `count` servers (each its own pool) on one fresh, empty database. */
  async function servers(count: number): Promise<AshDatabase[]> {
    const database = await createPostgresDatabase();
    cleanups.push(database.drop);
    const dbs = await Promise.all(Array.from({ length: count }, () => openDatabase({ url: database.url, dataDir })));
    for (const db of dbs) cleanups.push(() => db.close());
    return dbs;
  }

  it("applies each migration exactly once when five servers start at the same moment", async () => {
    // Three fresh databases, so the race on creating the bookkeeping tables happens more than once.
    for (let round = 0; round < 3; round++) {
      const dbs = await servers(5);
      const results = await Promise.all(dbs.map((db) => migrate(db, migrations)));
      expect(results.flatMap((r) => r.applied).sort()).toEqual([1, 2, 3]);
      expect(await dbs[0]!.all("SELECT id, name FROM ash_migrations ORDER BY id")).toEqual(
        migrations.map(({ id, name }) => ({ id, name })),
      );
      expect(await dbs[0]!.all("SELECT * FROM ash_migration_lock")).toEqual([]);
      await dbs[1]!.run("INSERT INTO sessions (id, created_at, model) VALUES ('s1', 1, 'm')");

      const again = await Promise.all(dbs.map((db) => migrate(db, migrations)));
      expect(again.every((r) => r.applied.length === 0)).toBe(true);
    }
  }, 120_000);

  it("rolls back a failing migration's DDL and its record", async () => {
    const [db] = await servers(1);
    await migrate(db!, migrations);
    const broken: Migration = {
      id: 4,
      name: "broken",
      statements: ["CREATE TABLE half (id TEXT PRIMARY KEY)", "ALTER TABLE no_such_table ADD COLUMN x TEXT"],
    };
    await expect(migrate(db!, [...migrations, broken])).rejects.toThrow(/^migration 4 \(broken\) failed and was rolled back: .*no_such_table/);
    expect(await db!.get("SELECT to_regclass('half') AS t")).toEqual({ t: null });
    expect(await db!.all("SELECT id FROM ash_migrations WHERE id = 4")).toEqual([]);
    expect(await db!.all("SELECT * FROM ash_migration_lock")).toEqual([]);
  }, 60_000);

  it("keeps renewing the lock during a long migration, so a waiting server does not take over", async () => {
    const [first, second] = await servers(2);
    const slow: Migration[] = [{ id: 1, name: "slow", statements: ["SELECT pg_sleep(1.5)", "CREATE TABLE slow_done (id TEXT)"] }];
    const running = migrate(first!, slow, { ttlMs: 300 });
    await new Promise((resolve) => setTimeout(resolve, 300));
    const before = await second!.get<{ holder: string; expires_at: number }>("SELECT holder, expires_at FROM ash_migration_lock");
    const waiting = migrate(second!, slow, { ttlMs: 300, waitMs: 30_000 });
    await new Promise((resolve) => setTimeout(resolve, 600));
    const later = await second!.get<{ holder: string; expires_at: number }>("SELECT holder, expires_at FROM ash_migration_lock");
    expect(later?.holder).toBe(before?.holder);
    expect(later!.expires_at).toBeGreaterThan(before!.expires_at);
    expect(await running).toEqual({ applied: [1] });
    expect(await waiting).toEqual({ applied: [] });
  }, 60_000);
});
