import { describe, expect, it } from "vitest";
import { StartQueue, type StartPriority } from "../../src/runtime/start-queue";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("the start queue", () => {
  it("runs at most its concurrency at once, sessions before spares, and reports each wait and start-up", async () => {
    const seen: Array<{ phase: string; ms: number; priority: StartPriority }> = [];
    const queue = new StartQueue(1, (phase, ms, priority) => seen.push({ phase, ms, priority }));
    const first = queue.enqueue("session");
    const spare = queue.enqueue("spare");
    const second = queue.enqueue("session");
    const releaseFirst = await first.ready;
    expect(queue.active).toBe(1);
    expect(queue.queued()).toBe(2);
    await sleep(60);
    releaseFirst();
    releaseFirst(); // a second release of one slot changes nothing
    const releaseSecond = await second.ready;
    expect(queue.queued("spare")).toBe(1);
    releaseSecond();
    (await spare.ready)();
    expect(queue.active).toBe(0);
    expect(queue.peak).toBe(1);

    expect(seen.map((s) => `${s.phase}:${s.priority}`)).toEqual([
      "queued:session",
      "starting:session",
      "queued:session",
      "starting:session",
      "queued:spare",
      "starting:spare",
    ]);
    // The first start held its slot for the 60 ms sleep; the second waited behind it as long.
    expect(seen[1]!.ms).toBeGreaterThanOrEqual(50);
    expect(seen[2]!.ms).toBeGreaterThanOrEqual(50);
  });

  it("reports nothing for a start given up while it waited", async () => {
    const seen: string[] = [];
    const queue = new StartQueue(1, (phase) => seen.push(phase));
    const running = queue.enqueue("session");
    const waiting = queue.enqueue("session");
    waiting.cancel();
    (await running.ready)();
    expect(queue.queued()).toBe(0);
    expect(seen).toEqual(["queued", "starting"]);
  });

  it("refuses a concurrency that is not a whole number of at least 1", () => {
    expect(() => new StartQueue(0)).toThrow(/at least 1/);
    expect(() => new StartQueue(1.5)).toThrow(/at least 1/);
  });
});
