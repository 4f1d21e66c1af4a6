import type { Queryable } from "../types";

export type { SessionStatus } from "../../contract";
import { LIVE_SESSION_STATUSES, type SessionStatus } from "../../contract";
import { pastCursor, whereOf } from "./where";

/** Per-session choices made at creation (API: POST /api/sessions). */
export interface SessionSettings {
  systemPrompt?: string;
  extraEnv?: Record<string, string>;
  mcpServers?: Record<string, unknown>;
  permissionMode?: string;
  allowedTools?: string[];
  disallowedTools?: string[];
  /** Tools that wait for a person's allow or deny before they run: "all" or tool names; unset: the agent's. */
  confirmTools?: "all" | string[];
  /** Token budget of this session (model gateway); unset: the agent's, else the server's. */
  maxTokens?: number;
  /** A stored credential of its tenant: an anthropic key for its model calls, or a custom variable. */
  credentialId?: string;
}

export interface SessionRecord {
  id: string;
  agentId: string;
  agentName: string;
  agentVersion: number;
  status: SessionStatus;
  sandboxId: string | null;
  sdkSessionId: string | null;
  model: string | null;
  settings: SessionSettings;
  parentSessionId: string | null;
  /** The workspace version its files were last saved as (or rewound or forked to); null before the first save. */
  workspaceVersion: string | null;
  /** The tenant it belongs to; other tenants' keys never see it. */
  tenantId: string;
  /** The API key that made it (its per-key limits count it); null for sessions made before keys had ids. */
  apiKeyId: string | null;
  createdAt: number;
  lastActiveAt: number;
}

const COLUMNS = `id, agent_id, agent_name, agent_version, status, sandbox_id, sdk_session_id, model, settings, parent_session_id, workspace_version, tenant_id, api_key_id, created_at, last_active_at`;

function toSession(row: any): SessionRecord {
  return {
    id: row.id,
    agentId: row.agent_id,
    agentName: row.agent_name,
    agentVersion: Number(row.agent_version),
    status: row.status,
    sandboxId: row.sandbox_id ?? null,
    sdkSessionId: row.sdk_session_id ?? null,
    model: row.model ?? null,
    settings: JSON.parse(row.settings),
    parentSessionId: row.parent_session_id ?? null,
    workspaceVersion: row.workspace_version ?? null,
    tenantId: row.tenant_id ?? "default",
    apiKeyId: row.api_key_id ?? null,
    createdAt: Number(row.created_at),
    lastActiveAt: Number(row.last_active_at),
  };
}

