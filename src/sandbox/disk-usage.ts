import { lstat, readdir } from "node:fs/promises";
import { join } from "node:path";

/**
 * Bytes used under `dirs`, counting each entry as the larger of its length
 * and its allocated blocks: a sparse file counts at its full length (that
 * is what a snapshot would copy) and a heap of empty files still counts.
 * Symlinks are not followed. Stops early once `stopAbove` is passed.
 */
export async function measureDiskUsage(dirs: string[], stopAbove = Number.POSITIVE_INFINITY): Promise<number> {
  let total = 0;
  const pending = [...dirs];
  while (pending.length > 0 && total <= stopAbove) {
    const dir = pending.pop()!;
    let names: string[];
    try {
      names = await readdir(dir);
    } catch {
      continue; // removed while walking, or not a directory
    }
    const stats = await Promise.all(names.map((name) => lstat(join(dir, name)).catch(() => undefined)));
    stats.forEach((info, index) => {
      if (!info) return;
      total += Math.max(info.size, info.blocks * 512);
      if (info.isDirectory()) pending.push(join(dir, names[index]!));
    });
  }
  return total;
}

/**
 * Measures a sandbox's writable dirs at a bounded interval and calls
 * `onExceeded` once when they pass the limit. The interval stretches to ten
 * times the last walk's duration (up to `maxIntervalMs`), so a huge tree
 * costs at most ~10% of a core.
 */
export class DiskWatcher {
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private fired = false;
  lastBytes = 0;

  constructor(
    private readonly dirs: string[],
    private readonly limitBytes: number,
    private readonly onExceeded: (bytes: number) => void,
    private readonly intervalMs = 1000,
    private readonly maxIntervalMs = 10_000,
  ) {}

  start(): void {
    this.schedule(this.intervalMs);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
  }

  /** Measures now; fires `onExceeded` if over the limit. */
  async check(): Promise<number> {
    const bytes = await measureDiskUsage(this.dirs, this.limitBytes);
    this.lastBytes = bytes;
    if (bytes > this.limitBytes && !this.fired && !this.stopped) {
      this.fired = true;
      this.onExceeded(bytes);
    }
    return bytes;
  }

  /** Re-arms after the caller dealt with an overrun (e.g. killed everything). */
  rearm(): void {
    this.fired = false;
  }

  private schedule(delay: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(async () => {
      const started = performance.now();
      try {
        await this.check();
      } catch {
        // a walk racing deletions may fail; the next tick measures again
      }
      const took = performance.now() - started;
      this.schedule(Math.min(this.maxIntervalMs, Math.max(this.intervalMs, took * 10)));
    }, delay);
    this.timer.unref();
  }
}
