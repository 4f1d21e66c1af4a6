import type { Queryable } from "../types";
import { pastCursor, whereOf } from "./where";
import { QUEUE_STATUSES, type QueueStatus } from "../../contract";

export type { QueueStatus };

export interface QueueItemRecord {
  id: string;
  /** The tenant whose agent runs it (and who alone sees it). */
  tenantId: string;
  /** The API key that queued it; the session it makes counts against that key. */
  apiKeyId: string | null;
  agentName: string;
  prompt: string;
  /** The session the prompt continues, when the caller named one. */
  continueSessionId: string | null;
  /** The session the latest attempt ran in. */
  sessionId: string | null;
  priority: number;
  status: QueueStatus;
  /** How often it was claimed (a claim that a crash cut short counts too). */
  attempts: number;
  maxRetries: number;
  nextAttemptAt: number;
  claimedBy: string | null;
  leaseUntil: number | null;
  result: string | null;
  error: string | null;
  createdAt: number;
  startedAt: number | null;
  completedAt: number | null;
}

/** Who holds an item: the server and the attempt its claim made. A write with an older claim changes nothing. */
export interface Claim {
  id: string;
  serverId: string;
  attempt: number;
}

const COLUMNS = `id, tenant_id, api_key_id, agent_name, prompt, continue_session_id, session_id, priority, status, attempts, max_retries, next_attempt_at,
  claimed_by, lease_until, result, error, created_at, started_at, completed_at`;

const num = (v: unknown) => (v === null || v === undefined ? null : Number(v));

function toRecord(row: any): QueueItemRecord {
  return {
    id: row.id,
    tenantId: row.tenant_id ?? "default",
    apiKeyId: row.api_key_id ?? null,
    agentName: row.agent_name,
    prompt: row.prompt,
    continueSessionId: row.continue_session_id ?? null,
    sessionId: row.session_id ?? null,
    priority: Number(row.priority),
    status: row.status,
    attempts: Number(row.attempts),
    maxRetries: Number(row.max_retries),
    nextAttemptAt: Number(row.next_attempt_at),
    claimedBy: row.claimed_by ?? null,
    leaseUntil: num(row.lease_until),
    result: row.result ?? null,
    error: row.error ?? null,
    createdAt: Number(row.created_at),
    startedAt: num(row.started_at),
    completedAt: num(row.completed_at),
  };
}

export async function insertQueueItem(
  db: Queryable,
  item: { id: string; tenantId: string; apiKeyId: string | null; agentName: string; prompt: string; continueSessionId: string | null; priority: number; maxRetries: number; createdAt: number },
): Promise<QueueItemRecord> {
  await db.run(
    `INSERT INTO queue_items (id, tenant_id, api_key_id, agent_name, prompt, continue_session_id, session_id, priority, status, attempts, max_retries, next_attempt_at, created_at)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?)`,
    [item.id, item.tenantId, item.apiKeyId, item.agentName, item.prompt, item.continueSessionId, item.continueSessionId, item.priority, item.maxRetries, item.createdAt, item.createdAt],
  );
  // As written, not read back: a server may claim it the moment it exists.
  return {
    ...item,
    sessionId: item.continueSessionId,
    status: "pending",
    attempts: 0,
    nextAttemptAt: item.createdAt,
    claimedBy: null,
    leaseUntil: null,
    result: null,
    error: null,
    startedAt: null,
    completedAt: null,
  };
}

export async function getQueueItem(db: Queryable, id: string): Promise<QueueItemRecord | undefined> {
  const row = await db.get(`SELECT ${COLUMNS} FROM queue_items WHERE id = ?`, [id]);
  return row ? toRecord(row) : undefined;
}

/** Newest first; `cursor` is the last item of the previous page. */
export async function listQueueItems(
  db: Queryable,
  filter: { tenantId: string; status?: QueueStatus; agentName?: string; limit: number; cursor?: { createdAt: number; id: string } },
): Promise<QueueItemRecord[]> {
  const { sql, params } = whereOf([
    ["tenant_id = ?", filter.tenantId],
    filter.status !== undefined && ["status = ?", filter.status],
    filter.agentName !== undefined && ["agent_name = ?", filter.agentName],
    pastCursor(filter.cursor, "older"),
  ]);
  const rows = await db.all(`SELECT ${COLUMNS} FROM queue_items ${sql} ORDER BY created_at DESC, id DESC LIMIT ?`, [...params, filter.limit]);
  return rows.map(toRecord);
}

/** How many items have each status. */
export async function queueCounts(db: Queryable, tenantId: string): Promise<Record<QueueStatus, number>> {
  const rows = await db.all<any>(`SELECT status, COUNT(*) AS n FROM queue_items WHERE tenant_id = ? GROUP BY status`, [tenantId]);
  const counts = Object.fromEntries(QUEUE_STATUSES.map((s) => [s, 0])) as Record<QueueStatus, number>;
  for (const row of rows) if (row.status in counts) counts[row.status as QueueStatus] = Number(row.n);
  return counts;
}

/**
 * The ids of items that may be claimed now, best first (highest priority, then oldest):
 * pending ones whose retry time has come, and running ones whose lease ran out.
 */
