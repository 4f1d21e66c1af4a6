import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { openDatabase } from "../../src/db/connect";
import { migrate } from "../../src/db/migrate";
import { migrations } from "../../src/db/migrations";
import { commitVersion, ObjectCollectedError, touchObjects, versionObjects } from "../../src/db/queries/workspace-objects";
import type { AshDatabase } from "../../src/db/types";
import { describeWithPostgres, usePostgresDatabase } from "../helpers/postgres";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const keysOf = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `trees/${prefix}${String(i).padStart(63, "0")}`);

describeWithPostgres("the snapshot object catalog on PostgreSQL (SERIALIZABLE)", () => {
  const url = usePostgresDatabase();
  let dataDir: string;
  let db: AshDatabase;

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), "ash-db-objects-"));
    db = await openDatabase({ url: url(), dataDir });
    await migrate(db, migrations);
  });
  afterAll(async () => {
    await db?.close();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  it("lets two sessions commit the version they share at the same time, each at its first attempt", async () => {
    // Sessions of one agent that changed nothing save the very same version, with the same objects.
    const keys = keysOf("a", 50);
    const version = "a".repeat(64);
    await touchObjects(db, keys, Date.now());
    await db.transaction((tx) => commitVersion(tx, version, keys));

    const attempts = [0, 0];
    let firstCommitted!: () => void;
    let secondDone!: () => void;
    const firstIn = new Promise<void>((resolve) => (firstCommitted = resolve));
    const second = new Promise<void>((resolve) => (secondDone = resolve));
    const one = db.transaction(async (tx) => {
      attempts[0]!++;
      await commitVersion(tx, version, keys);
      firstCommitted();
      // Held open while the other commits the same version (bounded: one blocked by this would never finish).
      await Promise.race([second, sleep(1500)]);
    });
    await firstIn;
    const two = db.transaction(async (tx) => {
      attempts[1]!++;
      await commitVersion(tx, version, keys);
    });
    await two.finally(secondDone);
    await one;
    expect(attempts).toEqual([1, 1]);
    expect((await versionObjects(db, version)).sort()).toEqual([...keys].sort());
  });

  it("refuses to commit a version, new or recorded, while one of its objects is being collected, and records nothing", async () => {
    const keys = keysOf("b", 5);
    const recorded = "b".repeat(64);
    await touchObjects(db, keys, Date.now());
    await db.transaction((tx) => commitVersion(tx, recorded, keys));
    await db.run("UPDATE snapshot_objects SET deleting_at = ? WHERE object_key = ?", [Date.now(), keys[2]]);

    const fresh = "c".repeat(64);
    await expect(db.transaction((tx) => commitVersion(tx, fresh, keys))).rejects.toThrow(ObjectCollectedError);
    expect(await versionObjects(db, fresh)).toEqual([]);
    const error = await db.transaction((tx) => commitVersion(tx, recorded, keys)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ObjectCollectedError);
    expect((error as ObjectCollectedError).keys).toEqual([keys[2]]);
  });
});
