import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { openDatabase } from "../../src/db/connect";
import { migrate } from "../../src/db/migrate";
import type { AshDatabase, Migration } from "../../src/db/types";

const migrations: Migration[] = [
  { id: 2, name: "add_notes", statements: ["CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)"] },
  {
    id: 1,
    name: "create_things",
    statements: [
      "CREATE TABLE things (id INTEGER PRIMARY KEY, name TEXT NOT NULL)",
      "CREATE INDEX things_name ON things (name)",
    ],
  },
];

let dir: string;
let db: AshDatabase;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), "ash-db-migrate-"));
  db = await openDatabase({ dataDir: dir });
});

afterEach(async () => {
  await db.close();
  rmSync(dir, { recursive: true, force: true });
});

async function tables(): Promise<string[]> {
  const rows = await db.all<{ name: string }>("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name");
  return rows.map((r) => r.name);
}

describe("migrate on SQLite", () => {
  it("applies missing migrations in id order and records them", async () => {
    expect(await migrate(db, migrations)).toEqual({ applied: [1, 2] });
    expect(await tables()).toEqual(["ash_migration_lock", "ash_migrations", "notes", "things"]);
    const records = await db.all<{ id: number; name: string; applied_at: number }>(
      "SELECT id, name, applied_at FROM ash_migrations ORDER BY id",
    );
    expect(records.map((r) => [r.id, r.name])).toEqual([
      [1, "create_things"],
      [2, "add_notes"],
    ]);
    expect(records[0]!.applied_at).toBeGreaterThan(Date.now() - 60_000);
  });

  it("applies nothing on a second start, and only the new migration after an upgrade", async () => {
    await migrate(db, migrations);
    expect(await migrate(db, migrations)).toEqual({ applied: [] });
    const upgrade = [...migrations, { id: 3, name: "add_tags", statements: ["CREATE TABLE tags (name TEXT PRIMARY KEY)"] }];
    expect(await migrate(db, upgrade)).toEqual({ applied: [3] });
    expect(await tables()).toContain("tags");
  });

  it("rolls back a failing migration entirely and names it in the error", async () => {
    const broken: Migration = {
      id: 3,
      name: "half_broken",
      statements: ["CREATE TABLE first_half (id INTEGER PRIMARY KEY)", "CREATE TABLE oops (id INTEGER PRIMARY KEY"],
    };
    await expect(migrate(db, [...migrations, broken])).rejects.toThrow(
      /^migration 3 \(half_broken\) failed and was rolled back: /,
    );
    expect(await tables()).not.toContain("first_half");
    expect(await db.all("SELECT id FROM ash_migrations ORDER BY id")).toEqual([{ id: 1 }, { id: 2 }]);
    // The lock is released, so a fixed version can migrate at once.
    expect(await db.all("SELECT * FROM ash_migration_lock")).toEqual([]);
    const fixed = { ...broken, statements: ["CREATE TABLE first_half (id INTEGER PRIMARY KEY)"] };
    expect(await migrate(db, [...migrations, fixed], { waitMs: 0 })).toEqual({ applied: [3] });
  });

  it("refuses an invalid migration list before touching the database", async () => {
    const cases: Array<[Migration[], RegExp]> = [
      [[migrations[0]!, { ...migrations[1]!, id: 2 }], /id is used twice/],
      [[{ id: 0, name: "zero", statements: ["SELECT 1"] }], /positive integer/],
      [[{ id: 1.5, name: "fraction", statements: ["SELECT 1"] }], /positive integer/],
      [[{ id: 1, name: " ", statements: ["SELECT 1"] }], /name must be/],
      [[{ id: 1, name: "empty", statements: [""] }], /statements must be/],
    ];
    for (const [list, message] of cases) await expect(migrate(db, list)).rejects.toThrow(message);
    expect(await tables()).toEqual([]);
  });

  it("applies each migration once when two connections migrate the same file at once", async () => {
    const other = await openDatabase({ dataDir: dir });
    try {
      const results = await Promise.all([migrate(db, migrations), migrate(other, migrations)]);
      expect(results.flatMap((r) => r.applied).sort()).toEqual([1, 2]);
      expect(await db.all("SELECT id FROM ash_migrations ORDER BY id")).toEqual([{ id: 1 }, { id: 2 }]);
    } finally {
      await other.close();
    }
  });

  it("takes over a lock whose holder stopped renewing it", async () => {
    await migrate(db, []);
    await db.run("INSERT INTO ash_migration_lock (name, holder, expires_at) VALUES ('migrate', 'dead-server', ?)", [
      Date.now() - 1_000,
    ]);
    expect(await migrate(db, migrations, { waitMs: 2_000 })).toEqual({ applied: [1, 2] });
    expect(await db.all("SELECT * FROM ash_migration_lock")).toEqual([]);
  });

  it("waits for a live holder and continues once it lets go", async () => {
    await migrate(db, []);
    await db.run("INSERT INTO ash_migration_lock (name, holder, expires_at) VALUES ('migrate', 'busy-server', ?)", [
      Date.now() + 60_000,
    ]);
    setTimeout(() => void db.run("DELETE FROM ash_migration_lock WHERE holder = 'busy-server'"), 300);
    expect(await migrate(db, migrations, { waitMs: 10_000 })).toEqual({ applied: [1, 2] });
  });

  it("gives up with a clear error when a live holder never lets go, applying nothing", async () => {
    await migrate(db, []);
    await db.run("INSERT INTO ash_migration_lock (name, holder, expires_at) VALUES ('migrate', 'busy-server', ?)", [
      Date.now() + 60_000,
    ]);
    await expect(migrate(db, migrations, { waitMs: 300 })).rejects.toThrow(
      /timed out after 0.3s waiting for busy-server to finish migrating the database/,
    );
    expect(await db.all("SELECT * FROM ash_migrations")).toEqual([]);
    expect(await db.get("SELECT holder FROM ash_migration_lock")).toEqual({ holder: "busy-server" });
  });
});