export async function claimCandidates(db: Queryable, now: number, limit: number): Promise<string[]> {
  const rows = await db.all<{ id: string }>(
    `SELECT id FROM queue_items
      WHERE (status = 'pending' AND next_attempt_at <= ?) OR (status = 'running' AND lease_until < ? AND attempts <= max_retries)
      ORDER BY priority DESC, created_at, id LIMIT ?`,
    [now, now, limit],
  );
  return rows.map((r) => r.id);
}

/**
 * Takes one item for `serverId` when it is still claimable: one UPDATE whose WHERE
 * re-checks the state, so of several servers racing for it exactly one changes the row
 * (PostgreSQL re-reads the row after waiting for its lock; CockroachDB and SQLite
 * serialize the writes). Answers the claim, or undefined when another server won.
 */
export async function claimQueueItem(db: Queryable, id: string, serverId: string, now: number, leaseMs: number): Promise<QueueItemRecord | undefined> {
  const { changes } = await db.run(
    `UPDATE queue_items SET status = 'running', claimed_by = ?, lease_until = ?, attempts = attempts + 1, started_at = ?
      WHERE id = ? AND ((status = 'pending' AND next_attempt_at <= ?) OR (status = 'running' AND lease_until < ? AND attempts <= max_retries))`,
    [serverId, now + leaseMs, now, id, now, now],
  );
  if (changes !== 1) return undefined;
  const item = await getQueueItem(db, id);
  // Read back by our own claim: another server can only take it after our lease ran out.
  return item && item.claimedBy === serverId && item.status === "running" ? item : undefined;
}

const HELD = `id = ? AND claimed_by = ? AND attempts = ? AND status = 'running'`;
const held = (c: Claim) => [c.id, c.serverId, c.attempt];

/** Extends the lease; false when the claim is no longer ours (expired and taken, or cancelled). */
export async function renewLease(db: Queryable, claim: Claim, leaseUntil: number): Promise<boolean> {
  const { changes } = await db.run(`UPDATE queue_items SET lease_until = ? WHERE ${HELD}`, [leaseUntil, ...held(claim)]);
  return changes === 1;
}

export async function setQueueItemSession(db: Queryable, claim: Claim, sessionId: string): Promise<boolean> {
  const { changes } = await db.run(`UPDATE queue_items SET session_id = ? WHERE ${HELD}`, [sessionId, ...held(claim)]);
  return changes === 1;
}

export async function completeQueueItem(db: Queryable, claim: Claim, result: { text: string | null; sessionId: string | null }, now: number): Promise<boolean> {
  const { changes } = await db.run(
    `UPDATE queue_items SET status = 'completed', result = ?, session_id = ?, error = NULL, claimed_by = NULL, lease_until = NULL, completed_at = ? WHERE ${HELD}`,
    [result.text, result.sessionId, now, ...held(claim)],
  );
  return changes === 1;
}

/** A failed attempt: back to pending until `retryAt`, or failed for good when `retryAt` is null. */
export async function failQueueItem(db: Queryable, claim: Claim, error: string, sessionId: string | null, retryAt: number | null, now: number): Promise<boolean> {
  const { changes } =
    retryAt === null
      ? await db.run(
          `UPDATE queue_items SET status = 'failed', error = ?, session_id = ?, claimed_by = NULL, lease_until = NULL, completed_at = ? WHERE ${HELD}`,
          [error, sessionId, now, ...held(claim)],
        )
      : await db.run(
          `UPDATE queue_items SET status = 'pending', error = ?, session_id = ?, claimed_by = NULL, lease_until = NULL, next_attempt_at = ? WHERE ${HELD}`,
          [error, sessionId, retryAt, ...held(claim)],
        );
  return changes === 1;
}

/** Hands an item back untouched (this server is stopping): pending at once, the attempt not counted. */
export async function releaseQueueItem(db: Queryable, claim: Claim, now: number): Promise<boolean> {
  const { changes } = await db.run(
    `UPDATE queue_items SET status = 'pending', attempts = attempts - 1, claimed_by = NULL, lease_until = NULL, next_attempt_at = ? WHERE ${HELD}`,
    [now, ...held(claim)],
  );
  return changes === 1;
}

/** Running items whose lease ran out with no retries left: failed (the server running them went away). */
export async function failAbandoned(db: Queryable, now: number): Promise<number> {
  const { changes } = await db.run(
    `UPDATE queue_items SET status = 'failed', error = ?, claimed_by = NULL, lease_until = NULL, completed_at = ?
      WHERE status = 'running' AND lease_until < ? AND attempts > max_retries`,
    ["The server running it stopped, and no retries were left.", now, now],
  );
  return changes;
}

/** Cancels an item that has not finished; answers the item as it now is, or undefined when it had finished already. */
export async function cancelQueueItem(db: Queryable, id: string, now: number): Promise<boolean> {
  const { changes } = await db.run(
    `UPDATE queue_items SET status = 'cancelled', claimed_by = NULL, lease_until = NULL, completed_at = ? WHERE id = ? AND status IN ('pending', 'running')`,
    [now, id],
  );
  return changes === 1;
}
