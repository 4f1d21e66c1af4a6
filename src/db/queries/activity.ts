import type { Queryable } from "../types";
import { whereOf, type Condition } from "./where";
import type { UsageFilter } from "./usage";

/** What sessions did, counted from their stored history (the model's tokens are in usage_records). */
export interface ActivitySums {
  /** tool_use events. */
  toolCalls: number;
  /** History rows a person or the agent wrote (tool results and turn results not counted). */
  messages: number;
  /** Seconds from each turn's start to its `done`. */
  computeSeconds: number;
}

/** The filter on a table joined to its session (alias `x`, sessions as `s`). */
function conditionsOf(filter: UsageFilter, time: string): Condition[] {
  return [
    filter.tenantId !== undefined && ["s.tenant_id = ?", filter.tenantId],
    filter.sessionId !== undefined && filter.sessionId !== "" && ["x.session_id = ?", filter.sessionId],
    filter.agentName !== undefined && filter.agentName !== "" && ["s.agent_name = ?", filter.agentName],
    filter.from !== undefined && [`x.${time} >= ?`, filter.from],
    filter.to !== undefined && [`x.${time} < ?`, filter.to],
  ];
}

export async function activitySums(db: Queryable, filter: UsageFilter): Promise<ActivitySums> {
  const events = whereOf([["x.type = ?", "tool_use"], ...conditionsOf(filter, "created_at")]);
  const tools = await db.get<any>(`SELECT COUNT(*) AS n FROM events x JOIN sessions s ON s.id = x.session_id ${events.sql}`, events.params);
  const history = whereOf([["x.role IN (?, ?)", "user", "assistant"], ...conditionsOf(filter, "created_at")]);
  const messages = await db.get<any>(`SELECT COUNT(*) AS n FROM messages x JOIN sessions s ON s.id = x.session_id ${history.sql}`, history.params);
  // A turn runs from its session_start to its done; a turn cut by a crash has no done and counts nothing.
  const turns = whereOf([["x.type IN (?, ?)", "session_start", "done"], ...conditionsOf(filter, "created_at")]);
  const rows = await db.all<any>(
    `SELECT x.session_id, x.type, x.created_at FROM events x JOIN sessions s ON s.id = x.session_id ${turns.sql} ORDER BY x.session_id, x.seq`,
    turns.params,
  );
  let ms = 0;
  let open: { session: string; at: number } | undefined;
  for (const row of rows) {
    if (row.type === "session_start") open = { session: row.session_id, at: Number(row.created_at) };
    else if (open && open.session === row.session_id) {
      ms += Math.max(0, Number(row.created_at) - open.at);
      open = undefined;
    }
  }
  return { toolCalls: Number(tools?.n ?? 0), messages: Number(messages?.n ?? 0), computeSeconds: Math.round(ms / 10) / 100 };
}

/** A tenant's sessions by status. */
export async function sessionsByStatus(db: Queryable, tenantId: string): Promise<Record<string, number>> {
  const rows = await db.all<any>(`SELECT status, COUNT(*) AS n FROM sessions WHERE tenant_id = ? GROUP BY status`, [tenantId]);
  return Object.fromEntries(rows.map((r) => [r.status, Number(r.n)]));
}

/** A tenant's evaluation runs by status. */
export async function evalRunsByStatus(db: Queryable, tenantId: string): Promise<Record<string, number>> {
  const rows = await db.all<any>(`SELECT status, COUNT(*) AS n FROM eval_runs WHERE tenant_id = ? GROUP BY status`, [tenantId]);
  return Object.fromEntries(rows.map((r) => [r.status, Number(r.n)]));
}

/** Completed turns and tokens used, for each of these sessions (those with none are left out). */
export async function sessionsActivity(db: Queryable, ids: string[]): Promise<Map<string, { turns: number; tokens: number }>> {
  const out = new Map<string, { turns: number; tokens: number }>();
  if (ids.length === 0) return out;
  const marks = ids.map(() => "?").join(", ");
  const turns = await db.all<any>(`SELECT session_id, COUNT(*) AS n FROM events WHERE type = 'turn_complete' AND session_id IN (${marks}) GROUP BY session_id`, ids);
  const tokens = await db.all<any>(
    `SELECT session_id, SUM(input_tokens + output_tokens + cache_creation_tokens + cache_read_tokens) AS n FROM usage_records WHERE session_id IN (${marks}) GROUP BY session_id`,
    ids,
  );
  const entry = (id: string) => out.get(id) ?? out.set(id, { turns: 0, tokens: 0 }).get(id)!;
  for (const row of turns) entry(row.session_id).turns = Number(row.n);
  for (const row of tokens) entry(row.session_id).tokens = Number(row.n ?? 0);
  return out;
}
