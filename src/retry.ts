/**
 * Trying again: one loop for every call the server retries (database
 * transactions and migrations, the wait for PostgreSQL, object stores), with
 * the waits between attempts computed by the delays below.
 */

/** Waits `ms`, or less when `signal` aborts; `unref`: the wait alone does not keep the process alive. */
export function sleep(ms: number, signal?: AbortSignal, unref = false): Promise<void> {
  if (!signal) return new Promise((resolve) => (unref ? setTimeout(resolve, ms).unref() : setTimeout(resolve, ms)));
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    if (unref) timer.unref();
    function done() {
      clearTimeout(timer);
      signal!.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}

/**
 * Delay before retry number `attempt` (1 for the first retry): doubles from
 * `baseMs` up to `capMs`, then a random point in its upper half, so that
 * contenders that collided once spread out instead of colliding again.
 */
export function jitteredDelay(attempt: number, baseMs: number, capMs: number): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
}

/** `baseMs`·`factor`^(attempt-1), capped: for waits on one resource nobody else contends for. */
export function exponentialDelay(attempt: number, baseMs: number, capMs = Infinity, factor = 2): number {
  return Math.min(capMs, baseMs * factor ** Math.max(0, attempt - 1));
}

/** "2s", "0.3s": durations for log lines and error messages. */
export function formatSeconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(1))}s`;
}

export interface RetryPolicy {
  /** Attempts in all, the first included. */
  attempts: number;
  /** The wait before the next attempt, after failed attempt number `attempt`. */
  delay(attempt: number, error: unknown): number;
  /** Whether this failure is worth another attempt (default: every one). */
  retryIf?(error: unknown, attempt: number): boolean;
  /** Before each wait: a log line, a metric; throwing here stops the retries with that error. */
  onRetry?(error: unknown, attempt: number, delayMs: number): void;
  /** What is thrown when the attempts are used up (default: the last error). */
  exhausted?(error: unknown, attempts: number): unknown;
  /** Stops waiting; the last error is thrown. */
  signal?: AbortSignal;
  /** The waits alone do not keep the process alive (background work such as telemetry). */
  unref?: boolean;
}

/** Calls `call` until it succeeds, fails with an error not worth retrying, or runs out of attempts. */
export async function retry<T>(call: (attempt: number) => Promise<T>, policy: RetryPolicy): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await call(attempt);
    } catch (error) {
      if (policy.retryIf && !policy.retryIf(error, attempt)) throw error;
      if (attempt >= policy.attempts || policy.signal?.aborted) throw policy.exhausted ? policy.exhausted(error, attempt) : error;
      const delay = policy.delay(attempt, error);
      policy.onRetry?.(error, attempt, delay);
      await sleep(delay, policy.signal, policy.unref);
      if (policy.signal?.aborted) throw policy.exhausted ? policy.exhausted(error, attempt) : error;
    }
  }
}
