import type { AshDatabase } from "../db/types";
import type { KeyLimits } from "../db/queries/api-keys";
import { countLiveSessionsOfKey, countLiveSessionsOfTenant } from "../db/queries/sessions";
import { keyTokensSince, tenantTokensSince } from "../db/queries/usage";
import { rateLimited } from "../errors";
import { LIVE_SESSION_STATUSES, type SessionStatus } from "../contract";
import type { Principal } from "./auth";

/**
 * The per-key and per-tenant limits on live sessions, running turns and
 * tokens a day. Each check and its reservation happen together (one check at
 * a time per key and tenant), so concurrent requests are admitted exactly up
 * to the limit; a refused request changes nothing.
 *
 * Live sessions are counted in the database (plus creations under way on this
 * server, until their row exists); running turns by this server; tokens from
 * the gateway's usage records since midnight UTC.
 */
export class UsageLimiter {
  private readonly creating = new Map<string, number>();
  private readonly running = new Map<string, number>();
  private readonly locks = new Map<string, Promise<unknown>>();

  constructor(private readonly db: AshDatabase) {}

  /**
   * Admits a new (or woken) session for `caller`; the answer is called once the
   * session's row exists (or its creation failed).
   */
  /**
   * A request that wakes a sleeping session (a message, resume, exec, a file
   * written): it counts as live again, so it is admitted like a new one.
   * Nothing to admit (undefined) when the session is live or ended.
   */
  async admitWake(caller: Principal, status: SessionStatus): Promise<(() => void) | undefined> {
    if (status === "ended" || LIVE_SESSION_STATUSES.includes(status)) return undefined;
    return this.admitSession(caller);
  }

  async admitSession(caller: Principal): Promise<() => void> {
    const checks: Array<[string, number | undefined, () => Promise<number>, string]> = [
      [`key:${caller.keyId}`, caller.limits.liveSessions, () => countLiveSessionsOfKey(this.db, caller.keyId), "this key"],
      [`tenant:${caller.tenantId}`, caller.tenantLimits.liveSessions, () => countLiveSessionsOfTenant(this.db, caller.tenantId), `tenant ${caller.tenantId}`],
    ];
    const held: string[] = [];
    try {
      for (const [key, limit, count, who] of checks) {
        if (limit === undefined) continue;
        await this.locked(key, async () => {
          const live = (await count()) + (this.creating.get(key) ?? 0);
          if (live >= limit) throw rateLimited(`Too many live sessions: ${who} may have ${limit} at once (pause, stop or end one first).`, 5);
          this.creating.set(key, (this.creating.get(key) ?? 0) + 1);
          held.push(key);
        });
      }
    } catch (error) {
      this.release(this.creating, held);
      throw error;
    }
    await this.checkTokens(caller);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.release(this.creating, held);
    };
  }

  /** Admits a turn for `caller`; the answer is called when the turn has ended. */
  async admitTurn(caller: Principal): Promise<() => void> {
    await this.checkTokens(caller);
    const checks: Array<[string, number | undefined, string]> = [
      [`key:${caller.keyId}`, caller.limits.runningTurns, "this key"],
      [`tenant:${caller.tenantId}`, caller.tenantLimits.runningTurns, `tenant ${caller.tenantId}`],
    ];
    // No await between the checks and the counts: concurrent requests cannot both pass.
    for (const [key, limit, who] of checks) {
      if (limit !== undefined && (this.running.get(key) ?? 0) >= limit) {
        throw rateLimited(`Too many turns at once: ${who} may run ${limit} at a time; try again when one is done.`, 1);
      }
    }
    const held = checks.filter(([, limit]) => limit !== undefined).map(([key]) => key);
    for (const key of held) this.running.set(key, (this.running.get(key) ?? 0) + 1);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.release(this.running, held);
    };
  }

  /**
   * Work queued to run later in the caller's name (a queued prompt, an eval
   * run): refused once the key or tenant has used its tokens for the day, as
   * a turn would be. Its turns run through the queue's own concurrency, not
   * the caller's running-turn limit.
   */
  async admitQueued(caller: Principal): Promise<void> {
    await this.checkTokens(caller);
  }

  private async checkTokens(caller: Principal): Promise<void> {
    const since = startOfUtcDay(Date.now());
    const untilMidnight = Math.ceil((since + 86_400_000 - Date.now()) / 1000);
    const checks: Array<[number | undefined, () => Promise<number>, string]> = [
      [caller.limits.tokensPerDay, () => keyTokensSince(this.db, caller.keyId, since), "this key"],
      [caller.tenantLimits.tokensPerDay, () => tenantTokensSince(this.db, caller.tenantId, since), `tenant ${caller.tenantId}`],
    ];
    for (const [limit, used, who] of checks) {
      if (limit === undefined) continue;
      const tokens = await used();
      if (tokens >= limit) throw rateLimited(`Daily token limit reached: ${who} used ${tokens} of its ${limit} tokens today (UTC); it resets at midnight UTC.`, untilMidnight);
    }
  }

  private release(counts: Map<string, number>, keys: string[]): void {
    for (const key of keys) {
      const n = (counts.get(key) ?? 1) - 1;
      if (n <= 0) counts.delete(key);
      else counts.set(key, n);
    }
  }

  private locked<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(key) ?? Promise.resolve();
    const next = previous.catch(() => undefined).then(fn);
    this.locks.set(key, next);
    void next.finally(() => {
      if (this.locks.get(key) === next) this.locks.delete(key);
    }).catch(() => undefined);
    return next;
  }
}

function startOfUtcDay(now: number): number {
  return now - (now % 86_400_000);
}

export type { KeyLimits };
