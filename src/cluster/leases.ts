import type { ConsolaInstance } from "consola";
import type { AshDatabase } from "../db/types";
import { claimLease, dropLeasesOf, expiredLeases, getLease, liveServers, recordHeartbeat, releaseLease, removeServer, renewLeases, type ClaimResult, type LeaseRecord, type ServerRecord } from "../db/queries/leases";

export type { ClaimResult, LeaseRecord, ServerRecord };

export interface LeasesOptions {
  db: AshDatabase;
  serverId: string;
  /** ASH_LEASE_TTL_MS. */
  ttlMs: number;
  log: ConsolaInstance;
  /** What the heartbeat reports for placement. */
  load: () => { liveSessions: number; capacity: number; draining: boolean };
  /** Leases another server took while this one could not renew them: their sandboxes must go, unsaved. */
  lost: (sessionIds: string[]) => void;
  /** This server could not renew its leases for almost their whole life: stop every agent process now. */
  lapsed: () => void;
  /** A lease its server let run out (it died): end what that server left half done. */
  orphaned: (lease: LeaseRecord) => Promise<void>;
  /** Test hook: milliseconds between heartbeats (default a third of the lease). */
  heartbeatMs?: number;
}

/** At most this many leases of dead servers are looked after per heartbeat. */
const ORPHANS_PER_BEAT = 20;

/**
 * This server's leases on the sessions it runs (docs/decisions/cluster-leases.md).
 * A sandbox comes up only after its lease is won; the heartbeat renews every
 * lease this server holds, notices leases taken away, stops all agent
 * processes before its leases can run out unrenewed, and finishes the
 * sessions of servers that died. Holds are counted per session, so a brief
 * hold (recovering a dead server's session) never drops a sandbox's lease.
 */
export class Leases {
  private readonly holds = new Map<string, number>();
  /** Claims under way: a heartbeat must not drop a lease that is won but not yet counted. */
  private readonly claiming = new Map<string, number>();
  /** Sessions being put right after their server died, awaited by every claim of them here. */
  private readonly recovering = new Map<string, Promise<void>>();
  private address = "";
  private startedAt = Date.now();
  /** When the last renewal that succeeded started: leases in the database run out at this plus the TTL. */
  private renewedAt = Date.now();
  private fenced = false;
  private beat?: NodeJS.Timeout;
  private watch?: NodeJS.Timeout;
  private beating?: Promise<void>;
  private stopped = false;

  constructor(private readonly o: LeasesOptions) {}

  get serverId(): string {
    return this.o.serverId;
  }

  get ttlMs(): number {
    return this.o.ttlMs;
  }

  /** Where this server answers other servers (known once it listens). */
  get advertised(): string {
    return this.address;
  }

  /** True while this server holds the session's lease. */
  isHeld(sessionId: string): boolean {
    return (this.holds.get(sessionId) ?? 0) > 0;
  }

  /**
   * Takes the session's lease for this server (or adds a hold on one it has).
   * Taken from a server that let it run out, the session is first put right
   * (`takeOver`); other claims here wait for that before they go on.
   */
  async claim(sessionId: string, takeOver: (from: LeaseRecord) => Promise<void>): Promise<ClaimResult> {
    this.claiming.set(sessionId, (this.claiming.get(sessionId) ?? 0) + 1);
    let result: ClaimResult;
    try {
      result = await claimLease(this.o.db, { sessionId, serverId: this.o.serverId, address: this.address, now: Date.now(), ttlMs: this.o.ttlMs });
      if (result.won) this.holds.set(sessionId, (this.holds.get(sessionId) ?? 0) + 1);
    } finally {
      const left = (this.claiming.get(sessionId) ?? 1) - 1;
      if (left > 0) this.claiming.set(sessionId, left);
      else this.claiming.delete(sessionId);
    }
    if (!result.won) return result;
    let recovery = this.recovering.get(sessionId);
    if (result.takenFrom) {
      const from = result.takenFrom;
      recovery = takeOver(from).finally(() => this.recovering.delete(sessionId));
      this.recovering.set(sessionId, recovery);
    }
    try {
      await recovery;
    } catch (error) {
      await this.release(sessionId);
      throw error;
    }
    return result;
  }

  /** Drops one hold; the last one lets go of the lease in the database (best effort: unrenewed, it runs out anyway). */
  async release(sessionId: string): Promise<void> {
    const left = (this.holds.get(sessionId) ?? 0) - 1;
    if (left > 0) {
      this.holds.set(sessionId, left);
      return;
    }
    this.holds.delete(sessionId);
    await releaseLease(this.o.db, sessionId, this.o.serverId).catch((error) => this.o.log.warn(`session ${sessionId}: releasing its lease failed (it runs out by itself):`, error));
  }

