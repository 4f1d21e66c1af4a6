/**
 * What both dialects' `transaction()` share: the retry loop, a `tx` that
 * refuses work once its transaction is over, and detection of queries sent
 * to the database itself from inside its own transaction (on SQLite that
 * would wait forever for the transaction's own lock).
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { jitteredDelay, retry } from "../retry";
import { DatabaseBusyError } from "./errors";
import type { Queryable } from "./types";

export interface RetryPolicy {
  /** Errors after which the whole transaction is run again from the start. */
  isRetryable(err: unknown): boolean;
  /** Attempts in all, the first included. */
  maxAttempts?: number;
  baseDelayMs?: number;
  maxDelayMs?: number;
  onRetry?(err: unknown, attempt: number, delayMs: number): void;
}

export const DEFAULT_MAX_ATTEMPTS = 8;

/**
 * Calls `attempt` until it succeeds or fails with an error that is not
 * retryable; after `maxAttempts` retryable failures, rejects with DatabaseBusyError.
 */
export async function retryTransaction<T>(attempt: () => Promise<T>, policy: RetryPolicy): Promise<T> {
  return retry(attempt, {
    attempts: policy.maxAttempts ?? DEFAULT_MAX_ATTEMPTS,
    retryIf: (err) => policy.isRetryable(err),
    delay: (n) => jitteredDelay(n, policy.baseDelayMs ?? 10, policy.maxDelayMs ?? 1000),
    onRetry: policy.onRetry,
    exhausted: (err, n) => new DatabaseBusyError(err, n),
  });
}

/** A `tx` that forwards to `inner` until `finish()`, and throws afterwards. */
export function transactionHandle(inner: Queryable): { tx: Queryable; finish(): void } {
  let finished = false;
  const check = () => {
    if (finished) throw new Error("this transaction has already finished; run later queries on the database itself");
  };
  return {
    tx: {
      all: async (sql, params) => (check(), inner.all(sql, params)),
      get: async (sql, params) => (check(), inner.get(sql, params)),
      run: async (sql, params) => (check(), inner.run(sql, params)),
    } as Queryable,
    finish: () => {
      finished = true;
    },
  };
}

/** Knows, per database, whether the running async call chain is inside one of its open transactions. */
export class TransactionScope {
  readonly #storage = new AsyncLocalStorage<{ open: boolean }>();

  /** Runs `fn` marked as inside a transaction; work it leaves behind is unmarked once it returns. */
  async run<T>(fn: () => Promise<T>): Promise<T> {
    const state = { open: true };
    try {
      return await this.#storage.run(state, fn);
    } finally {
      state.open = false;
    }
  }

  /** Throws a clear error instead of letting `what` deadlock or escape the transaction. */
  assertOutside(what: string): void {
    if (this.#storage.getStore()?.open) {
      throw new Error(
        `${what} was called on the database inside one of its own transactions; ` +
          "use the transaction's `tx` argument instead (transactions do not nest)",
      );
    }
  }
}
