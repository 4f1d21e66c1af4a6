/** Waiting between attempts: bounded exponential backoff with jitter. */

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
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

/** "2s", "0.3s": durations for log lines and error messages. */
export function formatSeconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(1))}s`;
}