  /** The server another request for the session should go to: a live lease held elsewhere, or undefined. */
  async ownerElsewhere(sessionId: string, now = Date.now()): Promise<LeaseRecord | undefined> {
    // Held here: no query (the heartbeat notices if another server took it).
    if (this.isHeld(sessionId)) return undefined;
    const lease = await getLease(this.o.db, sessionId);
    return lease && lease.serverId !== this.o.serverId && lease.expiresAt > now ? lease : undefined;
  }

  /** Servers whose heartbeats are current, least loaded first. */
  servers(now = Date.now()): Promise<ServerRecord[]> {
    return liveServers(this.o.db, now);
  }

  /** The least loaded other server with room for a new session, by the last heartbeats; undefined when none has. */
  async roomElsewhere(now = Date.now()): Promise<ServerRecord | undefined> {
    return (await this.servers(now)).find((s) => s.id !== this.o.serverId && !s.draining && s.liveSessions < s.capacity);
  }

  /** Leases a previous run of this server (same data folder) left: none of its sandboxes is left. */
  async forgetPrevious(): Promise<void> {
    await dropLeasesOf(this.o.db, this.o.serverId);
  }

  /** Starts heartbeats, once this server listens at `address`. */
  start(address: string): void {
    this.address = address;
    this.startedAt = Date.now();
    this.renewedAt = Date.now();
    const every = this.o.heartbeatMs ?? Math.max(200, Math.floor(this.o.ttlMs / 3));
    this.beat = setInterval(() => void this.heartbeat(), every);
    this.beat.unref();
    // Checked often and apart from the heartbeat, which may hang on a database that does not answer.
    this.watch = setInterval(() => this.checkLapse(), Math.max(100, Math.floor(this.o.ttlMs / 10)));
    this.watch.unref();
    void this.heartbeat();
  }

  /** One heartbeat: this server's row, its leases renewed, lost ones noticed, dead servers' sessions finished. */
  heartbeat(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    this.beating ??= this.beatOnce().finally(() => (this.beating = undefined));
    return this.beating;
  }

  private async beatOnce(): Promise<void> {
    const { db, serverId, ttlMs } = this.o;
    const now = Date.now();
    try {
      const load = this.o.load();
      await recordHeartbeat(db, { id: serverId, address: this.address, startedAt: this.startedAt, heartbeatAt: now, expiresAt: now + ttlMs, ...load });
      const mine = new Set(await renewLeases(db, serverId, now + ttlMs));
      this.renewedAt = now;
      if (this.fenced) {
        this.fenced = false;
        this.o.log.info("the database answers again: this server's leases are renewed");
      }
      // Left from a release that failed: nothing here uses them, so another server may.
      for (const id of mine) if (!this.isHeld(id) && !this.claiming.has(id)) await releaseLease(db, id, serverId);
      const lost = [...this.holds.keys()].filter((id) => !mine.has(id) && !this.claiming.has(id));
      if (lost.length) {
        for (const id of lost) this.holds.delete(id);
        this.o.log.warn(`${lost.length} session(s) were taken over by another server while this one could not renew their leases: ${lost.join(", ")}`);
        this.o.lost(lost);
      }
      for (const lease of await expiredLeases(db, serverId, Date.now(), ORPHANS_PER_BEAT)) {
        if (this.stopped) break;
        await this.o.orphaned(lease).catch((error) => this.o.log.warn(`session ${lease.sessionId}: taking it over from server ${lease.serverId} failed:`, error));
      }
    } catch (error) {
      this.o.log.warn("renewing this server's leases failed:", error instanceof Error ? error.message : error);
    }
  }

  /** Past most of a lease's life without a renewal, agent processes stop before another server may start them. */
  private checkLapse(): void {
    if (this.fenced || this.stopped || this.holds.size === 0) return;
    const margin = Math.min(2000, Math.floor(this.o.ttlMs / 5));
    if (Date.now() - this.renewedAt < this.o.ttlMs - margin) return;
    this.fenced = true;
    this.o.log.warn(`this server could not renew its leases for ${Date.now() - this.renewedAt} ms: stopping its agent processes until it can`);
    this.o.lapsed();
  }

  /** Stops heartbeats and leaves placement (leases were released as sessions went to sleep). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.beat) clearInterval(this.beat);
    if (this.watch) clearInterval(this.watch);
    await this.beating?.catch(() => undefined);
    await removeServer(this.o.db, this.o.serverId).catch(() => undefined);
  }
}
