import type { Database } from "db0";

export type Dialect = "sqlite" | "postgres";

/** A row as the driver returns it: column name to value. */
export type Row = Record<string, unknown>;

/**
 * What queries run against: the database itself, or one open transaction.
 * SQL uses `?` placeholders on every dialect; values are strings, numbers
 * (timestamps are epoch milliseconds in BIGINT columns), null, or Buffers.
 */
export interface Queryable {
  /** `all` and `get` need a statement that returns rows (SELECT, or RETURNING). */
  all<T = Row>(sql: string, params?: unknown[]): Promise<T[]>;
  get<T = Row>(sql: string, params?: unknown[]): Promise<T | undefined>;
  run(sql: string, params?: unknown[]): Promise<{ changes: number }>;
}

export interface AshDatabase extends Queryable {
  readonly dialect: Dialect;
  /** The db0 instance underneath, for code that wants db0's own API. */
  readonly db0: Database;
  /**
   * Runs `fn` in one transaction and commits it; rolls back when `fn` throws.
   * Retried from the start on serialization failures (SQLSTATE 40001) and
   * on SQLite busy errors, so `fn` must not have effects outside the database.
   * On PostgreSQL it runs at SERIALIZABLE (what CockroachDB always uses); after
   * 8 attempts it throws DatabaseBusyError (answered as 503). Transactions do
   * not nest, and `fn` must query through `tx` only.
   */
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>;
  /** True when a trivial query succeeds now. */
  ping(): Promise<boolean>;
  close(): Promise<void>;
}

export interface Migration {
  /** Applied in ascending order; never renumber one that has shipped. */
  id: number;
  name: string;
  /** Statements run in order inside one transaction. */
  statements: string[];
}
