import type { ConsolaInstance } from "consola";
import type { AshDatabase } from "../db/types";
import { unavailable } from "../errors";
import { claimLease, dropLeasesOf, expiredLeases, forgetServers, getLease, liveServers, recordHeartbeat, releaseLease, removeServer, renewLeases, returnLease, type ClaimResult, type LeaseRecord, type ServerRecord } from "../db/queries/leases";

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
/** Heartbeat rows of servers gone this long are deleted (servers without a stable data folder get a new id each start). */
const FORGET_SERVERS_AFTER_MS = 24 * 3600_000;

/**
 * This server's leases on the sessions it runs (docs/decisions/cluster-leases.md).
 * A sandbox comes up only after its lease is won; the heartbeat renews every
 * lease this server holds, notices leases taken away, stops all agent
 * processes before its leases can run out unrenewed (and claims nothing while
 * they may have), and finishes the sessions of servers that died. Holds are
 * counted per session, so a brief hold (recovering a dead server's session)
 * never drops a sandbox's lease.
 */
export class Leases {
  private readonly holds = new Map<string, number>();
  /** When each held lease was last won (performance.now()): one won during a heartbeat is not "lost" by it. */
  private readonly wonAt = new Map<string, number>();
  /** Claims under way: a heartbeat must not count a lease that is won but not yet counted as lost. */
  private readonly claiming = new Map<string, number>();
  /** Sessions being put right after their server died, awaited by every claim of them here. */
  private readonly recovering = new Map<string, Promise<void>>();
  private address = "";
  private startedAt = Date.now();
  /** When the last renewal that succeeded started (performance.now(), immune to the wall clock stepping). */
  private renewedAt = performance.now();
  private fenceLogged = false;
  private others = 0;
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

  /** Other servers with a current heartbeat, as of the last one of this server. */
  get peers(): number {
    return this.others;
  }

  /** Where this server answers other servers (known once it listens). */
  get advertised(): string {
    return this.address;
  }

  /**
   * True when this server's leases may have run out unrenewed. SQLite is one
   * server's own file: no other server can take its sessions, so it never lapses.
   */
  get lapsed(): boolean {
    if (this.o.db.dialect === "sqlite") return false;
    return performance.now() - this.renewedAt >= this.o.ttlMs - Math.min(2000, Math.floor(this.o.ttlMs / 5));
  }

