// The event log of one session (src/sessions/event-log.ts) over a real SQLite file.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { openSqlite } from "../../src/db/sqlite";
import { migrate } from "../../src/db/migrate";
import { migrations } from "../../src/db/migrations";
import { insertEvents } from "../../src/db/queries/events";
import type { AshDatabase } from "../../src/db/types";
import { EventLog } from "../../src/sessions/event-log";

let dir: string;
let db: AshDatabase;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "ash-event-log-"));
  db = await openSqlite({ path: join(dir, "ash.db") });
  await migrate(db, migrations);
});
afterEach(async () => {
  await db.close();
  await rm(dir, { recursive: true, force: true });
});

describe("a session's event log", () => {
  it("reads from any point: the recent events from memory, older ones from the database, in order and within the limit", async () => {
    const log = await EventLog.open(db, "s1");
    // More than the log keeps in memory (512), written in batches of different sizes.
    let n = 0;
    for (const size of [1, 7, 300, 250, 90]) await log.append(Array.from({ length: size }, () => ({ type: "message", data: { n: ++n } })));
    expect(log.lastSeq).toBe(648);
    for (const after of [0, 1, 100, 135, 136, 137, 400, 640, 647, 648, 700]) {
      for (const limit of [1, 5, 200]) {
        const got = (await log.read(after, limit)).map((e) => e.seq);
        const want = Array.from({ length: Math.max(0, Math.min(limit, 648 - after)) }, (_, i) => after + 1 + i);
        expect(got, `after ${after}, limit ${limit}`).toEqual(want);
      }
    }
    // What it reads is what was written.
    expect((await log.read(599, 1))[0]!.data).toEqual({ n: 600 });
    log.close();
  });

  it("ends its waiting readers when a write fails (a seq another server took), and a new log reads what is stored", async () => {
    const log = await EventLog.open(db, "s1");
    await log.append([{ type: "message", data: { n: 1 } }]);
    let woken = false;
    const reader = log.attach();
    void log.waitForMore(log.lastSeq, 600_000).then(() => (woken = true));
    // Another server, which owns the session now, wrote the next events first.
    await insertEvents(db, "s1", [
      { seq: 2, type: "error", data: { code: "server_lost" }, createdAt: Date.now() },
      { seq: 3, type: "done", data: {}, createdAt: Date.now() },
    ]);
    await expect(log.append([{ type: "message", data: { n: 2 } }])).rejects.toThrow();
    for (let i = 0; i < 10 && !woken; i++) await new Promise((resolve) => setImmediate(resolve));
    expect(woken).toBe(true);
    expect(log.isClosed).toBe(true);
    expect(log.broken).toBe(true);
    // Nothing of the failed write is shown, and a reader coming back gets the stored events.
    expect(await log.read(1)).toEqual([]);
    reader();
    const fresh = await EventLog.open(db, "s1");
    expect((await fresh.read(1)).map((e) => e.type)).toEqual(["error", "done"]);
  });
});
