/** One condition of a WHERE clause with its parameters, or nothing when the filter is not set. */
export type Condition = readonly [sql: string, ...params: unknown[]] | undefined | false;

/** `WHERE a AND b` from the conditions that are set (empty when none is), with their parameters in order. */
export function whereOf(conditions: Condition[]): { sql: string; params: unknown[] } {
  const set = conditions.filter((c): c is readonly [string, ...unknown[]] => Boolean(c));
  return {
    sql: set.length ? `WHERE ${set.map(([sql]) => sql).join(" AND ")}` : "",
    params: set.flatMap(([, ...params]) => params),
  };
}

/** Keyset paging on (created_at, id): rows after the cursor in the given direction. */
export function pastCursor(cursor: { createdAt: number; id: string } | undefined, direction: "older" | "newer"): Condition {
  if (!cursor) return undefined;
  const op = direction === "older" ? "<" : ">";
  return [`(created_at ${op} ? OR (created_at = ? AND id ${op} ?))`, cursor.createdAt, cursor.createdAt, cursor.id];
}
