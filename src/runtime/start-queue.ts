/**
 * Which starts go first: a session's (someone is waiting for it) before a
 * warm spare's (made ahead of demand, only when no session start waits).
 */
export type StartPriority = "session" | "spare";

export interface StartTicket {
  /** Resolves with the slot's release once this start may run; never rejects. */
  readonly ready: Promise<() => void>;
  /** Gives up a start still waiting (or releases a granted slot). */
  cancel(): void;
}

interface Waiter {
  priority: StartPriority;
  grant: (release: () => void) => void;
  /** When it began to wait (performance.now()). */
  since: number;
}

/** How long one start waited for its slot, or held it (spawned until its start-up was over or failed). */
export type StartObserver = (phase: "queued" | "starting", ms: number, priority: StartPriority) => void;

/**
 * At most `concurrency` agent processes starting at once (spawned, not yet
 * answered their initialize request), the rest waiting in order. A burst of
 * new sessions then shares the CPU a few at a time instead of all starting
 * together and each taking N times as long.
 */
export class StartQueue {
  private running = 0;
  private highWater = 0;
  private readonly waiting: Waiter[] = [];

  constructor(
    readonly concurrency: number,
    private readonly observe: StartObserver = () => undefined,
  ) {
    if (!Number.isInteger(concurrency) || concurrency < 1) throw new Error("the start concurrency must be a whole number of at least 1");
  }

  /** Starts running now. */
  get active(): number {
    return this.running;
  }

  /** Starts waiting for a slot, by priority. */
  queued(priority?: StartPriority): number {
    return priority ? this.waiting.filter((w) => w.priority === priority).length : this.waiting.length;
  }

  /** The most starts that ever ran at once. */
  get peak(): number {
    return this.highWater;
  }

  enqueue(priority: StartPriority): StartTicket {
    let release: (() => void) | undefined;
    let cancelled = false;
    let waiter: Waiter | undefined;
    const ready = new Promise<() => void>((resolve) => {
      waiter = {
        priority,
        since: performance.now(),
        grant: (r) => {
          release = r;
          resolve(r);
        },
      };
    });
    this.waiting.push(waiter!);
    this.pump();
    return {
      ready,
      cancel: () => {
        if (cancelled) return;
        cancelled = true;
        if (release) return release();
        const at = this.waiting.indexOf(waiter!);
        if (at >= 0) this.waiting.splice(at, 1);
        // Resolved with a no-op: whoever awaits `ready` sees it was cancelled by its own flag.
        waiter!.grant(() => undefined);
      },
    };
  }

  private pump(): void {
    while (this.running < this.concurrency) {
      const at = this.waiting.findIndex((w) => w.priority === "session");
      const index = at >= 0 ? at : this.waiting.findIndex((w) => w.priority === "spare");
      if (index < 0) return;
      const [waiter] = this.waiting.splice(index, 1);
      this.running++;
      this.highWater = Math.max(this.highWater, this.running);
      const granted = performance.now();
      this.observe("queued", granted - waiter!.since, waiter!.priority);
      let released = false;
      waiter!.grant(() => {
        if (released) return;
        released = true;
        this.running--;
        this.observe("starting", performance.now() - granted, waiter!.priority);
        this.pump();
      });
    }
  }
}
