import type { ConsolaInstance } from "consola";
import type { QueueConfig } from "../config";
import type { AshDatabase } from "../db/types";
import {
  claimCandidates,
  claimQueueItem,
  completeQueueItem,
  failAbandoned,
  failQueueItem,
  releaseQueueItem,
  renewLease,
  setQueueItemSession,
  type Claim,
  type QueueItemRecord,
} from "../db/queries/queue";
import type { SessionManager } from "../sessions/session-manager";
import { runTurnToEnd } from "./turn";

export interface QueueWorkerOptions {
  db: AshDatabase;
  sessions: SessionManager;
  serverId: string;
  config: QueueConfig;
  log: ConsolaInstance;
}

/** The longest wait between two attempts of an item. */
const MAX_BACKOFF_MS = 3600_000;

interface Entry {
  claim: Claim;
  sessionId?: string;
  /** Cancelled, or taken by another server: this attempt stops. */
  lost: boolean;
  /** Its outcome is in the database; only the session's pause is left. */
  settled: boolean;
  done: Promise<void>;
}

/**
 * Runs queued prompts on this server, at most `concurrency` at once. Items are
 * claimed through the database (see claimQueueItem), so several servers share
 * one queue and never run the same item at once; a running item's lease is
 * renewed while its turn runs, and one whose server died is claimed again once
 * its lease has run out.
 */
export class QueueWorker {
  private readonly running = new Map<string, Entry>();
  private poller?: NodeJS.Timeout;
  private filling?: Promise<void>;
  private again = false;
  private stopping = false;

  constructor(private readonly o: QueueWorkerOptions) {}

  /** Items whose turn runs here; one already recorded as finished (its session still being put to sleep) is not counted. */
  get runningCount(): number {
    let n = 0;
    for (const entry of this.running.values()) if (!entry.settled) n++;
    return n;
  }

  start(): void {
    if (this.o.config.concurrency === 0) return;
    this.poller = setInterval(() => this.wake(), this.o.config.pollMs);
    this.poller.unref();
    this.wake();
  }

  /** Looks for work now (a prompt was just queued, or a slot came free). */
  wake(): void {
    if (this.stopping || this.o.config.concurrency === 0) return;
    if (this.filling) {
      this.again = true;
      return;
    }
    this.filling = (async () => {
      do {
        this.again = false;
        await this.fill();
      } while (this.again && !this.stopping);
    })()
      .catch((error) => this.o.log.warn("the queue could not be read:", error))
      .finally(() => (this.filling = undefined));
  }

  /** A cancelled item that runs here: its turn is interrupted at once (other servers notice at their next renewal). */
  async cancelled(id: string): Promise<void> {
    const entry = this.running.get(id);
    if (!entry) return;
    entry.lost = true;
    if (entry.sessionId) await this.o.sessions.interrupt(entry.sessionId).catch(() => undefined);
  }

  /** Claims nothing more. */
  stop(): void {
    this.stopping = true;
    if (this.poller) clearInterval(this.poller);
  }

  /** Resolves when every item this server runs has finished or been handed back (after the sessions shut down). */
  async drain(): Promise<void> {
    this.stop();
    await this.filling;
    await Promise.all([...this.running.values()].map((r) => r.done));
  }

  private async fill(): Promise<void> {
    const { db, serverId, config } = this.o;
    await failAbandoned(db, Date.now());
    let free = config.concurrency - this.running.size;
    if (free <= 0 || this.stopping) return;
    for (const id of await claimCandidates(db, Date.now(), free * 2 + 2)) {
      if (free <= 0 || this.stopping) break;
      if (this.running.has(id)) continue;
      const item = await claimQueueItem(db, id, serverId, Date.now(), config.leaseMs);
      if (!item) continue;
      free--;
      const entry: Entry = { claim: { id: item.id, serverId, attempt: item.attempts }, lost: false, settled: false, done: Promise.resolve() };
      this.running.set(item.id, entry);
      entry.done = this.run(item, entry)
        .catch((error) => this.o.log.error(`queue item ${item.id}:`, error))
        .finally(() => {
          this.running.delete(item.id);
          this.wake();
        });
    }
  }

  private async run(item: QueueItemRecord, entry: Entry): Promise<void> {
    const { db, sessions, config, log } = this.o;
    const { claim } = entry;
    const renewal = setInterval(() => {
      renewLease(db, claim, Date.now() + config.leaseMs).then(
        (ok) => {
          if (ok || entry.lost) return;
          // Cancelled, or the lease ran out and another server took it: this attempt stops here.
          entry.lost = true;
          log.info(`queue item ${item.id}: no longer held by this server; stopping its turn`);
          if (entry.sessionId) sessions.interrupt(entry.sessionId).catch(() => undefined);
        },
        (error) => log.warn(`queue item ${item.id}: renewing its lease failed:`, error),
      );
    }, Math.max(50, Math.floor(config.leaseMs / 3)));
    const created = item.continueSessionId === null;
    try {
      entry.sessionId = item.continueSessionId ?? (await sessions.createSession({ agent: item.agentName, tenantId: item.tenantId, apiKeyId: item.apiKeyId, settings: {} })).id;
      if (created && !(await setQueueItemSession(db, claim, entry.sessionId))) entry.lost = true;
      if (entry.lost) return;
      const result = await runTurnToEnd(sessions, entry.sessionId, item.prompt);
      if (entry.lost) return;
      if (result.error) {
        if (this.stopping && result.error.code === "server_shutdown") {
          await releaseQueueItem(db, claim, Date.now());
          return;
        }
        throw new Error(result.error.message);
      }
      await completeQueueItem(db, claim, { text: result.text, sessionId: entry.sessionId }, Date.now());
    } catch (error) {
      if (entry.lost) return;
      const message = error instanceof Error ? error.message : String(error);
      const retryAt = item.attempts <= item.maxRetries ? Date.now() + Math.min(MAX_BACKOFF_MS, config.retryBaseMs * 2 ** (item.attempts - 1)) : null;
      await failQueueItem(db, claim, message, entry.sessionId ?? null, retryAt, Date.now());
    } finally {
      clearInterval(renewal);
      entry.settled = true;
      // A session made for the item gives its sandbox back; its history, files and conversation stay.
      if (created && entry.sessionId && !this.stopping) await sessions.pause(entry.sessionId).catch(() => undefined);
    }
  }
}