export async function insertSession(
  db: Queryable,
  s: Omit<SessionRecord, "createdAt" | "lastActiveAt" | "workspaceVersion" | "tenantId" | "apiKeyId"> & { workspaceVersion?: string | null; tenantId?: string; apiKeyId?: string | null },
): Promise<SessionRecord> {
  const now = Date.now();
  const workspaceVersion = s.workspaceVersion ?? null;
  const tenantId = s.tenantId ?? "default";
  const apiKeyId = s.apiKeyId ?? null;
  await db.run(`INSERT INTO sessions (${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, [
    s.id,
    s.agentId,
    s.agentName,
    s.agentVersion,
    s.status,
    s.sandboxId,
    s.sdkSessionId,
    s.model,
    JSON.stringify(s.settings),
    s.parentSessionId,
    workspaceVersion,
    tenantId,
    apiKeyId,
    now,
    now,
  ]);
  return { ...s, workspaceVersion, tenantId, apiKeyId, createdAt: now, lastActiveAt: now };
}

export async function getSession(db: Queryable, id: string): Promise<SessionRecord | undefined> {
  const row = await db.get(`SELECT ${COLUMNS} FROM sessions WHERE id = ?`, [id]);
  return row ? toSession(row) : undefined;
}

/** Newest first; `cursor` is the opaque value of a previous page's nextCursor. */
export async function listSessions(
  db: Queryable,
  filter: { tenantId: string; agent?: string; status?: string; limit: number; cursor?: { createdAt: number; id: string } },
): Promise<SessionRecord[]> {
  const where = whereOf([
    ["tenant_id = ?", filter.tenantId],
    Boolean(filter.agent) && ["agent_name = ?", filter.agent],
    Boolean(filter.status) && ["status = ?", filter.status],
    pastCursor(filter.cursor, "older"),
  ]);
  const sql = `SELECT ${COLUMNS} FROM sessions ${where.sql} ORDER BY created_at DESC, id DESC LIMIT ?`;
  return (await db.all(sql, [...where.params, filter.limit])).map(toSession);
}

export async function updateSession(
  db: Queryable,
  id: string,
  patch: Partial<Pick<SessionRecord, "status" | "sandboxId" | "sdkSessionId" | "model" | "workspaceVersion">> & { touch?: boolean },
): Promise<void> {
  const sets: string[] = [];
  const params: unknown[] = [];
  const columns: Record<string, string> = {
    status: "status",
    sandboxId: "sandbox_id",
    sdkSessionId: "sdk_session_id",
    model: "model",
    workspaceVersion: "workspace_version",
  };
  for (const [key, column] of Object.entries(columns)) {
    if (key in patch) {
      sets.push(`${column} = ?`);
      params.push((patch as any)[key]);
    }
  }
  if (patch.touch) {
    sets.push(`last_active_at = ?`);
    params.push(Date.now());
  }
  if (sets.length === 0) return;
  await db.run(`UPDATE sessions SET ${sets.join(", ")} WHERE id = ?`, [...params, id]);
}

/** Replaces a session's settings (PATCH). */
export async function updateSessionSettings(db: Queryable, id: string, settings: SessionSettings): Promise<void> {
  await db.run(`UPDATE sessions SET settings = ? WHERE id = ?`, [JSON.stringify(settings), id]);
}

export async function countSessionsByStatus(db: Queryable): Promise<Record<string, number>> {
  const rows = await db.all<any>(`SELECT status, COUNT(*) AS n FROM sessions GROUP BY status`);
  return Object.fromEntries(rows.map((r) => [r.status, Number(r.n)]));
}

/** Sessions not ended (nor failed) without a live sandbox anywhere: asleep, for ash_session_states. */
export async function countSleepingSessions(db: Queryable): Promise<number> {
  const row = await db.get<{ n: number | string }>(`SELECT COUNT(*) AS n FROM sessions WHERE status NOT IN ('ended', 'error') AND sandbox_id IS NULL`);
  return Number(row?.n ?? 0);
}

/** Open sessions whose sandbox was put to sleep (no live sandbox), for ash_sandboxes{state="evicted"}. */
export async function countEvictedSessions(db: Queryable): Promise<number> {
  const row = await db.get<{ n: number | string }>(`SELECT COUNT(*) AS n FROM sessions WHERE status = 'active' AND sandbox_id IS NULL`);
  return Number(row?.n ?? 0);
}

/** Sessions a key made that hold a sandbox or are about to (not paused, stopped, ended or failed). */
export async function countLiveSessionsOfKey(db: Queryable, apiKeyId: string): Promise<number> {
  const live = LIVE_SESSION_STATUSES.map(() => "?").join(", ");
  const row = await db.get<any>(`SELECT COUNT(*) AS n FROM sessions WHERE api_key_id = ? AND status IN (${live})`, [apiKeyId, ...LIVE_SESSION_STATUSES]);
  return Number(row?.n ?? 0);
}

export async function countLiveSessionsOfTenant(db: Queryable, tenantId: string): Promise<number> {
  const live = LIVE_SESSION_STATUSES.map(() => "?").join(", ");
  const row = await db.get<any>(`SELECT COUNT(*) AS n FROM sessions WHERE tenant_id = ? AND status IN (${live})`, [tenantId, ...LIVE_SESSION_STATUSES]);
  return Number(row?.n ?? 0);
}
