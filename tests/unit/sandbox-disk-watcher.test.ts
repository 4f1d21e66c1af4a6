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
