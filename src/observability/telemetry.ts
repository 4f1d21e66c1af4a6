/**
 * Event telemetry: every event handed to `emit` is sent, in batches, as a
 * JSON array POSTed to ASH_TELEMETRY_URL. `emit` only puts the record in a
 * bounded ring buffer and returns: it never waits for the network, never
 * throws, and costs the same whether the sink is fast, slow or gone. When the
 * buffer is full the oldest record makes room and is counted as dropped
 * (docs/decisions/observability-telemetry-buffer.md).
 */
import { retry } from "../retry";

export interface TelemetryEvent {
  type: string;
  sessionId?: string;
  agent?: string;
  /** The stored event's sequence number within its session, when it has one. */
  seq?: number;
  /** When it happened; now when absent. */
  at?: Date | string;
  data?: unknown;
}

/** One element of a POSTed batch. */
export interface TelemetryRecord {
  type: string;
  sessionId?: string;
  agent?: string;
  seq?: number;
  /** ISO 8601. */
  at: string;
  data: unknown;
}

export interface TelemetryStats {
  sent: number;
  dropped: number;
  queued: number;
}

export interface Telemetry {
  readonly enabled: boolean;
  /** Queues one event; returns at once. */
  emit(event: TelemetryEvent): void;
  stats(): TelemetryStats;
  /** Sends what is queued; true when all of it was delivered before `timeoutMs`. */
  flush(timeoutMs?: number): Promise<boolean>;
  /** Sends what it can before `timeoutMs`, then counts the rest as dropped. Later events are dropped. */
  shutdown(timeoutMs?: number): Promise<void>;
}

export interface TelemetryOptions {
  url: string;
  /** Sent as `Authorization: Bearer <token>`. */
  token?: string;
  /** Most records held while waiting to be sent. */
  maxBuffer?: number;
  /** Most records per POST. */
  batchSize?: number;
  /** How long a record may wait for a full batch before a smaller one goes. */
  flushIntervalMs?: number;
  /** One POST is given up after this long (a sink that never answers). */
  requestTimeoutMs?: number;
  /** Tries per batch before its records are dropped. */
  maxAttempts?: number;
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  userAgent?: string;
  onSent?: (count: number) => void;
  onDropped?: (count: number) => void;
  /** Told about delivery trouble, at most once a minute, and when delivery works again. */
  warn?: (message: string) => void;
}

/** A telemetry that is off: `emit` does nothing. */
export function disabledTelemetry(): Telemetry {
  return {
    enabled: false,
    emit: () => undefined,
    stats: () => ({ sent: 0, dropped: 0, queued: 0 }),
    flush: async () => true,
    shutdown: async () => undefined,
  };
}

