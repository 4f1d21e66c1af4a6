/**
 * SQLite through db0's better-sqlite3 connector: one synchronous connection
 * per process. Async transactions hold a mutex from BEGIN to COMMIT so other
 * queries of the process wait instead of running inside someone else's
 * transaction. See docs/decisions/db-sqlite-transaction-mutex.md.
 */
import { constants } from "node:fs";
import { chmod, mkdir, open } from "node:fs/promises";
import { dirname } from "node:path";
import type BetterSqlite3 from "better-sqlite3";
import { consola } from "consola";
import { createDatabase } from "db0";
import sqliteConnector from "db0/connectors/better-sqlite3";
import { isSqliteBusy } from "./errors";
import { Mutex } from "./mutex";
import { db0Queryable } from "./queryable";
import { retryTransaction, TransactionScope, transactionHandle } from "./transaction";
import type { AshDatabase, Queryable } from "./types";

const log = consola.withTag("db");

export interface SqliteOptions {
  /** The database file; its folder is created when missing. */
  path: string;
  /** How long a statement waits for another process's lock before SQLITE_BUSY. Default 5 s. */
  busyTimeoutMs?: number;
}

export async function openSqlite(options: SqliteOptions): Promise<AshDatabase> {
  const db0 = createDatabase(sqliteConnector({ path: options.path }));
  let raw: BetterSqlite3.Database;
  try {
    // Before the first query: db0 opens the file lazily.
    await ownerOnly(options.path);
    raw = await db0.getInstance();
    configure(raw, options);
  } catch (err) {
    await db0.dispose().catch(() => undefined);
    throw new Error(`cannot open the SQLite database at ${options.path}: ${(err as Error).message}`, { cause: err });
  }

  const direct = db0Queryable(db0);
  const mutex = new Mutex();
  const scope = new TransactionScope();

  /** A query on the database itself waits until no transaction is open. */
  const serialized = <A extends unknown[], R>(what: string, fn: (...args: A) => Promise<R>) =>
    async (...args: A): Promise<R> => {
      scope.assertOutside(what);
      return mutex.run(() => fn(...args));
    };

  /** One attempt, holding the mutex throughout: BEGIN IMMEDIATE, fn, COMMIT; ROLLBACK when anything throws. */
  const attempt = <T>(fn: (tx: Queryable) => Promise<T>) =>
    mutex.run(async () => {
      // IMMEDIATE takes the write lock now, so a busy database fails here,
      // before fn has run, rather than at its first write.
      raw.exec("BEGIN IMMEDIATE");
      const handle = transactionHandle(direct);
      try {
        const result = await scope.run(() => fn(handle.tx));
        raw.exec("COMMIT");
        return result;
      } catch (err) {
        if (raw.inTransaction) raw.exec("ROLLBACK");
        throw err;
      } finally {
        handle.finish();
      }
    });

  return {
    dialect: "sqlite",
    db0,
    all: serialized("all()", direct.all) as AshDatabase["all"],
    get: serialized("get()", direct.get) as AshDatabase["get"],
    run: serialized("run()", direct.run),
    async transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
      scope.assertOutside("transaction()");
      return retryTransaction(() => attempt(fn), {
        isRetryable: isSqliteBusy,
        baseDelayMs: 20,
        onRetry: (_err, n, delay) => log.debug(`SQLite busy on transaction attempt ${n}; retrying in ${delay}ms`),
      });
    },
    async ping(): Promise<boolean> {
      try {
        await serialized("ping()", direct.get)("SELECT 1");
        return true;
      } catch {
        return false;
      }
    },
    /** Waits for a running transaction to finish, then closes the file. */
    close: () => mutex.run(() => db0.dispose()),
  };
}

/**
 * WAL lets readers run during a write; synchronous=NORMAL in WAL mode keeps
 * every commit across a crash of the process (the OS has the data) and skips
 * an fsync per commit; see docs/decisions/db-sqlite-durability.md for power loss.
 */
function configure(raw: BetterSqlite3.Database, options: SqliteOptions): void {
  const mode = raw.pragma("journal_mode = WAL", { simple: true });
  if (mode !== "wal") {
    log.warn(`SQLite at ${options.path} cannot use WAL on this filesystem (journal_mode is ${String(mode)})`);
  }
  raw.pragma(`busy_timeout = ${Math.max(0, Math.floor(options.busyTimeoutMs ?? 5_000))}`);
  raw.pragma("foreign_keys = ON");
  raw.pragma("synchronous = NORMAL");
}

/**
 * The database holds agents' secrets and every message: readable by its owner
 * only. SQLite gives the -wal and -shm files the database file's mode, so the
 * file is made (or corrected to) 0600 before SQLite opens it.
 */
async function ownerOnly(path: string): Promise<void> {
  if (path === ":memory:" || path === "") return;
  await mkdir(dirname(path), { recursive: true });
  const handle = await open(path, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o600).catch(() => undefined);
  await handle?.chmod(0o600);
  await handle?.close();
  for (const suffix of ["-wal", "-shm"]) await chmod(path + suffix, 0o600).catch(() => undefined);
}
