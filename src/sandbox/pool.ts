import { unavailable } from "../errors";

/** What the pool needs to know about a live sandbox to choose whom to evict. */
export interface PoolMember {
  key: string;
  busy: boolean;
  lastUsedAt: number;
}

/** Ready spare sandboxes (the warm pool): they count as live and give way first. */
export interface PoolSpares {
  /** Ready spares (ones still being made hold a reserved slot instead). */
  count(): number;
  /** Ends one spare, or one being made, to free its slot; false when there is none. */
  yieldOne(): Promise<boolean>;
}

/**
 * At most `max` live sandboxes, spares included. A new one past the cap takes the place of the
 * least recently used idle one; when every one is busy the caller gets 503
 * with Retry-After. A warm spare gives way before any session is evicted.
 * Slots are reserved before the (slow) sandbox start, so concurrent
 * requests can never overshoot the cap.
 */
export class SandboxPool {
  private reserved = 0;

  constructor(
    readonly max: number,
    private readonly members: () => PoolMember[],
    private readonly evict: (key: string, reason: "capacity" | "idle") => Promise<void>,
    private readonly spares?: PoolSpares,
  ) {}

  /** Live sandboxes: sessions' and ready spares. */
  get live(): number {
    return this.members().length + this.readySpares();
  }

  /** True when a new session would find a slot without evicting one (a ready spare gives way, so it counts as room). */
  get hasRoom(): boolean {
    return this.members().length + this.reserved < this.max;
  }

  /** A slot only if one is free now, never by evicting: what spares are made with. */
  tryReserve(): (() => void) | undefined {
    return this.live + this.reserved < this.max ? this.slot() : undefined;
  }

  /** Reserves a slot; returns the function that gives it back (call it once the sandbox counts as a member, or on failure). */
  async reserve(): Promise<() => void> {
    for (let attempt = 0; attempt < 2 * this.max + 2; attempt++) {
      if (this.live + this.reserved < this.max) return this.slot();
      if (this.spares && (await this.spares.yieldOne())) continue;
      const victim = this.leastRecentlyUsedIdle();
      if (!victim) break;
      await this.evict(victim.key, "capacity");
    }
    throw unavailable(`All ${this.max} sandboxes are busy; try again shortly.`, 5);
  }

  private slot(): () => void {
    this.reserved++;
    let released = false;
    return () => {
      if (!released) {
        released = true;
        this.reserved--;
      }
    };
  }

  /** Spares being made are already in `reserved`. */
  private readySpares(): number {
    return this.spares ? this.spares.count() : 0;
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
