import type { AshDatabase } from "../db/types";
import { insertEvents, lastEventSeq, listEvents, type StoredEvent } from "../db/queries/events";
import { insertMessages, type MessageRecord } from "../db/queries/messages";
import type { StreamEvent } from "../runtime/stream-events";

const RECENT_LIMIT = 512;
const ROWS_PER_INSERT = 200;

export interface PendingMessage {
  id: string;
  role: MessageRecord["role"];
  content: unknown;
}

interface Pending {
  event: StoredEvent;
  message?: PendingMessage;
}

/**
 * The ordered event history of one session. Events get the next per-session
 * sequence number, are written to the database, and only then are shown to
 * readers: a client never sees an event that a restart could lose.
 * Writes are grouped: whatever arrives while one write runs goes in the next.
 */
export class EventLog {
  private seq: number;
  private durableSeq: number;
  private queue: Pending[] = [];
  private flushing?: Promise<void>;
  private recent: StoredEvent[] = [];
  private waiters = new Set<() => void>();
  private closed = false;
  private failure?: Error;
  private readerCount = 0;

  private constructor(
    private readonly db: AshDatabase,
    readonly sessionId: string,
    lastSeq: number,
    private readonly onStored?: (events: StoredEvent[]) => void,
  ) {
    this.seq = lastSeq;
    this.durableSeq = lastSeq;
  }

  /** `onStored` hears about every event once it is durable (telemetry). */
  static async open(db: AshDatabase, sessionId: string, onStored?: (events: StoredEvent[]) => void): Promise<EventLog> {
    return new EventLog(db, sessionId, await lastEventSeq(db, sessionId), onStored);
  }

  /** The sequence of the last event readers can see. */
  get lastSeq(): number {
    return this.durableSeq;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** A write failed (database down): this log must be reopened from the database. */
  get broken(): boolean {
    return this.failure !== undefined;
  }

  /**
   * Adds events (and the history messages they carry) and resolves when they
   * are stored. Sequence numbers are given at once, in call order.
   */
  append(events: StreamEvent[], messages: Array<PendingMessage | undefined> = []): Promise<StoredEvent[]> {
    const now = Date.now();
    const stored = events.map((e, i) => {
      const event: StoredEvent = { seq: ++this.seq, type: e.type, data: e.data, createdAt: now };
      this.queue.push({ event, message: messages[i] });
      return event;
    });
    const target = this.seq;
    return this.flushUntil(target).then(() => stored);
  }

  private async flushUntil(target: number): Promise<void> {
    while (this.durableSeq < target) {
      if (this.failure) throw this.failure;
      if (!this.flushing) this.flushing = this.flush().finally(() => (this.flushing = undefined));
      await this.flushing;
    }
  }

  private async flush(): Promise<void> {
    const batch = this.queue;
    this.queue = [];
    if (batch.length === 0) return;
    try {
      await this.db.transaction(async (tx) => {
        for (let i = 0; i < batch.length; i += ROWS_PER_INSERT) {
          const slice = batch.slice(i, i + ROWS_PER_INSERT);
          await insertEvents(tx, this.sessionId, slice.map((p) => p.event));
          const messages = slice.flatMap((p) =>
            p.message ? [{ ...p.message, sequence: p.event.seq, createdAt: p.event.createdAt }] : [],
          );
          await insertMessages(tx, this.sessionId, messages);
        }
      });
    } catch (error) {
      // Keep the order intact: nothing after a failed write may become visible.
      this.failure = error instanceof Error ? error : new Error(String(error));
      // Its readers end instead of waiting for events this log will never show (another server may have
      // written them: a seq taken is what failed); they come back with Last-Event-ID to a log read from the database.
      this.closed = true;
      this.wake();
      throw this.failure;
    }
    this.durableSeq = batch[batch.length - 1]!.event.seq;
    this.recent.push(...batch.map((p) => p.event));
    this.onStored?.(batch.map((p) => p.event));
    if (this.recent.length > RECENT_LIMIT) this.recent.splice(0, this.recent.length - RECENT_LIMIT);
    this.wake();
  }

  /**
   * Up to `limit` visible events after `after`, from memory when they are
   * recent and from the database otherwise, so a slow reader costs a query,
   * never an unbounded buffer.
   */
  async read(after: number, limit = 200): Promise<StoredEvent[]> {
    const first = this.recent[0];
    if (first && first.seq <= after + 1) {
      // Recent events are consecutive: the one after `after` is found by its seq, not by a scan
      // (many readers of one busy session each read after every event).
      const from = after + 1 - first.seq;
      if (from >= this.recent.length || this.recent[from]!.seq === after + 1) return this.recent.slice(from, from + limit);
      return this.recent.filter((e) => e.seq > after && e.seq <= this.durableSeq).slice(0, limit);
    }
    return (await listEvents(this.db, this.sessionId, { after, limit })).filter((e) => e.seq <= this.durableSeq);
  }

  /** Resolves when an event after `after` is visible, the log closes, or `ms` pass. */
  waitForMore(after: number, ms: number, signal?: AbortSignal): Promise<void> {
    if (this.durableSeq > after || this.closed || signal?.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(done);
        signal?.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.waiters.add(done);
      signal?.addEventListener("abort", done, { once: true });
    });
  }

  /** Open event streams reading this log (see `attach`). */
  get readers(): number {
    return this.readerCount;
  }

  /** Nothing waits to be written. */
  get idle(): boolean {
    return this.queue.length === 0 && this.flushing === undefined;
  }

  /** Resolves when every event appended so far is written (or the log broke). */
  settled(): Promise<void> {
    return this.flushUntil(this.seq).catch(() => undefined);
  }

  /** Counts a reader until the returned function is called (once). */
  attach(): () => void {
    this.readerCount++;
    let detached = false;
    return () => {
      if (!detached) {
        detached = true;
        this.readerCount--;
      }
    };
  }

  /**
   * Catches up with events another server wrote (it runs the session now):
   * readers here then read them from the database. Only for a log this server
   * does not write to; true when there was something new.
   */
  async catchUp(): Promise<boolean> {
    if (!this.idle || this.closed || this.failure) return false;
    const stored = await lastEventSeq(this.db, this.sessionId);
    if (stored <= this.durableSeq || !this.idle) return false;
    this.recent = [];
    this.seq = stored;
    this.durableSeq = stored;
    this.wake();
    return true;
  }

  /**
   * Lets go of the in-memory copy of recent events (a session that went to
   * sleep or ended); readers then read from the database.
   */
  dropCache(): void {
    this.recent = [];
  }

  /** Ends every open reader (server shutdown). */
  close(): void {
    this.closed = true;
    this.wake();
  }

  private wake(): void {
    for (const waiter of [...this.waiters]) waiter();
  }
}
