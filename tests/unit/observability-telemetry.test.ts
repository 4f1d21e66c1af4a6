import { afterEach, describe, expect, it } from "vitest";
import { createTelemetry, disabledTelemetry, type Telemetry, type TelemetryOptions } from "../../src/observability/telemetry";
import { createObservability } from "../../src/observability/index";
import { startTelemetrySink, type TelemetrySink } from "../helpers/telemetry-sink";
import { freePort } from "../helpers/ports";

const open: Array<{ close(): Promise<void> } | Telemetry> = [];
afterEach(async () => {
  for (const thing of open.splice(0)) {
    if ("shutdown" in thing) await thing.shutdown(200);
    else await thing.close();
  }
});

async function sink(): Promise<TelemetrySink> {
  const s = await startTelemetrySink();
  open.push(s);
  return s;
}

function telemetry(options: TelemetryOptions): Telemetry & { sentCounts: number[]; droppedCounts: number[]; warnings: string[] } {
  const sentCounts: number[] = [];
  const droppedCounts: number[] = [];
  const warnings: string[] = [];
  const t = createTelemetry({
    flushIntervalMs: 50,
    backoffBaseMs: 20,
    backoffMaxMs: 100,
    onSent: (n) => sentCounts.push(n),
    onDropped: (n) => droppedCounts.push(n),
    warn: (m) => warnings.push(m),
    ...options,
  });
  open.push(t);
  return Object.assign(t, { sentCounts, droppedCounts, warnings });
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

describe("event telemetry", () => {
  it("delivers events in order, in batches of at most batchSize, with the bearer token", async () => {
    const s = await sink();
    const t = telemetry({ url: s.url, token: "sink-token-123456", batchSize: 100 });
    for (let i = 0; i < 250; i++) t.emit({ type: "text_delta", sessionId: "s1", agent: "support", seq: i, data: { delta: `d${i}` } });
    await s.waitFor(() => s.records().length === 250, 10_000, "250 records");
    // The sink stores a batch before it answers: wait for the answers too.
    expect(await t.flush(5000)).toBe(true);

    expect(s.batches.every((b) => b.records.length <= 100)).toBe(true);
    expect(s.batches.length).toBeGreaterThanOrEqual(3);
    expect(s.records().map((r) => r.seq)).toEqual([...Array(250).keys()]);
    const first = s.records()[0];
    expect(first).toEqual({ type: "text_delta", sessionId: "s1", agent: "support", seq: 0, at: expect.any(String), data: { delta: "d0" } });
    expect(new Date(first.at).toISOString()).toBe(first.at);
    for (const b of s.batches) {
      expect(b.headers.authorization).toBe("Bearer sink-token-123456");
      expect(b.headers["content-type"]).toBe("application/json");
    }
    expect(t.stats()).toEqual({ sent: 250, dropped: 0, queued: 0 });
    expect(sum(t.sentCounts)).toBe(250);
  });

  it("sends a partial batch after the interval, without a flush", async () => {
    const s = await sink();
    const t = telemetry({ url: s.url, batchSize: 100, flushIntervalMs: 30 });
    t.emit({ type: "session_created", sessionId: "a", at: new Date("2026-01-02T03:04:05.000Z") });
    t.emit({ type: "session_paused", sessionId: "a" });
    await s.waitFor(() => s.records().length === 2, 5000, "two records");
    expect(s.records()[0]).toEqual({ type: "session_created", sessionId: "a", at: "2026-01-02T03:04:05.000Z", data: null });
    expect(s.batches).toHaveLength(1);
  });

  it("with a sink that refuses connections: 10 000 emits return, the buffer stays bounded, every lost event is counted", async () => {
    const dead = `http://127.0.0.1:${await freePort()}/ingest`;
    const t = telemetry({ url: dead, maxBuffer: 1000, batchSize: 100, maxAttempts: 2 });
    for (let i = 0; i < 10_000; i++) t.emit({ type: "text_delta", seq: i, data: { delta: "x" } });
    // emit is synchronous: nothing was sent yet, the buffer holds the newest 1000.
    expect(t.stats()).toEqual({ sent: 0, dropped: 9000, queued: 1000 });

    await t.shutdown(300);
    expect(t.stats()).toEqual({ sent: 0, dropped: 10_000, queued: 0 });
    expect(sum(t.droppedCounts)).toBe(10_000);
    expect(t.warnings.some((w) => w.includes("cannot deliver"))).toBe(true);
  });

  it("with a sink that never answers: emits stay non-blocking, requests time out, shutdown ends on its deadline and counts the rest", async () => {
    const s = await sink();
    s.setMode({ kind: "hang" });
    const t = telemetry({ url: s.url, maxBuffer: 500, batchSize: 50, requestTimeoutMs: 100, maxAttempts: 2 });
    for (let i = 0; i < 10_000; i++) t.emit({ type: "text_delta", seq: i });
    expect(t.stats().queued).toBe(500);
    expect(t.stats().dropped).toBe(9500);
    await s.waitFor(() => s.attempts() >= 2, 5000, "a retry after a timed-out request");

    await t.shutdown(300);
    const stats = t.stats();
    expect(stats.sent).toBe(0);
    expect(stats.queued).toBe(0);
    expect(stats.dropped).toBe(10_000);
    expect(s.records()).toEqual([]);
  });

  it("retries a failing sink with backoff and delivers everything exactly once when it recovers", async () => {
    const s = await sink();
    s.setMode({ kind: "fail", status: 503 });
    const t = telemetry({ url: s.url, batchSize: 10, maxAttempts: 50, backoffBaseMs: 10, backoffMaxMs: 40 });
    for (let i = 0; i < 35; i++) t.emit({ type: "message", seq: i });
    await s.waitFor(() => s.attempts() >= 3, 5000, "three failed attempts");
    s.setMode({ kind: "ok" });
    await s.waitFor(() => s.records().length === 35, 10_000, "all records after recovery");
    expect(await t.flush(5000)).toBe(true);
    expect(s.records().map((r) => r.seq)).toEqual([...Array(35).keys()]);
    expect(t.stats()).toEqual({ sent: 35, dropped: 0, queued: 0 });
    expect(t.warnings.some((w) => w.includes("HTTP 503"))).toBe(true);
    expect(t.warnings.at(-1)).toContain("again");
  });

  it("honours Retry-After on 429", async () => {
    const s = await sink();
    s.setMode({ kind: "fail", status: 429, retryAfter: "0" });
    const t = telemetry({ url: s.url, batchSize: 5, maxAttempts: 20 });
    for (let i = 0; i < 5; i++) t.emit({ type: "x", seq: i });
    await s.waitFor(() => s.attempts() >= 2, 5000, "a retry");
    s.setMode({ kind: "ok" });
    expect(await t.flush(5000)).toBe(true);
    expect(s.records()).toHaveLength(5);
  });

  it("drops a batch the sink rejects as bad (4xx) without retrying it", async () => {
    const s = await sink();
    s.setMode({ kind: "fail", status: 400 });
    const t = telemetry({ url: s.url, batchSize: 10, maxAttempts: 5 });
    for (let i = 0; i < 10; i++) t.emit({ type: "x" });
    expect(await t.flush(5000)).toBe(true);
    expect(s.attempts()).toBe(1);
    expect(t.stats()).toEqual({ sent: 0, dropped: 10, queued: 0 });
    expect(t.warnings[0]).toContain("HTTP 400");
  });

  it("drops only the record that cannot be serialized", async () => {
    const s = await sink();
    const t = telemetry({ url: s.url, batchSize: 10 });
    t.emit({ type: "a" });
    t.emit({ type: "bad", data: { n: 10n } });
    t.emit({ type: "c" });
    expect(await t.flush(5000)).toBe(true);
    expect(s.records().map((r) => r.type)).toEqual(["a", "c"]);
    expect(t.stats()).toEqual({ sent: 2, dropped: 1, queued: 0 });
  });

  it("counts events emitted after shutdown as dropped and sends nothing more", async () => {
    const s = await sink();
    const t = telemetry({ url: s.url });
    t.emit({ type: "before" });
    await t.shutdown(2000);
    t.emit({ type: "after" });
    await new Promise((r) => setTimeout(r, 120));
    expect(s.records().map((r) => r.type)).toEqual(["before"]);
    expect(t.stats()).toEqual({ sent: 1, dropped: 1, queued: 0 });
  });

  it("never puts the token in its warnings", async () => {
    const dead = `http://127.0.0.1:${await freePort()}/ingest`;
    const t = telemetry({ url: dead, token: "very-secret-token-value", maxAttempts: 1 });
    t.emit({ type: "x" });
    await t.flush(2000);
    expect(t.warnings.length).toBeGreaterThan(0);
    for (const w of t.warnings) expect(w).not.toContain("very-secret-token-value");
  });

  it("is a no-op when off", async () => {
    const t = disabledTelemetry();
    t.emit({ type: "x" });
    expect(t.enabled).toBe(false);
    expect(t.stats()).toEqual({ sent: 0, dropped: 0, queued: 0 });
    expect(await t.flush()).toBe(true);
  });
});

describe("telemetry through createObservability", () => {
  it("is on exactly when ASH_TELEMETRY_URL is set, and its counters show in the metrics", async () => {
    const s = await sink();
    const off = await createObservability({});
    expect(off.telemetry.enabled).toBe(false);

    const obs = await createObservability({ ASH_TELEMETRY_URL: s.url, ASH_TELEMETRY_TOKEN: "tok-abcdef" }, { version: "1.2.3" });
    obs.telemetry.emit({ type: "session_created", sessionId: "s", agent: "a" });
    obs.telemetry.emit({ type: "session_ended", sessionId: "s", agent: "a" });
    await obs.shutdown(5000);
    expect(s.records().map((r) => r.type)).toEqual(["session_created", "session_ended"]);
    expect(s.batches[0].headers.authorization).toBe("Bearer tok-abcdef");
    expect(s.batches[0].headers["user-agent"]).toBe("ash/1.2.3");
    const text = await obs.metrics.render();
    expect(text).toContain("ash_telemetry_sent_total 2");
    expect(text).toContain("ash_telemetry_queue_events 0");
  });

  it("refuses a telemetry URL that is not http(s), naming the variable", async () => {
    await expect(createObservability({ ASH_TELEMETRY_URL: "ftp://example.invalid/x" })).rejects.toThrow(/ASH_TELEMETRY_URL must be an http/);
    await expect(createObservability({ ASH_TELEMETRY_URL: "not a url" })).rejects.toThrow(/ASH_TELEMETRY_URL/);
  });
});
