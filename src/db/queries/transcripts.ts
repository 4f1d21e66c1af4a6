import type { AshDatabase, Queryable } from "../types";

// The Claude Code transcript of each session, kept in our database through the
// Agent SDK's SessionStore hook, so a session's memory survives eviction,
// restarts and moving to another server.

export interface TranscriptKey {
  sessionId: string;
  sdkSessionId: string;
  subpath: string;
}

export async function appendTranscript(db: AshDatabase, key: TranscriptKey, entries: Array<{ uuid?: string } & Record<string, unknown>>): Promise<void> {
  if (entries.length === 0) return;
  await db.transaction(async (tx) => {
    const row = await tx.get<any>(`SELECT MAX(idx) AS idx FROM transcripts WHERE session_id = ? AND sdk_session_id = ? AND subpath = ?`, [
      key.sessionId,
      key.sdkSessionId,
      key.subpath,
    ]);
    let idx = Number(row?.idx ?? -1);
    for (const entry of entries) {
      idx += 1;
      // uuid is the SDK's idempotency key: a retried batch must not duplicate lines.
      await tx.run(
        `INSERT INTO transcripts (session_id, sdk_session_id, subpath, idx, uuid, entry) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
        [key.sessionId, key.sdkSessionId, key.subpath, idx, typeof entry.uuid === "string" ? entry.uuid : null, JSON.stringify(entry)],
      );
    }
  });
}

/** The stored lines in order; with `upTo`, only those up to and including that line. */
export async function loadTranscript(db: Queryable, key: TranscriptKey, upTo?: number): Promise<Record<string, unknown>[] | null> {
  const rows = await db.all<any>(`SELECT entry FROM transcripts WHERE session_id = ? AND sdk_session_id = ? AND subpath = ? AND idx <= ? ORDER BY idx`, [
    key.sessionId,
    key.sdkSessionId,
    key.subpath,
    upTo ?? Number.MAX_SAFE_INTEGER,
  ]);
  return rows.length === 0 ? null : rows.map((r) => JSON.parse(r.entry));
}

/** A fork starts from a copy of its parent's transcript. */
export async function copyTranscript(db: Queryable, fromSessionId: string, toSessionId: string): Promise<void> {
  await db.run(
    `INSERT INTO transcripts (session_id, sdk_session_id, subpath, idx, uuid, entry) SELECT ?, sdk_session_id, subpath, idx, uuid, entry FROM transcripts WHERE session_id = ?`,
    [toSessionId, fromSessionId],
  );
}

/**
 * Where a conversation stands: the line holding `uuid` when it is stored,
 * else `fallback` (lines stored when the position was taken), else the end.
 */
export async function transcriptPosition(db: Queryable, key: TranscriptKey, uuid: string | null, fallback: number | null): Promise<number | undefined> {
  if (uuid) {
    const row = await db.get<any>(`SELECT idx FROM transcripts WHERE session_id = ? AND sdk_session_id = ? AND subpath = ? AND uuid = ?`, [
      key.sessionId,
      key.sdkSessionId,
      key.subpath,
      uuid,
    ]);
    if (row) return Number(row.idx);
  }
  return fallback ?? undefined;
}

/** The index of the last stored line (-1: none). */
export async function lastTranscriptIdx(db: Queryable, key: TranscriptKey): Promise<number> {
  const row = await db.get<any>(`SELECT MAX(idx) AS idx FROM transcripts WHERE session_id = ? AND sdk_session_id = ? AND subpath = ?`, [
    key.sessionId,
    key.sdkSessionId,
    key.subpath,
  ]);
  return Number(row?.idx ?? -1);
}
