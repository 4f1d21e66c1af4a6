/** Opening the database the configuration names: SQLite by default, PostgreSQL/CockroachDB by URL. */
import { consola } from "consola";
import { openPostgres } from "./postgres";
import { openSqlite } from "./sqlite";
import type { AshDatabase } from "./types";
import { redactUrl, resolveDatabaseTarget } from "./url";

export interface OpenDatabaseOptions {
  /** Unset, `sqlite:` or `file:` → SQLite at `<dataDir>/ash.db`; `postgres://…`/`postgresql://…` → PostgreSQL. */
  url?: string;
  dataDir: string;
  /** PostgreSQL only: how long to keep retrying an unreachable server at start-up. Default 120 s. */
  connectTimeoutMs?: number;
  /** PostgreSQL only: pool size. Default 10. */
  maxConnections?: number;
}

export async function openDatabase(options: OpenDatabaseOptions): Promise<AshDatabase> {
  const target = resolveDatabaseTarget(options.url, options.dataDir);
  const log = consola.withTag("db");
  if (target.dialect === "sqlite") {
    const db = await openSqlite({ path: target.path });
    log.info(`using SQLite at ${target.path}`);
    return db;
  }
  const db = await openPostgres({
    url: target.url,
    connectTimeoutMs: options.connectTimeoutMs,
    maxConnections: options.maxConnections,
  });
  log.info(`using PostgreSQL at ${redactUrl(target.url)}`);
  return db;
}
