import type { Queryable } from "../types";

/** One stored stream frame: what `id:` / `event:` / `data:` carry over SSE. */
export interface StoredEvent {
  seq: number;
  type: string;
  data: unknown;
  createdAt: number;
}

export async function insertEvents(db: Queryable, sessionId: string, events: StoredEvent[]): Promise<void> {
  if (events.length === 0) return;
  const values = events.map(() => `(?, ?, ?, ?, ?)`).join(", ");
  const params = events.flatMap((e) => [sessionId, e.seq, e.type, JSON.stringify(e.data), e.createdAt]);
  await db.run(`INSERT INTO events (session_id, seq, type, data, created_at) VALUES ${values}`, params);
}

export async function listEvents(
  db: Queryable,
  sessionId: string,
  options: { after?: number; limit?: number; type?: string } = {},
): Promise<StoredEvent[]> {
  const params: unknown[] = [sessionId, options.after ?? 0];
  let sql = `SELECT seq, type, data, created_at FROM events WHERE session_id = ? AND seq > ?`;
  if (options.type) {
    sql += ` AND type = ?`;
    params.push(options.type);
  }
  sql += ` ORDER BY seq LIMIT ?`;
  params.push(options.limit ?? 1000);
  const rows = await db.all<any>(sql, params);
  return rows.map((r) => ({ seq: Number(r.seq), type: r.type, data: JSON.parse(r.data), createdAt: Number(r.created_at) }));
}

export async function lastEventSeq(db: Queryable, sessionId: string): Promise<number> {
  const row = await db.get<any>(`SELECT MAX(seq) AS seq FROM events WHERE session_id = ?`, [sessionId]);
  return Number(row?.seq ?? 0);
}

/** Copies a session's event history to another (fork): all of it, or up to and including `upTo`. */
export async function copyEvents(db: Queryable, fromSessionId: string, toSessionId: string, upTo?: number): Promise<void> {
  await db.run(
    `INSERT INTO events (session_id, seq, type, data, created_at) SELECT ?, seq, type, data, created_at FROM events WHERE session_id = ? AND seq <= ?`,
    [toSessionId, fromSessionId, upTo ?? Number.MAX_SAFE_INTEGER],
  );
}

/**
 * Sessions whose last event is not `done`: a turn a crash or restart cut off.
 * Only those whose sandbox was this server's (or that have none), so a server
 * never closes another live server's turns.
 */
/** The type of the session's last event: a turn whose last event is not `done` was cut short. */
export async function lastEventType(db: Queryable, sessionId: string): Promise<string | undefined> {
  const row = await db.get<{ type: string }>(`SELECT type FROM events WHERE session_id = ? ORDER BY seq DESC LIMIT 1`, [sessionId]);
  return row?.type;
}

export async function unfinishedTurnSessions(db: Queryable, serverId: string): Promise<string[]> {
  const rows = await db.all<{ session_id: string }>(
    `SELECT e.session_id FROM events e
      JOIN sessions s ON s.id = e.session_id
      LEFT JOIN sandboxes b ON b.id = s.sandbox_id
      WHERE e.seq = (SELECT MAX(seq) FROM events WHERE session_id = e.session_id)
        AND e.type <> 'done' AND (b.server_id IS NULL OR b.server_id = ?)`,
    [serverId],
  );
  return rows.map((r) => r.session_id);
}
