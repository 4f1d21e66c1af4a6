/**
 * PostgreSQL (and CockroachDB, which speaks its protocol): a pool that
 * survives restarts of the database, and transactions on one pooled
 * connection that are run again when the server asks for it.
 */
import { consola } from "consola";
import { createDatabase } from "db0";
import pg from "pg";
import { describeUnavailability, isRetryableTransactionError } from "./errors";
import { pgPoolConnector, resultQueryable, runOn, withPoolClient } from "./pg-connector";
import { ashTypeParsers } from "./postgres-types";
import { db0Queryable } from "./queryable";
import { retryTransaction, TransactionScope, transactionHandle } from "./transaction";
import type { AshDatabase, Queryable } from "./types";
import { waitForPostgres } from "./wait-for-postgres";

const log = consola.withTag("db");

export interface PostgresOptions {
  /** `postgres://` or `postgresql://` URL; `sslmode` and other parameters are honoured as `pg` reads them. */
  url: string;
  /** How long start-up keeps trying to reach the server. Default 120 s. */
  connectTimeoutMs?: number;
  /** Pool size. Default 10. */
  maxConnections?: number;
}

export const DEFAULT_CONNECT_TIMEOUT_MS = 120_000;

/** Fewest milliseconds between two "connection lost" warnings, so a restart logs one line, not one per connection. */
const LOST_CONNECTION_LOG_INTERVAL_MS = 5_000;

/**
 * Every transaction runs at SERIALIZABLE, the level CockroachDB always uses, so
 * read-modify-write code behaves the same on both servers; the price is
 * occasional 40001 failures, which `transaction()` absorbs by running again.
 */
const BEGIN = "BEGIN ISOLATION LEVEL SERIALIZABLE";

export async function openPostgres(options: PostgresOptions): Promise<AshDatabase> {
  const config = {
    connectionString: options.url,
    application_name: "ash",
    types: ashTypeParsers,
    keepAlive: true,
  };
  await waitForPostgres(config, options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS);

  const pool = new pg.Pool({
    ...config,
    max: options.maxConnections ?? 10,
    // A pool that is exhausted or a server that does not answer gives a
    // DatabaseUnavailableError after this long instead of hanging the request.
    connectionTimeoutMillis: 10_000,
    idleTimeoutMillis: 30_000,
  });
  let lastLostLog = 0;
  pool.on("error", (err) => {
    // An idle connection died (e.g. the server restarted). pg-pool has already
    // dropped it; the next query opens a fresh one.
    if (Date.now() - lastLostLog < LOST_CONNECTION_LOG_INTERVAL_MS) return;
    lastLostLog = Date.now();
    log.warn(`database connection lost (${describeUnavailability(err)}); it is reopened on next use`);
  });

  const db0 = createDatabase(pgPoolConnector(pool));
  const direct = db0Queryable(db0);
  const scope = new TransactionScope();

  const outside = <A extends unknown[], R>(what: string, fn: (...args: A) => Promise<R>) =>
    async (...args: A): Promise<R> => {
      scope.assertOutside(what);
      return fn(...args);
    };

  /** One attempt: BEGIN, fn, COMMIT on a dedicated connection; ROLLBACK when anything throws. */
  const attempt = <T>(fn: (tx: Queryable) => Promise<T>) =>
    withPoolClient(pool, async (client, discard) => {
      await runOn(client, BEGIN);
      const handle = transactionHandle(resultQueryable((sql, params) => runOn(client, sql, params)));
      try {
        const result = await scope.run(() => fn(handle.tx));
        const commit = await runOn(client, "COMMIT");
        // PostgreSQL answers COMMIT of a transaction in which a statement failed
        // (and fn swallowed the error) with ROLLBACK, not with an error.
        if (commit.command === "ROLLBACK") {
          throw new Error("the transaction was rolled back because a statement in it failed");
        }
        return result;
      } catch (err) {
        await runOn(client, "ROLLBACK").catch((rollbackErr: Error) => discard(rollbackErr));
        throw err;
      } finally {
        handle.finish();
      }
    });

  return {
    dialect: "postgres",
    db0,
    all: outside("all()", direct.all) as AshDatabase["all"],
    get: outside("get()", direct.get) as AshDatabase["get"],
    run: outside("run()", direct.run),
    async transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
      scope.assertOutside("transaction()");
      return retryTransaction(() => attempt(fn), {
        isRetryable: isRetryableTransactionError,
        onRetry: (err, n, delay) =>
          log.debug(`transaction attempt ${n} failed (${(err as { code?: string }).code}); retrying in ${delay}ms`),
      });
    },
    async ping(): Promise<boolean> {
      try {
        scope.assertOutside("ping()");
        await withPoolClient(pool, (client) => runOn(client, "SELECT 1"));
        return true;
      } catch {
        return false;
      }
    },
    close: () => db0.dispose(),
  };
}