  /** True while this server holds the session's lease (and cannot have lost it unnoticed). */
  isHeld(sessionId: string): boolean {
    return (this.holds.get(sessionId) ?? 0) > 0 && !this.lapsed;
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
      result = await this.claimRow(sessionId);
      if (result.won) {
        this.holds.set(sessionId, (this.holds.get(sessionId) ?? 0) + 1);
        this.wonAt.set(sessionId, performance.now());
      }
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
      if (result.takenFrom) {
        // Given back as it was (run out, its dead holder's), so a later claim or heartbeat puts the session right.
        this.drop(sessionId);
        await returnLease(this.o.db, result.takenFrom, this.o.serverId).catch(() => undefined);
      } else await this.release(sessionId);
      throw error;
    }
    return result;
  }

  /**
   * Confirms, before an idle session's agent process starts again, that its
   * lease is still this server's (renewing it); false when another server took it.
   */
  async confirm(sessionId: string): Promise<boolean> {
    const result = await this.claimRow(sessionId);
    if (!result.won) return false;
    // Not taken meanwhile: if the heartbeat had counted it lost, it is this server's again.
    if (!this.holds.get(sessionId)) this.holds.set(sessionId, 1);
    this.wonAt.set(sessionId, performance.now());
    return true;
  }

  /** The lease row for this server, unless its leases may have run out unrenewed (then nothing is claimed). */
  private claimRow(sessionId: string): Promise<ClaimResult> {
    if (this.lapsed) throw unavailable("This server cannot renew its leases right now (its database does not answer in time); send the request again.", 1);
    return claimLease(this.o.db, { sessionId, serverId: this.o.serverId, address: this.address, now: Date.now(), ttlMs: this.o.ttlMs });
  }

  /** Drops one hold; the last one lets go of the lease in the database (best effort: unrenewed, it runs out anyway). */
  async release(sessionId: string): Promise<void> {
    const left = (this.holds.get(sessionId) ?? 0) - 1;
    if (left > 0) {
      this.holds.set(sessionId, left);
      return;
    }
    this.drop(sessionId);
    await releaseLease(this.o.db, sessionId, this.o.serverId).catch((error) => this.o.log.warn(`session ${sessionId}: releasing its lease failed (it runs out by itself):`, error));
  }

  private drop(sessionId: string): void {
    this.holds.delete(sessionId);
    this.wonAt.delete(sessionId);
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
    this.renewedAt = performance.now();
    const every = this.beatEveryMs;
    this.beat = setInterval(() => void this.heartbeat(), every);
    this.beat.unref();
    // Checked often and apart from the heartbeat, which may hang on a database that does not answer.
    this.watch = setInterval(() => this.checkLapse(), Math.max(100, Math.floor(this.o.ttlMs / 10)));
    this.watch.unref();
    void this.heartbeat();
  }

  private get beatEveryMs(): number {
    return this.o.heartbeatMs ?? Math.max(200, Math.floor(this.o.ttlMs / 3));
  }

  /**
   * One heartbeat: this server's row, its leases renewed, lost ones noticed,
   * dead servers' sessions finished. A beat that hangs (a database that stopped
   * answering mid-query) is given up after one interval, so the next can run.
   */
  heartbeat(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    if (!this.beating) {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, this.beatEveryMs);
        timer.unref();
      });
      this.beating = Promise.race([this.beatOnce(), timeout]).finally(() => {
        clearTimeout(timer);
        this.beating = undefined;
      });
    }
    return this.beating;
  }

  private async beatOnce(): Promise<void> {
    const { db, serverId, ttlMs } = this.o;
    const started = performance.now();
    const now = Date.now();
    try {
      const load = this.o.load();
      await recordHeartbeat(db, { id: serverId, address: this.address, startedAt: this.startedAt, heartbeatAt: now, expiresAt: now + ttlMs, ...load });
      // Only what this server holds or is claiming: a lease it let go of runs out by itself.
      const wanted = [...new Set([...this.holds.keys(), ...this.claiming.keys()])];
      const mine = new Set(await renewLeases(db, serverId, wanted, now + ttlMs));
      this.renewedAt = started;
      this.others = (await liveServers(db, now)).filter((s) => s.id !== serverId).length;
      if (this.fenceLogged) {
        this.fenceLogged = false;
        this.o.log.info("the database answers again: this server's leases are renewed");
      }
      // Lost: held since before this beat, not being claimed, and no longer this server's.
      const lost = [...this.holds.keys()].filter((id) => !mine.has(id) && !this.claiming.has(id) && (this.wonAt.get(id) ?? 0) < started);
      if (lost.length) {
        for (const id of lost) this.drop(id);
        this.o.log.warn(`${lost.length} session(s) were taken over by another server while this one could not renew their leases: ${lost.join(", ")}`);
        this.o.lost(lost);
      }
      if (db.dialect === "sqlite") return;
      await forgetServers(db, now - FORGET_SERVERS_AFTER_MS);
      for (const lease of await expiredLeases(db, serverId, Date.now(), ORPHANS_PER_BEAT)) {
        if (this.stopped) break;
        await this.o.orphaned(lease).catch((error) => this.o.log.warn(`session ${lease.sessionId}: taking it over from server ${lease.serverId} failed:`, error));
      }
    } catch (error) {
      this.o.log.warn("renewing this server's leases failed:", error instanceof Error ? error.message : error);
    }
  }

  /** Past most of a lease's life without a renewal, agent processes stop (on every check, until a renewal) before another server may start them. */
  private checkLapse(): void {
    if (this.stopped || this.holds.size === 0 || !this.lapsed) return;
    if (!this.fenceLogged) {
      this.fenceLogged = true;
      this.o.log.warn(`this server could not renew its leases for ${Math.round(performance.now() - this.renewedAt)} ms: stopping its agent processes until it can`);
    }
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
