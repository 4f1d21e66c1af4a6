/** The `all/get/run` methods of `Queryable`, on top of a db0 database. */
import type { Database, Primitive } from "db0";
import type { Queryable, Row } from "./types";

/**
 * Parameters as the drivers want them: `undefined` becomes NULL on both
 * dialects (`pg` does that on its own, better-sqlite3 would throw).
 */
export function bindable(params: unknown[] | undefined): Primitive[] {
  if (!params) return [];
  return params.map((value) => (value === undefined ? null : value)) as Primitive[];
}

export function db0Queryable(db: Database): Queryable {
  return {
    async all<T = Row>(sql: string, params?: unknown[]): Promise<T[]> {
      return (await db.prepare(sql).all(...bindable(params))) as T[];
    },
    async get<T = Row>(sql: string, params?: unknown[]): Promise<T | undefined> {
      return ((await db.prepare(sql).get(...bindable(params))) ?? undefined) as T | undefined;
    },
    async run(sql: string, params?: unknown[]): Promise<{ changes: number }> {
      // Both connectors pass the driver's count through: better-sqlite3's
      // `changes`, and ours copies pg's `rowCount` into `changes`.
      const result = (await db.prepare(sql).run(...bindable(params))) as { changes?: number | bigint };
      return { changes: Number(result.changes ?? 0) };
    },
  };
}
