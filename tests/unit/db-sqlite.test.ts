import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import BetterSqlite3 from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { openDatabase } from "../../src/db/connect";
import { DatabaseBusyError, isUniqueViolation } from "../../src/db/errors";
import { openSqlite } from "../../src/db/sqlite";
import type { AshDatabase } from "../../src/db/types";

let dir: string;
let db: AshDatabase;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), "ash-db-sqlite-"));
  db = await openDatabase({ dataDir: dir });
  await db.run("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, qty BIGINT NOT NULL)");
});

afterEach(async () => {
  await db.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("SQLite queries", () => {
  it("stores the database at <dataDir>/ash.db", () => {
    expect(db.dialect).toBe("sqlite");
    expect(existsSync(join(dir, "ash.db"))).toBe(true);
  });

  it("runs all/get/run with ? placeholders and reports changed rows", async () => {
    expect(await db.run("INSERT INTO items (name, qty) VALUES (?, ?), (?, ?)", ["a", 1, "b", 2])).toEqual({ changes: 2 });
    expect(await db.all("SELECT name, qty FROM items ORDER BY name")).toEqual([
      { name: "a", qty: 1 },
      { name: "b", qty: 2 },
    ]);
    expect(await db.get("SELECT qty FROM items WHERE name = ?", ["b"])).toEqual({ qty: 2 });
    expect(await db.get("SELECT qty FROM items WHERE name = ?", ["missing"])).toBeUndefined();
    expect(await db.run("UPDATE items SET qty = qty + 1 WHERE qty > ?", [5])).toEqual({ changes: 0 });
  });

  it("returns the inserted row from INSERT ... RETURNING", async () => {
    const row = await db.get<{ id: number; name: string; qty: number }>(
      "INSERT INTO items (name, qty) VALUES (?, ?) RETURNING id, name, qty",
      ["c", 1732550000000],
    );
    expect(row).toEqual({ id: expect.any(Number), name: "c", qty: 1732550000000 });
    expect(await db.all("INSERT INTO items (name, qty) VALUES (?, ?) RETURNING name", ["d", 1])).toEqual([{ name: "d" }]);
  });

  it("binds undefined as NULL", async () => {
    await db.run("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)");
    await db.run("INSERT INTO notes (id, body) VALUES (?, ?)", [1, undefined]);
    expect(await db.get("SELECT body FROM notes WHERE id = 1")).toEqual({ body: null });
  });

  it("recognises a unique violation", async () => {
    await db.run("INSERT INTO items (id, name, qty) VALUES (1, 'a', 1)");
    const byName = await db.run("INSERT INTO items (name, qty) VALUES ('a', 2)").catch((e: unknown) => e);
    const byKey = await db.run("INSERT INTO items (id, name, qty) VALUES (1, 'z', 2)").catch((e: unknown) => e);
    expect(isUniqueViolation(byName)).toBe(true);
    expect(isUniqueViolation(byKey)).toBe(true);
    const other = await db.run("INSERT INTO items (name) VALUES ('x')").catch((e: unknown) => e);
    expect(isUniqueViolation(other)).toBe(false);
    expect(await db.get("SELECT COUNT(*) AS n FROM items")).toEqual({ n: 1 });
  });

  it("enforces foreign keys and uses WAL with synchronous=NORMAL", async () => {
    await db.run("CREATE TABLE parts (id INTEGER PRIMARY KEY, item_id INTEGER NOT NULL REFERENCES items(id))");
    await expect(db.run("INSERT INTO parts (item_id) VALUES (?)", [999])).rejects.toThrow(/FOREIGN KEY/);
    const raw = (await db.db0.getInstance()) as BetterSqlite3.Database;
    expect(raw.pragma("journal_mode", { simple: true })).toBe("wal");
    expect(raw.pragma("synchronous", { simple: true })).toBe(1);
    expect(raw.pragma("busy_timeout", { simple: true })).toBe(5000);
  });

  it("ping answers true while open and false after close", async () => {
    expect(await db.ping()).toBe(true);
    const other = await openDatabase({ dataDir: dir });
    await other.close();
    expect(await other.ping()).toBe(false);
    await expect(other.all("SELECT 1")).rejects.toThrow(/disposed/);
  });
});

describe("SQLite database URLs", () => {
  it("accepts sqlite: and file: URLs, relative to the data directory", async () => {
    for (const url of ["sqlite:", "file:", "sqlite:other.db", `file://${join(dir, "abs.db")}`]) {
      const opened = await openDatabase({ url, dataDir: dir });
      expect(opened.dialect).toBe("sqlite");
      await opened.close();
    }
    expect(existsSync(join(dir, "other.db"))).toBe(true);
    expect(existsSync(join(dir, "abs.db"))).toBe(true);
  });

  it("names the file when the database cannot be opened", async () => {
    const notAFolder = join(dir, "ash.db"); // a file, so nothing can be created beneath it
    await expect(openDatabase({ dataDir: notAFolder })).rejects.toThrow(
      `cannot open the SQLite database at ${join(notAFolder, "ash.db")}: `,
    );
  });

  it("refuses an unsupported scheme without creating anything", async () => {
    const empty = mkdtempSync(join(tmpdir(), "ash-db-url-"));
    try {
      await expect(openDatabase({ url: "mysql://u:secret@localhost/x", dataDir: empty })).rejects.toThrow(
        /unsupported database URL scheme "mysql"/,
      );
      await expect(openDatabase({ url: "mysql://u:secret@localhost/x", dataDir: empty })).rejects.not.toThrow(/secret/);
      expect(existsSync(join(empty, "ash.db"))).toBe(false);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });
});

describe("SQLite transactions", () => {
  it("commits every write of a transaction that returns", async () => {
    const result = await db.transaction(async (tx) => {
      await tx.run("INSERT INTO items (name, qty) VALUES (?, ?)", ["a", 1]);
      const row = await tx.get<{ id: number }>("INSERT INTO items (name, qty) VALUES (?, ?) RETURNING id", ["b", 2]);
      return row!.id;
    });
    expect(result).toEqual(expect.any(Number));
    expect(await db.all("SELECT name FROM items ORDER BY name")).toEqual([{ name: "a" }, { name: "b" }]);
  });

  it("rolls back every write of a transaction that throws", async () => {
    await expect(
      db.transaction(async (tx) => {
        await tx.run("INSERT INTO items (name, qty) VALUES (?, ?)", ["a", 1]);
        throw new Error("changed my mind");
      }),
    ).rejects.toThrow("changed my mind");
    expect(await db.all("SELECT * FROM items")).toEqual([]);
  });

  it("gives the exact total when many transactions increment one counter at once", async () => {
    await db.run("INSERT INTO items (id, name, qty) VALUES (1, 'counter', 0)");
    await Promise.all(
      Array.from({ length: 200 }, () =>
        db.transaction(async (tx) => {
          const row = await tx.get<{ qty: number }>("SELECT qty FROM items WHERE id = 1");
          await new Promise((resolve) => setImmediate(resolve)); // let other work try to interleave
          await tx.run("UPDATE items SET qty = ? WHERE id = 1", [row!.qty + 1]);
        }),
      ),
    );
    expect(await db.get("SELECT qty FROM items WHERE id = 1")).toEqual({ qty: 200 });
  });

  it("keeps a query sent during an open transaction out of it", async () => {
    let reachedGate!: () => void;
    const atGate = new Promise<void>((resolve) => (reachedGate = resolve));
    let openGate!: () => void;
    const gate = new Promise<void>((resolve) => (openGate = resolve));

    const failing = db.transaction(async (tx) => {
      await tx.run("INSERT INTO items (name, qty) VALUES ('inside', 1)");
      reachedGate();
      await gate;
      throw new Error("roll it back");
    });
    await atGate;
    // Sent while the transaction is open: it must wait, not join the transaction.
    const outside = db.run("INSERT INTO items (name, qty) VALUES ('outside', 1)");
    openGate();
    await expect(failing).rejects.toThrow("roll it back");
    await outside;
    expect(await db.all("SELECT name FROM items")).toEqual([{ name: "outside" }]);
  });

  it("refuses queries on the database itself from inside its transaction instead of deadlocking", async () => {
    await expect(
      db.transaction(async () => {
        await db.get("SELECT 1");
      }),
    ).rejects.toThrow(/use the transaction's `tx` argument/);
    await expect(db.transaction(async () => db.transaction(async () => 1))).rejects.toThrow(/do not nest/);
    expect(await db.get("SELECT 1 AS one")).toEqual({ one: 1 });
  });

  it("refuses a tx used after its transaction finished", async () => {
    let leaked: { run(sql: string): Promise<unknown> } | undefined;
    await db.transaction(async (tx) => {
      leaked = tx;
    });
    await expect(leaked!.run("INSERT INTO items (name, qty) VALUES ('late', 1)")).rejects.toThrow(/already finished/);
    expect(await db.all("SELECT * FROM items")).toEqual([]);
  });

  it("retries when another process holds the write lock, then commits", async () => {
    const impatient = await openSqlite({ path: join(dir, "ash.db"), busyTimeoutMs: 0 });
    const otherProcess = new BetterSqlite3(join(dir, "ash.db"));
    try {
      otherProcess.exec("BEGIN IMMEDIATE");
      setTimeout(() => otherProcess.exec("COMMIT"), 150);
      let attempts = 0;
      await impatient.transaction(async (tx) => {
        attempts++;
        await tx.run("INSERT INTO items (name, qty) VALUES ('after-wait', 1)");
      });
      expect(attempts).toBe(1); // BEGIN IMMEDIATE failed before fn ran; fn ran once
      expect(await db.get("SELECT name FROM items")).toEqual({ name: "after-wait" });
    } finally {
      otherProcess.close();
      await impatient.close();
    }
  });

  it("gives up with DatabaseBusyError when the lock is never released, changing nothing", async () => {
    const impatient = await openSqlite({ path: join(dir, "ash.db"), busyTimeoutMs: 0 });
    const otherProcess = new BetterSqlite3(join(dir, "ash.db"));
    try {
      otherProcess.exec("BEGIN IMMEDIATE");
      const failure = await impatient
        .transaction((tx) => tx.run("INSERT INTO items (name, qty) VALUES ('never', 1)"))
        .catch((e: unknown) => e);
      expect(failure).toBeInstanceOf(DatabaseBusyError);
      expect(failure).toMatchObject({ cause: { code: "SQLITE_BUSY" } });
      otherProcess.exec("ROLLBACK");
      expect(await db.all("SELECT * FROM items")).toEqual([]);
    } finally {
      otherProcess.close();
      await impatient.close();
    }
  }, 20_000);

  it("keeps a committed transaction when the process is killed right after", async () => {
    const child = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        "--input-type=module",
        "-e",
        `
        const { openDatabase } = await import(${JSON.stringify(new URL("../../src/db/connect.ts", import.meta.url).href)});
        const db = await openDatabase({ dataDir: ${JSON.stringify(dir)} });
        await db.transaction((tx) => tx.run("INSERT INTO items (name, qty) VALUES ('survivor', 7)"));
        process.kill(process.pid, "SIGKILL");
        `,
      ],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    let stderr = "";
    child.stderr.on("data", (chunk) => (stderr += chunk));
    const signal = await new Promise((resolve) => child.on("exit", (_code, sig) => resolve(sig)));
    expect(signal, stderr).toBe("SIGKILL");
    expect(await db.get("SELECT qty FROM items WHERE name = 'survivor'")).toEqual({ qty: 7 });
  }, 30_000);
});
