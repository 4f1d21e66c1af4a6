/**
 * The database going away and coming back, on a private PostgreSQL cluster
 * (its own port and data directory) so stopping it cannot disturb other tests.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, expect, it, vi } from "vitest";
import { openDatabase } from "../../src/db/connect";
import { DatabaseUnavailableError } from "../../src/db/errors";
import type { AshDatabase } from "../../src/db/types";
import { describeWithPostgres } from "../helpers/postgres";

const script = fileURLToPath(new URL("../../infra/postgres.sh", import.meta.url));

/** A port nothing listens on right now. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describeWithPostgres("PostgreSQL outages", () => {
  let dataDir: string;
  // Not inside dataDir: that folder is private to us, and the cluster runs as the postgres user.
  const clusterDir = join(tmpdir(), `ash-db-outage-pg-${process.pid}-${Date.now()}`);
  let port: number;
  let url: string;
  let db: AshDatabase;

  const cluster = async (command: "start" | "stop" | "restart" | "purge") => {
    const { stdout } = await promisify(execFile)("bash", [script, command], {
      env: { ...process.env, ASH_PG_PORT: String(port), ASH_PG_DIR: clusterDir },
    });
    return stdout.trim();
  };

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), "ash-db-outage-"));
    port = await freePort();
    url = await cluster("start");
    db = await openDatabase({ url, dataDir, connectTimeoutMs: 30_000 });
    await db.run("CREATE TABLE IF NOT EXISTS marks (id TEXT PRIMARY KEY)");
  }, 120_000);

  afterAll(async () => {
    await db?.close();
    if (port) await cluster("purge").catch(() => undefined);
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  }, 60_000);

  it("keeps serving after the database restarts, without reopening anything", async () => {
    await db.run("INSERT INTO marks (id) VALUES ('before')");
    await cluster("restart");
    // Idle connections died with the old server; the first query may still meet
    // one of them (and must then say "unavailable"), later ones open fresh ones.
    const failures: unknown[] = [];
    let rows: unknown[] | undefined;
    for (let i = 0; i < 20 && !rows; i++) {
      rows = await db.all("SELECT id FROM marks ORDER BY id").catch((err: unknown) => {
        failures.push(err);
        return undefined;
      });
      if (!rows) await new Promise((resolve) => setTimeout(resolve, 250));
    }
    expect(rows).toEqual([{ id: "before" }]);
    for (const failure of failures) expect(failure).toBeInstanceOf(DatabaseUnavailableError);
    expect(await db.ping()).toBe(true);
  }, 60_000);

  it("answers DatabaseUnavailableError and ping false while down, and recovers when it is back", async () => {
    await cluster("stop");
    try {
      const query = await db.all("SELECT 1").catch((err: unknown) => err);
      expect(query).toBeInstanceOf(DatabaseUnavailableError);
      expect((query as Error).message).toBe("database unavailable: connection refused");
      const tx = await db.transaction((t) => t.run("INSERT INTO marks (id) VALUES ('during')")).catch((e: unknown) => e);
      expect(tx).toBeInstanceOf(DatabaseUnavailableError);
      expect(await db.ping()).toBe(false);
    } finally {
      await cluster("start");
    }
    expect(await db.ping()).toBe(true);
    expect(await db.all("SELECT id FROM marks WHERE id = 'during'")).toEqual([]);
    await db.run("INSERT INTO marks (id) VALUES ('after')");
    expect(await db.get("SELECT id FROM marks WHERE id = 'after'")).toEqual({ id: "after" });
  }, 60_000);

  it("fails a transaction cut off by the shutdown with DatabaseUnavailableError and applies none of it", async () => {
    let reachedGate!: () => void;
    const atGate = new Promise<void>((resolve) => (reachedGate = resolve));
    let openGate!: () => void;
    const gate = new Promise<void>((resolve) => (openGate = resolve));
    const cutOff = db
      .transaction(async (tx) => {
        await tx.run("INSERT INTO marks (id) VALUES ('cut-off')");
        reachedGate();
        await gate; // the server stops while this transaction is open
        await tx.run("INSERT INTO marks (id) VALUES ('cut-off-2')");
      })
      .catch((err: unknown) => err);
    await atGate;
    await cluster("stop");
    openGate();
    expect(await cutOff).toBeInstanceOf(DatabaseUnavailableError);
    await cluster("start");
    expect(await db.all("SELECT id FROM marks WHERE id LIKE 'cut-off%'")).toEqual([]);
  }, 60_000);

  it("waits at start-up for a database that is not up yet, logging each attempt", async () => {
    const stderr = vi.spyOn(process.stderr, "write");
    await cluster("stop");
    try {
      const opening = openDatabase({ url, dataDir, connectTimeoutMs: 30_000 });
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      await cluster("start");
      const late = await opening;
      expect(await late.get("SELECT 1 AS one")).toEqual({ one: 1 });
      await late.close();
      const logged = stderr.mock.calls.map((call) => String(call[0])).join("");
      expect(logged).toMatch(/database not reachable yet \(connection refused\); retrying in \d+(\.\d)?s/);
    } finally {
      stderr.mockRestore();
      await cluster("start");
    }
  }, 60_000);

  it("gives up at start-up with a one-line error when the database never comes", async () => {
    const nowhere = `postgresql://ash:secret-password@127.0.0.1:${await freePort()}/ash`;
    const error = await openDatabase({ url: nowhere, dataDir, connectTimeoutMs: 1_500 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DatabaseUnavailableError);
    expect((error as Error).message).toMatch(
      /^PostgreSQL at postgresql:\/\/ash:\*\*\*@127\.0\.0\.1:\d+\/ash was not reachable within 1\.5s \(connection refused\)$/,
    );
  }, 30_000);
});
