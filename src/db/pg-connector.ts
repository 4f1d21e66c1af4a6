/**
 * A db0 connector around `pg.Pool`. db0's own postgresql connector holds one
 * `pg.Client` that never reconnects and crashes the process when the server
 * drops it; a server that lives for months needs a pool that survives restarts
 * of the database. See docs/decisions/db-pg-pool-connector.md.
 */
import type { Connector, Primitive, PreparedStatement, Statement } from "db0";
import type pg from "pg";
import { toDatabaseError, isUnavailableError } from "./errors";
import { toNumberedPlaceholders } from "./placeholders";
import type { Queryable, Row } from "./types";

/** Runs one statement on `client`, with `?` placeholders; connection failures become DatabaseUnavailableError. */
export async function runOn(client: pg.ClientBase, sql: string, params: unknown[] = []): Promise<pg.QueryResult> {
  try {
    return await client.query(toNumberedPlaceholders(sql), params);
  } catch (err) {
    throw toDatabaseError(err);
  }
}

/**
 * Lends `fn` a pooled connection. While lent, the connection has an `error`
 * listener (pg-pool removes its own on checkout, and an unheard `error` event
 * would end the process). A connection that failed is closed instead of being
 * returned; an ordinary SQL error keeps it (pool.query would discard it).
 */
export async function withPoolClient<T>(
  pool: pg.Pool,
  fn: (client: pg.PoolClient, discard: (reason: Error) => void) => Promise<T>,
): Promise<T> {
  let client: pg.PoolClient;
  try {
    client = await pool.connect();
  } catch (err) {
    throw toDatabaseError(err);
  }
  let broken: Error | undefined;
  const discard = (reason: Error) => {
    broken ??= reason;
  };
  client.on("error", discard);
  try {
    return await fn(client, discard);
  } catch (err) {
    if (isUnavailableError(err)) discard(err as Error);
    throw err;
  } finally {
    client.removeListener("error", discard);
    client.release(broken);
  }
}

/** `Queryable` over something that runs one statement and returns pg's result. */
export function resultQueryable(execute: (sql: string, params: unknown[]) => Promise<pg.QueryResult>): Queryable {
  return {
    async all<T = Row>(sql: string, params: unknown[] = []) {
      return (await execute(sql, params)).rows as T[];
    },
    async get<T = Row>(sql: string, params: unknown[] = []) {
      return (await execute(sql, params)).rows[0] as T | undefined;
    },
    async run(sql: string, params: unknown[] = []) {
      return { changes: (await execute(sql, params)).rowCount ?? 0 };
    },
  };
}

type Execute = (sql: string, params: unknown[]) => Promise<pg.QueryResult>;

class PgStatement implements Statement {
  constructor(
    readonly sql: string,
    private readonly execute: Execute,
  ) {}

  bind(...params: Primitive[]): PreparedStatement {
    return {
      bind: (...other: Primitive[]) => this.bind(...other),
      all: () => this.all(...params),
      run: () => this.run(...params),
      get: () => this.get(...params),
    };
  }

  async all(...params: Primitive[]): Promise<unknown[]> {
    return (await this.execute(this.sql, params)).rows;
  }

  async get(...params: Primitive[]): Promise<unknown> {
    return (await this.execute(this.sql, params)).rows[0];
  }

  /** Also reports `changes` (pg's rowCount), like the better-sqlite3 connector does. */
  async run(...params: Primitive[]): Promise<{ success: boolean; changes: number; rows: unknown[] }> {
    const result = await this.execute(this.sql, params);
    return { success: true, changes: result.rowCount ?? 0, rows: result.rows };
  }
}

export function pgPoolConnector(pool: pg.Pool): Connector<pg.Pool> {
  const once: Execute = (sql, params) => withPoolClient(pool, (client) => runOn(client, sql, params));
  // After the database restarts, an idle pooled connection can be dead before
  // pg notices. A read that fails that way is tried once more on a fresh
  // connection; a write is not (it may have been applied), its caller sees 503.
  const execute: Execute = async (sql, params) => {
    try {
      return await once(sql, params);
    } catch (err) {
      if (!isUnavailableError(err) || !/^\s*select\b/i.test(sql)) throw err;
      return once(sql, params);
    }
  };
  return {
    name: "postgresql",
    dialect: "postgresql",
    getInstance: () => pool,
    exec: (sql) => execute(sql, []),
    prepare: (sql) => new PgStatement(sql, execute),
    dispose: () => pool.end(),
  };
}
