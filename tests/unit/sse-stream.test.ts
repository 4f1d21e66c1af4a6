import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openDatabase } from "../../src/db/connect";
import { migrate } from "../../src/db/migrate";
import { migrations } from "../../src/db/migrations";
import type { AshDatabase } from "../../src/db/types";
import { EventLog } from "../../src/sessions/event-log";
import { eventStreamResponse, PING_EVERY_MS } from "../../src/server/sse";
import { parseFrames } from "../helpers/server";

describe("event streams over the stored event log", () => {
  let dir: string;
  let db: AshDatabase;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "ash-sse-"));
    db = await openDatabase({ dataDir: dir });
    await migrate(db, migrations);
  });
  afterAll(async () => {
    await db.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("gives a slow reader bounded chunks pulled on demand, and every event once, in order", async () => {
    const log = await EventLog.open(db, "slow-reader");
    const response = eventStreamResponse(log, 0, { endAfterDone: true });
    const reader = response.body!.getReader();
    await log.append([{ type: "session_start", data: { sessionId: "slow-reader" } }]);
    const first = parseFrames(new TextDecoder().decode((await reader.read()).value));
    expect(first.map((f) => f.event)).toEqual(["session_start"]);

    // 5000 events arrive while the reader takes nothing.
    for (let i = 0; i < 50; i++) {
      await log.append(Array.from({ length: 100 }, (_, j) => ({ type: "text_delta" as const, data: { delta: `${i * 100 + j} ` } })));
    }
    await log.append([{ type: "done", data: { sessionId: "slow-reader" } }]);

    const chunkSizes: number[] = [];
    const frames = [...first];
    for (let c = await reader.read(); !c.done; c = await reader.read()) {
      const parsed = parseFrames(new TextDecoder().decode(c.value));
      chunkSizes.push(parsed.length);
      frames.push(...parsed);
    }
    // Read in batches as the reader asked, never all at once.
    expect(Math.max(...chunkSizes)).toBeLessThanOrEqual(100);
    expect(chunkSizes.length).toBeGreaterThanOrEqual(50);
    expect(frames.map((f) => f.id)).toEqual(Array.from({ length: 5002 }, (_, i) => i + 1));
    expect(frames.at(-1)?.event).toBe("done");
  });

  it("replays stored events to a new reader from any point, across a reopen", async () => {
    const log = await EventLog.open(db, "replay");
    await log.append(Array.from({ length: 10 }, (_, i) => ({ type: "text_delta" as const, data: { delta: String(i) } })));
    await log.append([{ type: "done", data: {} }]);
    const reopened = await EventLog.open(db, "replay");
    expect(reopened.lastSeq).toBe(11);
    const text = await eventStreamResponse(reopened, 7, { endAfterDone: true }).text();
    expect(parseFrames(text).map((f) => f.id)).toEqual([8, 9, 10, 11]);
  });

  it("sends many readers of one session the same frames, each from where it began, whether they read the events from memory or the database", async () => {
    const log = await EventLog.open(db, "many-readers");
    await log.append(Array.from({ length: 20 }, (_, i) => ({ type: "text_delta" as const, data: { delta: `before ${i} "quoted" é` } })));
    // Readers from the start, from the middle, and of nothing yet: 30 of them, all open before the turn goes on.
    const starts = Array.from({ length: 30 }, (_, i) => [0, 10, 20][i % 3]!);
    const texts = starts.map((after) => eventStreamResponse(log, after, { endAfterDone: true }).text());
    for (let i = 0; i < 5; i++) await log.append([{ type: "text_delta", data: { delta: `live ${i}` } }]);
    await log.append([{ type: "done", data: { sessionId: "many-readers" } }]);
    const got = await Promise.all(texts);
    // A reader opened once the log is reopened reads every event from the database.
    const fromDatabase = await eventStreamResponse(await EventLog.open(db, "many-readers"), 0, { endAfterDone: true }).text();
    const expected = (after: number) => fromDatabase.slice(fromDatabase.indexOf(`id: ${after + 1}\n`));
    got.forEach((text, i) => expect(text, `reader ${i}`).toBe(expected(starts[i]!)));
    const frames = parseFrames(fromDatabase);
    expect(frames.map((f) => f.id)).toEqual(Array.from({ length: 26 }, (_, i) => i + 1));
    expect(frames[3]!.data).toEqual({ delta: `before 3 "quoted" é` });
    expect(frames[22]!.data).toEqual({ delta: "live 2" });
  });

  it("sends a ping comment after its interval of silence (15 s by default), then goes on with events", async () => {
    expect(PING_EVERY_MS).toBe(15_000);
    const log = await EventLog.open(db, "quiet");
    const reader = eventStreamResponse(log, 0, { endAfterDone: true, pingEveryMs: 300 }).body!.getReader();
    const started = Date.now();
    const first = new TextDecoder().decode((await reader.read()).value);
    expect(first).toBe(": ping\n\n");
    // Not before the interval: silence, not a timer of its own, brings the ping.
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    await log.append([{ type: "done", data: {} }]);
    const next = parseFrames(new TextDecoder().decode((await reader.read()).value));
    expect(next.map((f) => f.event)).toEqual(["done"]);
  });
});
