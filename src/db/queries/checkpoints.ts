import type { Queryable } from "../types";

/**
 * A completed turn of a session: the workspace version saved after it and
 * where the conversation stood, so the session can be rewound or forked there.
 */
export interface CheckpointRecord {
  sessionId: string;
  /** 1, 2, 3… in the order they were made; never reused, also after a rewind. */
  number: number;
  /** User turns in the conversation at this point (a rewind makes later numbers reuse turns). */
  turn: number;
  /** The checkpoint this one followed on its line; null for a session's first. */
  parent: number | null;
  version: string;
  /** The Claude Code session whose transcript holds the conversation, and its last entry of the turn. */
  sdkSessionId: string | null;
  transcriptUuid: string | null;
  /** Transcript lines stored at the time (fallback position when the turn wrote no entry with a uuid). */
  transcriptIdx: number | null;
  /** Highest message sequence and event seq of the session when the turn ended. */
  messageSeq: number;
  eventSeq: number;
  fileCount: number;
  bytes: number;
  filesChanged: number;
  bytesChanged: number;
  /** The start of the user message that began the turn. */
  prompt: string | null;
  /** When a rewind took it off the session's line. */
  rewoundAt: number | null;
  createdAt: number;
}

const COLUMNS = `session_id, number, turn, parent, version, sdk_session_id, transcript_uuid, transcript_idx, message_seq, event_seq, file_count, bytes, files_changed, bytes_changed, prompt, rewound_at, created_at`;

const num = (v: unknown) => (v === null || v === undefined ? null : Number(v));

function toCheckpoint(row: any): CheckpointRecord {
  return {
    sessionId: row.session_id,
    number: Number(row.number),
    turn: Number(row.turn),
    parent: num(row.parent),
    version: row.version,
    sdkSessionId: row.sdk_session_id ?? null,
    transcriptUuid: row.transcript_uuid ?? null,
    transcriptIdx: num(row.transcript_idx),
    messageSeq: Number(row.message_seq),
    eventSeq: Number(row.event_seq),
    fileCount: Number(row.file_count),
    bytes: Number(row.bytes),
    filesChanged: Number(row.files_changed),
    bytesChanged: Number(row.bytes_changed),
    prompt: row.prompt ?? null,
    rewoundAt: num(row.rewound_at),
    createdAt: Number(row.created_at),
  };
}

export async function insertCheckpoint(db: Queryable, c: CheckpointRecord): Promise<void> {
  await db.run(`INSERT INTO checkpoints (${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, [
    c.sessionId,
    c.number,
    c.turn,
    c.parent,
    c.version,
    c.sdkSessionId,
    c.transcriptUuid,
    c.transcriptIdx,
    c.messageSeq,
    c.eventSeq,
    c.fileCount,
    c.bytes,
    c.filesChanged,
    c.bytesChanged,
    c.prompt,
    c.rewoundAt,
    c.createdAt,
  ]);
}

/** Oldest first. */
export async function listCheckpoints(db: Queryable, sessionId: string): Promise<CheckpointRecord[]> {
  return (await db.all(`SELECT ${COLUMNS} FROM checkpoints WHERE session_id = ? ORDER BY number`, [sessionId])).map(toCheckpoint);
}

export async function getCheckpoint(db: Queryable, sessionId: string, number: number): Promise<CheckpointRecord | undefined> {
  const row = await db.get(`SELECT ${COLUMNS} FROM checkpoints WHERE session_id = ? AND number = ?`, [sessionId, number]);
  return row ? toCheckpoint(row) : undefined;
}

/** The session's newest checkpoint on its current line (not rewound). */
export async function headCheckpoint(db: Queryable, sessionId: string): Promise<CheckpointRecord | undefined> {
  const row = await db.get(`SELECT ${COLUMNS} FROM checkpoints WHERE session_id = ? AND rewound_at IS NULL ORDER BY number DESC LIMIT 1`, [sessionId]);
  return row ? toCheckpoint(row) : undefined;
}

export async function nextCheckpointNumber(db: Queryable, sessionId: string): Promise<number> {
  const row = await db.get<any>(`SELECT MAX(number) AS n FROM checkpoints WHERE session_id = ?`, [sessionId]);
  return Number(row?.n ?? 0) + 1;
}

/** Marks every checkpoint made after `number` on the current line as rewound. */
export async function rewindCheckpoints(db: Queryable, sessionId: string, number: number, at: number): Promise<void> {
  await db.run(`UPDATE checkpoints SET rewound_at = ? WHERE session_id = ? AND number > ? AND rewound_at IS NULL`, [at, sessionId, number]);
}

/**
 * A fork at `at` starts with the checkpoints of its line up to and including
 * `at` (their versions are shared, not copied: forking costs rows, not bytes).
 */
export async function copyCheckpoints(db: Queryable, fromSessionId: string, toSessionId: string, at: CheckpointRecord): Promise<void> {
  await db.run(
    `INSERT INTO checkpoints (${COLUMNS})
       SELECT ?, number, turn, parent, version, sdk_session_id, transcript_uuid, transcript_idx, message_seq, event_seq, file_count, bytes, files_changed, bytes_changed, prompt, rewound_at, created_at
       FROM checkpoints WHERE session_id = ? AND number <= ? AND (rewound_at IS NULL OR rewound_at > ?)`,
    [toSessionId, fromSessionId, at.number, at.createdAt],
  );
  // Those the source rewound after `at` was made are on the fork's line.
  await db.run(`UPDATE checkpoints SET rewound_at = NULL WHERE session_id = ?`, [toSessionId]);
}

/**
 * Retention: removes a session's checkpoints beyond the newest `keep` and
 * those older than `before` (epoch ms), except its newest one. Says how many went.
 */
export async function pruneCheckpoints(db: Queryable, sessionId: string, keep: number, before: number): Promise<number> {
  const newest = await db.get<any>(`SELECT MAX(number) AS n FROM checkpoints WHERE session_id = ?`, [sessionId]);
  if (newest?.n === null || newest?.n === undefined) return 0;
  const cut = await db.get<any>(`SELECT number FROM checkpoints WHERE session_id = ? ORDER BY number DESC LIMIT 1 OFFSET ?`, [sessionId, keep]);
  const byCount = cut ? Number(cut.number) : 0;
  const { changes } = await db.run(`DELETE FROM checkpoints WHERE session_id = ? AND number < ? AND (number <= ? OR created_at < ?)`, [
    sessionId,
    Number(newest.n),
    byCount,
    before,
  ]);
  return changes;
}

/** Sessions that have more checkpoints than `keep` or any older than `before`. */
export async function sessionsToPrune(db: Queryable, keep: number, before: number, limit: number): Promise<string[]> {
  const rows = await db.all<any>(
    `SELECT session_id FROM checkpoints GROUP BY session_id HAVING COUNT(*) > ? OR MIN(created_at) < ? LIMIT ?`,
    [keep, before, limit],
  );
  return rows.map((r) => r.session_id);
}

export async function deleteCheckpointsOf(db: Queryable, sessionId: string): Promise<void> {
  await db.run(`DELETE FROM checkpoints WHERE session_id = ?`, [sessionId]);
}