export function createTelemetry(options: TelemetryOptions): Telemetry {
  const maxBuffer = Math.max(1, options.maxBuffer ?? 10_000);
  const batchSize = Math.max(1, options.batchSize ?? 100);
  const flushIntervalMs = options.flushIntervalMs ?? 1000;
  const requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
  const maxAttempts = Math.max(1, options.maxAttempts ?? 5);
  const backoffBaseMs = options.backoffBaseMs ?? 500;
  const backoffMaxMs = options.backoffMaxMs ?? 30_000;
  const origin = new URL(options.url).origin;
  const headers: Record<string, string> = { "content-type": "application/json", "user-agent": options.userAgent ?? "ash" };
  if (options.token) headers.authorization = `Bearer ${options.token}`;

  // Ring buffer: `head` is the oldest record, `size` how many are held.
  const ring: Array<TelemetryRecord | undefined> = new Array(maxBuffer);
  let head = 0;
  let size = 0;
  let sent = 0;
  let dropped = 0;
  let sending = false;
  let timer: NodeJS.Timeout | undefined;
  let timerUrgent = false;
  let stopped = false;
  const stop = new AbortController();
  let idleWaiters: Array<() => void> = [];
  let failingSince = 0;
  let lastWarning = 0;

  const drop = (count: number) => {
    if (count <= 0) return;
    dropped += count;
    options.onDropped?.(count);
  };

  const warn = (message: string, force = false) => {
    const now = Date.now();
    if (!force && now - lastWarning < 60_000) return;
    lastWarning = now;
    options.warn?.(message);
  };

  const take = (count: number): TelemetryRecord[] => {
    const out: TelemetryRecord[] = [];
    while (out.length < count && size > 0) {
      out.push(ring[head]!);
      ring[head] = undefined;
      head = (head + 1) % maxBuffer;
      size--;
    }
    return out;
  };

  const schedule = (delayMs: number) => {
    if (sending || stopped) return;
    if (timer) {
      if (delayMs > 0 || timerUrgent) return;
      // A full batch does not wait for the interval.
      clearTimeout(timer);
    }
    timerUrgent = delayMs === 0;
    timer = setTimeout(() => {
      timer = undefined;
      timerUrgent = false;
      void pump();
    }, delayMs);
    timer.unref();
  };

  /** Wakes flush/shutdown waiters once nothing is left to send, or sending was aborted. */
  const wakeIdle = () => {
    if (sending || (size > 0 && !stop.signal.aborted)) return;
    const waiters = idleWaiters;
    idleWaiters = [];
    for (const resolve of waiters) resolve();
  };

  /** Sends batches until the buffer is empty (or shutdown aborts). One POST at a time. */
  const pump = async () => {
    if (sending) return;
    sending = true;
    try {
      while (size > 0 && !stop.signal.aborted) await deliver(take(batchSize));
    } finally {
      sending = false;
    }
    wakeIdle();
    if (size > 0) schedule(flushIntervalMs);
  };

  const deliver = async (batch: TelemetryRecord[]) => {
    const body = serialize(batch);
    const count = body.count;
    drop(batch.length - count);
    if (count === 0) return;
    const attempt = async (): Promise<void> => {
      let response: Response;
      try {
        response = await fetch(options.url, {
          method: "POST",
          headers,
          body: body.json,
          signal: AbortSignal.any([AbortSignal.timeout(requestTimeoutMs), stop.signal]),
        });
      } catch (error) {
        if (!stop.signal.aborted) noteFailure(describeFetchError(error));
        throw new DeliveryFailed();
      }
      await response.arrayBuffer().catch(() => undefined);
      if (response.ok) {
        sent += count;
        options.onSent?.(count);
        if (failingSince) {
          failingSince = 0;
          warn(`telemetry: delivering to ${origin} again`, true);
        }
        return;
      }
      if (response.status >= 400 && response.status < 500 && response.status !== 408 && response.status !== 429) {
        // The sink will not take this batch however often it is sent.
        warn(`telemetry: ${origin} refused a batch with HTTP ${response.status}; ${count} events dropped`);
        drop(count);
        return;
      }
      noteFailure(`HTTP ${response.status}`);
      throw new DeliveryFailed(retryAfterOf(response.headers.get("retry-after")));
    };
    await retry(attempt, {
      attempts: maxAttempts,
      // The sink's Retry-After when it gave one, else full jitter; never longer than the cap.
      delay: (n, error) => Math.min(backoffMaxMs, (error as DeliveryFailed).retryAfterMs ?? backoff(n)),
      retryIf: () => !stop.signal.aborted,
      signal: stop.signal,
      unref: true,
    }).catch(() => drop(count));
  };

  const noteFailure = (reason: string) => {
    if (!failingSince) failingSince = Date.now();
    warn(`telemetry: cannot deliver to ${origin} (${reason}); retrying with backoff, events are dropped once ${maxBuffer} are waiting`);
  };

  /** Full jitter: a random wait up to base·2^(attempt-1), capped. */
  const backoff = (attempt: number) => Math.random() * Math.min(backoffMaxMs, backoffBaseMs * 2 ** (attempt - 1));

  const waitIdle = (timeoutMs: number): Promise<boolean> => {
    if (!sending && (size === 0 || stop.signal.aborted)) return Promise.resolve(true);
    return new Promise<boolean>((resolve) => {
      const done = () => {
        clearTimeout(deadline);
        resolve(true);
      };
      const deadline = setTimeout(() => {
        idleWaiters = idleWaiters.filter((w) => w !== done);
        resolve(false);
      }, timeoutMs);
      deadline.unref();
      idleWaiters.push(done);
    });
  };

  const flush = async (timeoutMs = 5000) => {
    if (timer) {
      clearTimeout(timer);
      timer = undefined;
      timerUrgent = false;
    }
    void pump();
    return waitIdle(timeoutMs);
  };

  return {
    enabled: true,
    emit(event) {
      if (stopped) {
        drop(1);
        return;
      }
      const record: TelemetryRecord = {
        type: event.type,
        ...(event.sessionId !== undefined ? { sessionId: event.sessionId } : {}),
        ...(event.agent !== undefined ? { agent: event.agent } : {}),
        ...(event.seq !== undefined ? { seq: event.seq } : {}),
        at: event.at === undefined ? new Date().toISOString() : typeof event.at === "string" ? event.at : event.at.toISOString(),
        data: event.data ?? null,
      };
      if (size === maxBuffer) {
        // Full: the oldest record makes room.
        ring[head] = undefined;
        head = (head + 1) % maxBuffer;
        size--;
        drop(1);
      }
      ring[(head + size) % maxBuffer] = record;
      size++;
      if (size >= batchSize) schedule(0);
      else if (!timer) schedule(flushIntervalMs);
    },
    stats: () => ({ sent, dropped, queued: size }),
    flush,
    async shutdown(timeoutMs = 5000) {
      if (stopped) return;
      const delivered = await flush(timeoutMs);
      stopped = true;
      if (timer) clearTimeout(timer);
      if (!delivered) {
        // Out of time: stop the request under way (its batch counts as dropped) and give up the rest.
        stop.abort();
        await waitIdle(1000);
      }
      drop(take(size).length);
    },
  };
}

function serialize(batch: TelemetryRecord[]): { json: string; count: number } {
  try {
    return { json: JSON.stringify(batch), count: batch.length };
  } catch {
    // One record that cannot be written (a cycle, a BigInt) must not sink the batch.
    const good = batch.filter((record) => {
      try {
        JSON.stringify(record);
        return true;
      } catch {
        return false;
      }
    });
    return { json: JSON.stringify(good), count: good.length };
  }
}

/** One delivery attempt failed in a way worth another (network, 5xx, 408, 429). */
class DeliveryFailed extends Error {
  constructor(readonly retryAfterMs?: number) {
    super("telemetry delivery failed");
  }
}

function retryAfterOf(header: string | null): number | undefined {
  if (!header) return undefined;
  const seconds = Number(header);
  if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000;
  const date = Date.parse(header);
  return Number.isFinite(date) ? Math.max(0, date - Date.now()) : undefined;
}

function describeFetchError(error: unknown): string {
  const e = error as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e?.name === "TimeoutError") return "no answer in time";
  return e?.cause?.code ?? e?.cause?.message ?? e?.message ?? String(error);
}
