import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { DiskWatcher } from "../../src/sandbox/disk-usage";

// The watcher measures at intervals only between start() and pause(): an idle
// sandbox (nothing running that could write) costs no measurement at all.
describe("the disk watcher", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  const watcher = (bytes = 0) => {
    const calls = { count: 0, exceeded: 0 };
    const w = new DiskWatcher(
      async () => {
        calls.count++;
        return bytes;
      },
      100,
      () => calls.exceeded++,
      1000,
    );
    return { w, calls };
  };

  it("measures once a second while started, once more on pause, then not at all", async () => {
    const { w, calls } = watcher();
    w.start();
    await vi.advanceTimersByTimeAsync(3500);
    expect(calls.count).toBe(3);
    w.pause();
    await vi.advanceTimersByTimeAsync(0);
    expect(calls.count).toBe(4);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(calls.count).toBe(4);
    w.start();
    await vi.advanceTimersByTimeAsync(2500);
    expect(calls.count).toBe(6);
    w.stop();
  });

  it("keeps one timer however often it is paused and started again", async () => {
    const { w, calls } = watcher();
    w.start();
    for (let i = 0; i < 20; i++) {
      w.pause();
      w.start();
      w.start();
    }
    const afterToggles = calls.count;
    await vi.advanceTimersByTimeAsync(10_500);
    expect(calls.count - afterToggles).toBe(10);
    w.stop();
    w.start();
    await vi.advanceTimersByTimeAsync(5000);
    expect(calls.count - afterToggles).toBe(10);
  });

  it("lets a walk still under way at a pause end without starting a second timer", async () => {
    let count = 0;
    let release: (() => void) | undefined;
    const w = new DiskWatcher(
      () => {
        count++;
        // The first walk hangs until released; the rest answer at once.
        return count === 1 ? new Promise<number>((resolve) => (release = () => resolve(0))) : Promise.resolve(0);
      },
      100,
      () => {},
      1000,
    );
    w.start();
    await vi.advanceTimersByTimeAsync(1000);
    expect(count).toBe(1);
    w.pause();
    w.start();
    release!();
    const before = count;
    await vi.advanceTimersByTimeAsync(10_500);
    // One walk a second from the second start, none from the first one's timer.
    expect(count - before).toBe(10);
    w.stop();
  });

  it("fires for a workspace left over its limit when the last process ends", async () => {
    const { w, calls } = watcher(500);
    w.start();
    w.pause();
    await vi.advanceTimersByTimeAsync(0);
    expect(calls.exceeded).toBe(1);
    expect(w.lastBytes).toBe(500);
  });
});

// A sandbox that used almost no CPU since the last walk (an agent waiting for a message, a spare)
// is walked every few seconds instead of every second; one that works is walked every second.
describe("the disk watcher's quiet cue", () => {
  beforeEach(() => vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "Date", "performance"] }));
  afterEach(() => vi.useRealTimers());

  const watcher = (cpuUsageNs: () => number | null) => {
    const calls = { count: 0 };
    const w = new DiskWatcher(
      async () => {
        calls.count++;
        return 0;
      },
      100,
      () => {},
      1000,
      10_000,
      { cpuUsageNs, budgetNsPerSecond: 20e6, maxQuietMs: 5000 },
    );
    return { w, calls };
  };

  it("walks a quiet sandbox once every five seconds", async () => {
    let usage = 0;
    const { w, calls } = watcher(() => (usage += 5e6)); // 5 ms at every reading: under the budget
    w.start();
    await vi.advanceTimersByTimeAsync(1000);
    expect(calls.count).toBe(1); // the first tick has nothing to compare with
    await vi.advanceTimersByTimeAsync(20_000);
    expect(calls.count).toBe(5); // at 6, 11, 16 and 21 s
    expect(w.quietSkips).toBe(16);
    expect(w.walks).toBe(calls.count);
    w.stop();
  });

  it("walks every second while the sandbox uses more CPU than its budget", async () => {
    let usage = 0;
    const { w, calls } = watcher(() => (usage += 30e6));
    w.start();
    await vi.advanceTimersByTimeAsync(10_500);
    expect(calls.count).toBe(10);
    expect(w.quietSkips).toBe(0);
    w.stop();
  });

  it("walks at once when CPU use builds up past the budget over several quiet seconds", async () => {
    let usage = 0;
    let step = 1e6;
    const { w, calls } = watcher(() => (usage += step));
    w.start();
    await vi.advanceTimersByTimeAsync(2500);
    expect(calls.count).toBe(1);
    // A writer wakes up: 50 ms of CPU is more than 20 ms for each of the 2-3 s since the walk.
    step = 50e6;
    await vi.advanceTimersByTimeAsync(1000);
    expect(calls.count).toBe(2);
    w.stop();
  });

  it("walks every second when the host cannot tell CPU use", async () => {
    const { w, calls } = watcher(() => null);
    w.start();
    await vi.advanceTimersByTimeAsync(5500);
    expect(calls.count).toBe(5);
    expect(w.quietSkips).toBe(0);
    w.stop();
  });

  it("still walks once more when the last process ends, however quiet", async () => {
    const { w, calls } = watcher(() => 0);
    w.start();
    await vi.advanceTimersByTimeAsync(2500);
    expect(calls.count).toBe(1);
    w.pause();
    await vi.advanceTimersByTimeAsync(0);
    expect(calls.count).toBe(2);
  });
});
