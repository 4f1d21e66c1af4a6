import type { Queryable } from "../types";
import { pastCursor, whereOf } from "./where";

/**
 * Rows the Managed Agents API (/v1) adds to the ones /api already has:
 * environments, a session's title, metadata, environment and archive or
 * delete time, files placed in sessions. Agents, sessions, events and files
 * themselves are the /api rows.
 */

export interface EnvironmentRecord {
  id: string;
  tenantId: string;
  name: string;
  description: string | null;
  config: Record<string, unknown>;
  metadata: Record<string, string>;
  createdAt: number;
  updatedAt: number;
  archivedAt: number | null;
}

const ENV_COLUMNS = `id, tenant_id, name, description, config, metadata, created_at, updated_at, archived_at`;

function toEnvironment(row: any): EnvironmentRecord {
  return {
    id: row.id,
    tenantId: row.tenant_id,
    name: row.name,
    description: row.description ?? null,
    config: JSON.parse(row.config),
    metadata: JSON.parse(row.metadata),
    createdAt: Number(row.created_at),
    updatedAt: Number(row.updated_at),
    archivedAt: row.archived_at === null || row.archived_at === undefined ? null : Number(row.archived_at),
  };
}

export async function insertEnvironment(db: Queryable, e: EnvironmentRecord): Promise<void> {
  await db.run(`INSERT INTO environments (${ENV_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, [
    e.id,
    e.tenantId,
    e.name,
    e.description,
    JSON.stringify(e.config),
    JSON.stringify(e.metadata),
    e.createdAt,
    e.updatedAt,
    e.archivedAt,
  ]);
}

/** A tenant's environment; undefined for none or another tenant's. */
export async function getEnvironment(db: Queryable, tenantId: string, id: string): Promise<EnvironmentRecord | undefined> {
  const row = await db.get(`SELECT ${ENV_COLUMNS} FROM environments WHERE id = ? AND tenant_id = ?`, [id, tenantId]);
  return row ? toEnvironment(row) : undefined;
}

/** Oldest first, after the cursor. */
export async function listEnvironments(db: Queryable, tenantId: string, options: { includeArchived: boolean; limit: number; cursor?: { createdAt: number; id: string } }): Promise<EnvironmentRecord[]> {
  const where = whereOf([["tenant_id = ?", tenantId], !options.includeArchived && ["archived_at IS NULL"], pastCursor(options.cursor, "newer")]);
  return (await db.all(`SELECT ${ENV_COLUMNS} FROM environments ${where.sql} ORDER BY created_at, id LIMIT ?`, [...where.params, options.limit])).map(toEnvironment);
}

export async function updateEnvironment(db: Queryable, e: EnvironmentRecord): Promise<void> {
  await db.run(`UPDATE environments SET name = ?, description = ?, config = ?, metadata = ?, updated_at = ?, archived_at = ? WHERE id = ? AND tenant_id = ?`, [
    e.name,
    e.description,
    JSON.stringify(e.config),
    JSON.stringify(e.metadata),
    e.updatedAt,
    e.archivedAt,
    e.id,
    e.tenantId,
  ]);
}

export async function deleteEnvironment(db: Queryable, tenantId: string, id: string): Promise<boolean> {
  return (await db.run(`DELETE FROM environments WHERE id = ? AND tenant_id = ?`, [id, tenantId])).changes > 0;
}

/** What /v1 adds to a session row. */
export interface SessionExtras {
  title: string | null;
  metadata: Record<string, string>;
  environmentId: string | null;
  archivedAt: number | null;
  deletedAt: number | null;
}

const numberOrNull = (v: unknown) => (v === null || v === undefined ? null : Number(v));

export async function getSessionExtras(db: Queryable, sessionId: string): Promise<SessionExtras | undefined> {
  const row = await db.get<any>(`SELECT title, metadata, environment_id, archived_at, deleted_at FROM sessions WHERE id = ?`, [sessionId]);
  if (!row) return undefined;
  return {
    title: row.title ?? null,
    metadata: row.metadata ? JSON.parse(row.metadata) : {},
    environmentId: row.environment_id ?? null,
    archivedAt: numberOrNull(row.archived_at),
    deletedAt: numberOrNull(row.deleted_at),
  };
}

export async function setSessionExtras(db: Queryable, sessionId: string, extras: SessionExtras): Promise<void> {
  await db.run(`UPDATE sessions SET title = ?, metadata = ?, environment_id = ?, archived_at = ?, deleted_at = ? WHERE id = ?`, [
    extras.title,
    JSON.stringify(extras.metadata),
    extras.environmentId,
    extras.archivedAt,
    extras.deletedAt,
    sessionId,
  ]);
}

/**
 * A page of a tenant's sessions that /v1 shows (not deleted), in `order`
 * of creation; `towards` reads from the cursor on in that order, or back
 * from it (a previous page), returned in `order` all the same.
 */
export async function listSessionIds(
  db: Queryable,
  filter: { tenantId: string; agentId?: string; agentVersion?: number; includeArchived: boolean; statuses?: string[]; order: "asc" | "desc"; back: boolean; cursor?: { createdAt: number; id: string }; limit: number },
): Promise<Array<{ id: string; createdAt: number }>> {
  const forward = filter.order === "asc" ? !filter.back : filter.back;
  const statuses = filter.statuses ?? [];
  const where = whereOf([
    ["tenant_id = ?", filter.tenantId],
    ["deleted_at IS NULL"],
    Boolean(filter.agentId) && ["agent_id = ?", filter.agentId],
    filter.agentVersion !== undefined && ["agent_version = ?", filter.agentVersion],
    !filter.includeArchived && ["archived_at IS NULL"],
    statuses.length > 0 && [`status IN (${statuses.map(() => "?").join(", ")})`, ...statuses],
    pastCursor(filter.cursor, forward ? "newer" : "older"),
  ]);
  const dir = forward ? "ASC" : "DESC";
  const rows = await db.all<any>(`SELECT id, created_at FROM sessions ${where.sql} ORDER BY created_at ${dir}, id ${dir} LIMIT ?`, [...where.params, filter.limit]);
  const page = rows.map((r) => ({ id: r.id as string, createdAt: Number(r.created_at) }));
  return filter.back ? page.reverse() : page;
}

/** The last turn boundary of a session: `session_start` (a turn runs) or `done` (none does); null before the first turn. */
export async function lastTurnMarker(db: Queryable, sessionId: string): Promise<{ seq: number; type: string } | null> {
  const row = await db.get<any>(`SELECT seq, type FROM events WHERE session_id = ? AND type IN ('session_start', 'done') ORDER BY seq DESC LIMIT 1`, [sessionId]);
  return row ? { seq: Number(row.seq), type: row.type } : null;
}

/** Where the turn holding `seq` began: the last `session_start` at or before it (0: none). */
export async function turnStartAtOrBefore(db: Queryable, sessionId: string, seq: number): Promise<number> {
  const row = await db.get<any>(`SELECT MAX(seq) AS seq FROM events WHERE session_id = ? AND type = 'session_start' AND seq <= ?`, [sessionId, seq]);
  return Number(row?.seq ?? 0);
}

/** Every turn's start and end times (an end of null: still running), for the time a session was busy. */
export async function turnBoundaries(db: Queryable, sessionId: string): Promise<Array<{ type: string; createdAt: number }>> {
  const rows = await db.all<any>(`SELECT type, created_at FROM events WHERE session_id = ? AND type IN ('session_start', 'done') ORDER BY seq`, [sessionId]);
  return rows.map((r) => ({ type: r.type, createdAt: Number(r.created_at) }));
}

/** A session's model tokens, summed from the usage the gateway recorded. */
export async function sessionUsage(db: Queryable, sessionId: string): Promise<{ input: number; output: number; cacheCreation: number; cacheRead: number }> {
  const row = await db.get<any>(
    `SELECT SUM(input_tokens) AS i, SUM(output_tokens) AS o, SUM(cache_creation_tokens) AS cc, SUM(cache_read_tokens) AS cr FROM usage_records WHERE session_id = ?`,
    [sessionId],
  );
  return { input: Number(row?.i ?? 0), output: Number(row?.o ?? 0), cacheCreation: Number(row?.cc ?? 0), cacheRead: Number(row?.cr ?? 0) };
}

export interface SessionResourceRecord {
  id: string;
  sessionId: string;
  fileId: string;
  mountPath: string;
  createdAt: number;
}

export async function insertSessionResource(db: Queryable, r: SessionResourceRecord): Promise<void> {
  await db.run(`INSERT INTO session_resources (id, session_id, file_id, mount_path, created_at) VALUES (?, ?, ?, ?, ?)`, [r.id, r.sessionId, r.fileId, r.mountPath, r.createdAt]);
}

export async function listSessionResources(db: Queryable, sessionId: string): Promise<SessionResourceRecord[]> {
  const rows = await db.all<any>(`SELECT id, session_id, file_id, mount_path, created_at FROM session_resources WHERE session_id = ? ORDER BY created_at, id`, [sessionId]);
  return rows.map((r) => ({ id: r.id, sessionId: r.session_id, fileId: r.file_id, mountPath: r.mount_path, createdAt: Number(r.created_at) }));
}
