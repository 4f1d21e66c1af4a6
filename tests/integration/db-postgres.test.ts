import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, beforeEach, expect, it } from "vitest";
import { openDatabase } from "../../src/db/connect";
import { DatabaseBusyError, DatabaseUnavailableError, isUniqueViolation } from "../../src/db/errors";
import type { AshDatabase, Queryable } from "../../src/db/types";
import { describeWithPostgres, usePostgresDatabase } from "../helpers/postgres";

/** Resolves once `parties` callers have arrived; the first attempt of two transactions meets here. */
function barrier(parties: number) {
  let arrived = 0;
  let release!: () => void;
  const all = new Promise<void>((resolve) => (release = resolve));
  return async () => {
    if (++arrived >= parties) release();
    await all;
  };
}

describeWithPostgres("PostgreSQL", () => {
  const url = usePostgresDatabase();
  let dataDir: string;
  let db: AshDatabase;

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), "ash-db-pg-"));
    db = await openDatabase({ url: url(), dataDir });
    await db.run("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, qty BIGINT NOT NULL)");
  });

  afterAll(async () => {
    await db?.close();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  beforeEach(async () => {
    await db.run("DELETE FROM items");
  });

  it("is PostgreSQL, opened from the URL", async () => {
    expect(db.dialect).toBe("postgres");
    expect(db.db0.dialect).toBe("postgresql");
    expect(await db.ping()).toBe(true);
  });

  it("runs all/get/run with ? placeholders and reports changed rows", async () => {
    expect(await db.run("INSERT INTO items (id, name, qty) VALUES (?, ?, ?), (?, ?, ?)", [1, "a", 1, 2, "b", 2])).toEqual({
      changes: 2,
    });
    expect(await db.all("SELECT name, qty FROM items ORDER BY name")).toEqual([
      { name: "a", qty: 1 },
      { name: "b", qty: 2 },
    ]);
    expect(await db.get("SELECT qty FROM items WHERE name = ?", ["b"])).toEqual({ qty: 2 });
    expect(await db.get("SELECT qty FROM items WHERE name = ?", ["missing"])).toBeUndefined();
    expect(await db.run("UPDATE items SET qty = qty + 1 WHERE qty > ?", [5])).toEqual({ changes: 0 });
    expect(await db.get("SELECT 'who?' AS q, ? AS p", ["x"])).toEqual({ q: "who?", p: "x" });
  });

  it("returns BIGINT, COUNT and SUM as numbers, like SQLite does", async () => {
    await db.run("INSERT INTO items (id, name, qty) VALUES (1, 'a', ?), (2, 'b', 2)", [1732550000000]);
    expect(await db.get("SELECT qty FROM items WHERE id = 1")).toEqual({ qty: 1732550000000 });
    expect(await db.get("SELECT COUNT(*) AS n, SUM(qty) AS total FROM items")).toEqual({ n: 2, total: 1732550000002 });
  });

  it("returns the inserted row from INSERT ... RETURNING", async () => {
    const row = await db.get("INSERT INTO items (id, name, qty) VALUES (?, ?, ?) RETURNING id, name, qty", [7, "c", 3]);
    expect(row).toEqual({ id: 7, name: "c", qty: 3 });
    expect(await db.all("INSERT INTO items (id, name, qty) VALUES (8, 'd', 1), (9, 'e', 1) RETURNING id")).toEqual([
      { id: 8 },
      { id: 9 },
    ]);
    expect(await db.run("UPDATE items SET qty = 0 RETURNING id")).toEqual({ changes: 3 });
  });

  it("binds undefined as NULL", async () => {
    expect(await db.get("SELECT ?::text AS v", [undefined])).toEqual({ v: null });
  });

  it("recognises a unique violation and keeps working after SQL errors", async () => {
    await db.run("INSERT INTO items (id, name, qty) VALUES (1, 'a', 1)");
    for (let i = 0; i < 20; i++) {
      const err = await db.run("INSERT INTO items (id, name, qty) VALUES (?, 'a', 1)", [100 + i]).catch((e: unknown) => e);
      expect(isUniqueViolation(err)).toBe(true);
    }
    const other = await db.run("INSERT INTO items (id, name) VALUES (5, 'x')").catch((e: unknown) => e);
    expect(isUniqueViolation(other)).toBe(false);
    expect(await db.get("SELECT COUNT(*) AS n FROM items")).toEqual({ n: 1 });
  });

  it("commits every write of a transaction that returns", async () => {
    const id = await db.transaction(async (tx) => {
      await tx.run("INSERT INTO items (id, name, qty) VALUES (1, 'a', 1)");
      const row = await tx.get<{ id: number }>("INSERT INTO items (id, name, qty) VALUES (2, 'b', 2) RETURNING id");
      return row!.id;
    });
    expect(id).toBe(2);
    expect(await db.all("SELECT name FROM items ORDER BY name")).toEqual([{ name: "a" }, { name: "b" }]);
  });

  it("rolls back every write of a transaction that throws", async () => {
    await expect(
      db.transaction(async (tx) => {
        await tx.run("INSERT INTO items (id, name, qty) VALUES (1, 'a', 1)");
        throw new Error("changed my mind");
      }),
    ).rejects.toThrow("changed my mind");
    expect(await db.all("SELECT * FROM items")).toEqual([]);
  });

  it("does not report success for a transaction whose failed statement was swallowed", async () => {
    await db.run("INSERT INTO items (id, name, qty) VALUES (1, 'a', 1)");
    await expect(
      db.transaction(async (tx) => {
        await tx.run("INSERT INTO items (id, name, qty) VALUES (2, 'b', 1)");
        await tx.run("INSERT INTO items (id, name, qty) VALUES (3, 'a', 1)").catch(() => undefined);
      }),
    ).rejects.toThrow(/rolled back because a statement in it failed/);
    expect(await db.all("SELECT id FROM items")).toEqual([{ id: 1 }]);
  });

  it("retries a real serialization failure so both read-modify-write transactions land", async () => {
    await db.run("INSERT INTO items (id, name, qty) VALUES (1, 'counter', 0)");
    const bothHaveRead = barrier(2);
    let attempts = 0;
    const increment = () =>
      db.transaction(async (tx) => {
        const first = ++attempts <= 2;
        const row = await tx.get<{ qty: number }>("SELECT qty FROM items WHERE id = 1");
        if (first) await bothHaveRead(); // both read the same value before either writes
        await tx.run("UPDATE items SET qty = ? WHERE id = 1", [row!.qty + 1]);
      });
    await Promise.all([increment(), increment()]);
    expect(await db.get("SELECT qty FROM items WHERE id = 1")).toEqual({ qty: 2 });
    expect(attempts).toBe(3); // one of the two was failed by the server and run again
  }, 30_000);

  it("retries a deadlock victim so both transactions land", async () => {
    await db.run("INSERT INTO items (id, name, qty) VALUES (1, 'a', 0), (2, 'b', 0)");
    const bothHoldOne = barrier(2);
    let attempts = 0;
    const cross = (mine: number, theirs: number) =>
      db.transaction(async (tx: Queryable) => {
        const first = ++attempts <= 2;
        await tx.run("UPDATE items SET qty = qty + 1 WHERE id = ?", [mine]);
        if (first) await bothHoldOne();
        await tx.run("UPDATE items SET qty = qty + 10 WHERE id = ?", [theirs]);
      });
    await Promise.all([cross(1, 2), cross(2, 1)]);
    expect(await db.all("SELECT id, qty FROM items ORDER BY id")).toEqual([
      { id: 1, qty: 11 },
      { id: 2, qty: 11 },
    ]);
    expect(attempts).toBe(3);
  }, 30_000);

  it("stops retrying after 8 attempts and rejects with DatabaseBusyError (a 503), changing nothing", async () => {
    let attempts = 0;
    const failure = await db
      .transaction(async (tx) => {
        attempts++;
        await tx.run("INSERT INTO items (id, name, qty) VALUES (?, 'x', 1)", [attempts]);
        await tx.run("DO $$ BEGIN RAISE EXCEPTION 'forced conflict' USING ERRCODE = 'serialization_failure'; END $$");
      })
      .catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(DatabaseBusyError);
    expect(failure).toBeInstanceOf(DatabaseUnavailableError);
    expect(failure).toMatchObject({
      code: "DATABASE_BUSY",
      message: "database busy: the transaction conflicted with concurrent ones 8 times in a row (40001)",
      cause: { code: "40001", message: "forced conflict" },
    });
    expect(attempts).toBe(8);
    expect(await db.all("SELECT * FROM items")).toEqual([]);
  }, 30_000);

  it("refuses queries on the database itself from inside its transaction", async () => {
    await expect(
      db.transaction(async () => {
        await db.run("INSERT INTO items (id, name, qty) VALUES (1, 'a', 1)");
      }),
    ).rejects.toThrow(/use the transaction's `tx` argument/);
    expect(await db.all("SELECT * FROM items")).toEqual([]);
  });

  it("fails at once, without retrying, when the password is wrong", async () => {
    const wrong = new URL(url());
    wrong.password = "not-the-password";
    const error = await openDatabase({ url: wrong.toString(), dataDir, connectTimeoutMs: 60_000 }).catch((e: Error) => e);
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toMatch(/^cannot use PostgreSQL at postgresql:\/\/ash:\*\*\*@.*password authentication failed/);
    expect((error as Error).message).not.toContain("not-the-password");
  }, 30_000);

  it("waits for a database that an init step creates after the server started", async () => {
    const later = new URL(url());
    const name = `ash_late_${Date.now().toString(36)}`;
    later.pathname = `/${name}`;
    const opening = openDatabase({ url: later.toString(), dataDir, connectTimeoutMs: 30_000 });
    await new Promise((r) => setTimeout(r, 1500));
    await db.run(`CREATE DATABASE ${name}`);
    const late = await opening;
    try {
      expect(await late.ping()).toBe(true);
    } finally {
      await late.close();
      await db.run(`DROP DATABASE ${name}`).catch(() => undefined);
    }
  }, 60_000);
});
