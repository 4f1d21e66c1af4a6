/**
 * ash_database_errors_total against a real PostgreSQL that goes away and
 * comes back (a private cluster: its own port and folder).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { openDatabase } from "../../src/db/connect";
import { isUniqueViolation, isUnavailableError } from "../../src/db/errors";
import type { AshDatabase } from "../../src/db/types";
import { Metrics } from "../../src/observability/metrics";
import { observeDatabase } from "../../src/observability/database";
import { describeWithPostgres } from "../helpers/postgres";
import { privatePostgres, type PrivatePostgres } from "../helpers/private-postgres";

describeWithPostgres("database errors in the metrics", () => {
  let cluster: PrivatePostgres;
  let dataDir: string;
  let raw: AshDatabase;
  let db: AshDatabase;
  const metrics = new Metrics();

  const errorsCounted = async () => {
    const line = (await metrics.render()).split("\n").find((l) => l.startsWith("ash_database_errors_total "));
    return Number(line!.split(" ")[1]);
  };

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), "ash-obs-db-"));
    cluster = await privatePostgres();
    await cluster.start();
    raw = await openDatabase({ url: cluster.url, dataDir, connectTimeoutMs: 30_000 });
    db = observeDatabase(raw, metrics);
    await db.run("CREATE TABLE IF NOT EXISTS obs_marks (id TEXT PRIMARY KEY)");
  }, 120_000);

  afterAll(async () => {
    await raw?.close().catch(() => undefined);
    await cluster?.purge().catch(() => undefined);
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  }, 60_000);

  it("counts nothing for work that succeeds or fails the way callers expect", async () => {
    await db.run("INSERT INTO obs_marks (id) VALUES (?)", ["a"]);
    const duplicate = await db.run("INSERT INTO obs_marks (id) VALUES (?)", ["a"]).catch((e) => e);
    expect(isUniqueViolation(duplicate)).toBe(true);
    expect(await db.all("SELECT id FROM obs_marks")).toEqual([{ id: "a" }]);
    expect(db.dialect).toBe("postgres");
    expect(await db.ping()).toBe(true);
    expect(await errorsCounted()).toBe(0);
  });

  it("counts each operation that fails while the database is down, and stops counting once it is back", async () => {
    await cluster.stop();
    const failed = await db.all("SELECT id FROM obs_marks").catch((e) => e);
    expect(isUnavailableError(failed)).toBe(true);
    const failedTx = await db.transaction(async (tx) => tx.run("INSERT INTO obs_marks (id) VALUES (?)", ["b"])).catch((e) => e);
    expect(isUnavailableError(failedTx)).toBe(true);
    expect(await db.ping()).toBe(false);
    expect(await errorsCounted()).toBe(3);

    await cluster.start();
    const deadline = Date.now() + 30_000;
    while (!(await raw.ping()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    expect(await db.all("SELECT id FROM obs_marks")).toEqual([{ id: "a" }]);
    expect(await errorsCounted()).toBe(3);
  }, 90_000);
});
