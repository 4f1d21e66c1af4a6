import type { Queryable } from "../types";

export interface MessageRecord {
  id: string;
  role: "user" | "assistant" | "tool" | "result";
  content: unknown;
  /** The stream sequence of the event that carried this message. */
  sequence: number;
  createdAt: number;
  /** Set when a rewind took it off the session's line (it stays in the history). */
  rewoundAt?: number | null;
}

export async function insertMessages(db: Queryable, sessionId: string, messages: MessageRecord[]): Promise<void> {
  if (messages.length === 0) return;
  const values = messages.map(() => `(?, ?, ?, ?, ?, ?)`).join(", ");
  const params = messages.flatMap((m) => [m.id, sessionId, m.sequence, m.role, JSON.stringify(m.content), m.createdAt]);
  await db.run(`INSERT INTO messages (id, session_id, sequence, role, content, created_at) VALUES ${values}`, params);
}

export async function listMessages(db: Queryable, sessionId: string, options: { after?: number; limit?: number } = {}): Promise<MessageRecord[]> {
  const rows = await db.all<any>(
    `SELECT id, role, content, sequence, created_at, rewound_at FROM messages WHERE session_id = ? AND sequence > ? ORDER BY sequence, id LIMIT ?`,
    [sessionId, options.after ?? 0, options.limit ?? 100],
  );
  return rows.map((r) => ({
    id: r.id,
    role: r.role,
    content: JSON.parse(r.content),
    sequence: Number(r.sequence),
    createdAt: Number(r.created_at),
    rewoundAt: r.rewound_at === null || r.rewound_at === undefined ? null : Number(r.rewound_at),
  }));
}

/**
 * Copies a session's messages to another (fork), with fresh ids. With `at`,
 * only those of the line that led to that point: up to its sequence, without
 * those a rewind had already taken off the line by then.
 */
export async function copyMessages(
  db: Queryable,
  fromSessionId: string,
  toSessionId: string,
  newId: () => string,
  at?: { sequence: number; time: number },
): Promise<void> {
  const rows = at
    ? await db.all<any>(
        `SELECT role, content, sequence, created_at FROM messages WHERE session_id = ? AND sequence <= ? AND (rewound_at IS NULL OR rewound_at > ?) ORDER BY sequence`,
        [fromSessionId, at.sequence, at.time],
      )
    : await db.all<any>(`SELECT role, content, sequence, created_at FROM messages WHERE session_id = ? AND rewound_at IS NULL ORDER BY sequence`, [fromSessionId]);
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

/** A rewind: messages after `sequence` leave the session's line (kept, marked). */
export async function rewindMessages(db: Queryable, sessionId: string, sequence: number, at: number): Promise<void> {
  await db.run(`UPDATE messages SET rewound_at = ? WHERE session_id = ? AND sequence > ? AND rewound_at IS NULL`, [at, sessionId, sequence]);
}

export async function lastMessageSeq(db: Queryable, sessionId: string): Promise<number> {
  const row = await db.get<any>(`SELECT MAX(sequence) AS seq FROM messages WHERE session_id = ?`, [sessionId]);
  return Number(row?.seq ?? 0);
}
