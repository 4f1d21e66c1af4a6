import type { Queryable } from "../types";

export interface MessageRecord {
  id: string;
  role: "user" | "assistant" | "tool" | "result";
  content: unknown;
  /** The stream sequence of the event that carried this message. */
  sequence: number;
  createdAt: number;
}

export async function insertMessages(db: Queryable, sessionId: string, messages: MessageRecord[]): Promise<void> {
  if (messages.length === 0) return;
  const values = messages.map(() => `(?, ?, ?, ?, ?, ?)`).join(", ");
  const params = messages.flatMap((m) => [m.id, sessionId, m.sequence, m.role, JSON.stringify(m.content), m.createdAt]);
  await db.run(`INSERT INTO messages (id, session_id, sequence, role, content, created_at) VALUES ${values}`, params);
}

export async function listMessages(db: Queryable, sessionId: string, options: { after?: number; limit?: number } = {}): Promise<MessageRecord[]> {
  const rows = await db.all<any>(
    `SELECT id, role, content, sequence, created_at FROM messages WHERE session_id = ? AND sequence > ? ORDER BY sequence, id LIMIT ?`,
    [sessionId, options.after ?? 0, options.limit ?? 100],
  );
  return rows.map((r) => ({ id: r.id, role: r.role, content: JSON.parse(r.content), sequence: Number(r.sequence), createdAt: Number(r.created_at) }));
}

/** Copies a session's messages to another (fork), with fresh ids. */
export async function copyMessages(db: Queryable, fromSessionId: string, toSessionId: string, newId: () => string): Promise<void> {
  const rows = await db.all<any>(`SELECT role, content, sequence, created_at FROM messages WHERE session_id = ? ORDER BY sequence`, [fromSessionId]);
  for (const r of rows) {
    await db.run(`INSERT INTO messages (id, session_id, sequence, role, content, created_at) VALUES (?, ?, ?, ?, ?, ?)`, [
      newId(),
      toSessionId,
      r.sequence,
      r.role,
      r.content,
      r.created_at,
    ]);
  }
}
