import { unavailable } from "../server/errors";

/** What the pool needs to know about a live sandbox to choose whom to evict. */
export interface PoolMember {
  key: string;
  busy: boolean;
  lastUsedAt: number;
}

/**
 * At most `max` live sandboxes. A new one past the cap takes the place of the
 * least recently used idle one; when every one is busy the caller gets 503
 * with Retry-After. Slots are reserved before the (slow) sandbox start, so
 * concurrent requests can never overshoot the cap.
 */
export class SandboxPool {
  private reserved = 0;

  constructor(
    readonly max: number,
    private readonly members: () => PoolMember[],
    private readonly evict: (key: string, reason: "capacity" | "idle") => Promise<void>,
  ) {}

  get live(): number {
    return this.members().length;
  }

  /** Reserves a slot; returns the function that gives it back (call it once the sandbox counts as a member, or on failure). */
  async reserve(): Promise<() => void> {
    for (let attempt = 0; attempt < this.max + 1; attempt++) {
      if (this.members().length + this.reserved < this.max) {
        this.reserved++;
        let released = false;
        return () => {
          if (!released) {
            released = true;
            this.reserved--;
          }
        };
      }
      const victim = this.leastRecentlyUsedIdle();
      if (!victim) break;
      await this.evict(victim.key, "capacity");
    }
    throw unavailable(`All ${this.max} sandboxes are busy; try again shortly.`, 5);
  }

  leastRecentlyUsedIdle(): PoolMember | undefined {
    return this.members()
      .filter((m) => !m.busy)
      .sort((a, b) => a.lastUsedAt - b.lastUsedAt)[0];
  }

  /** Evicts every idle member unused for longer than `idleMs`. */
  async evictIdle(idleMs: number, now = Date.now()): Promise<number> {
    const stale = this.members().filter((m) => !m.busy && now - m.lastUsedAt > idleMs);
    for (const m of stale) await this.evict(m.key, "idle");
    return stale.length;
  }
}
