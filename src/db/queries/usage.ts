import type { Queryable } from "../types";
import { pastCursor, whereOf, type Condition } from "./where";

/** One model response's tokens, as the model gateway read them. */
export interface UsageRecord {
  id: string;
  sessionId: string | null;
  agentName: string;
  turnId: string | null;
  keyId: string | null;
  model: string;
  inputTokens: number;
  outputTokens: number;
  cacheCreationTokens: number;
  cacheReadTokens: number;
  createdAt: number;
}

const COLUMNS = `id, session_id, agent_name, turn_id, key_id, model, input_tokens, output_tokens, cache_creation_tokens, cache_read_tokens, created_at`;

function toRecord(row: any): UsageRecord {
  return {
    id: row.id,
    sessionId: row.session_id ?? null,
    agentName: row.agent_name,
    turnId: row.turn_id ?? null,
    keyId: row.key_id ?? null,
    model: row.model,
    inputTokens: Number(row.input_tokens),
    outputTokens: Number(row.output_tokens),
    cacheCreationTokens: Number(row.cache_creation_tokens),
    cacheReadTokens: Number(row.cache_read_tokens),
    createdAt: Number(row.created_at),
  };
}

/** Stores one record; `tenantId` (default: the default tenant) and `apiKeyId` say whose it is. */
export async function insertUsage(db: Queryable, r: UsageRecord & { tenantId?: string; apiKeyId?: string | null }): Promise<void> {
  await db.run(`INSERT INTO usage_records (tenant_id, api_key_id, ${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, [
    r.tenantId ?? "default",
    r.apiKeyId ?? null,
    r.id,
    r.sessionId,
    r.agentName,
    r.turnId,
    r.keyId,
    r.model,
    r.inputTokens,
    r.outputTokens,
    r.cacheCreationTokens,
    r.cacheReadTokens,
    r.createdAt,
  ]);
}

export interface UsageFilter {
  /** Only this tenant's records (what every API caller sees). */
  tenantId?: string;
  sessionId?: string;
  agentName?: string;
  /** Epoch ms, inclusive. */
  from?: number;
  /** Epoch ms, exclusive. */
  to?: number;
}

function conditionsOf(filter: UsageFilter): Condition[] {
  return [
    filter.tenantId !== undefined && ["tenant_id = ?", filter.tenantId],
    filter.sessionId !== undefined && filter.sessionId !== "" && ["session_id = ?", filter.sessionId],
    filter.agentName !== undefined && filter.agentName !== "" && ["agent_name = ?", filter.agentName],
    filter.from !== undefined && ["created_at >= ?", filter.from],
    filter.to !== undefined && ["created_at < ?", filter.to],
  ];
}

/** Oldest first; `cursor` is the last record of the previous page. */
export async function listUsage(db: Queryable, filter: UsageFilter & { limit: number; cursor?: { createdAt: number; id: string } }): Promise<UsageRecord[]> {
  const { sql, params } = whereOf([...conditionsOf(filter), pastCursor(filter.cursor, "newer")]);
  const rows = await db.all(`SELECT ${COLUMNS} FROM usage_records ${sql} ORDER BY created_at, id LIMIT ?`, [...params, filter.limit]);
  return rows.map(toRecord);
}

export interface UsageSums {
  agentName: string;
  model: string;
  requests: number;
  inputTokens: number;
  outputTokens: number;
  cacheCreationTokens: number;
  cacheReadTokens: number;
}

/** Sums grouped by agent and model. */
export async function usageStats(db: Queryable, filter: UsageFilter): Promise<UsageSums[]> {
  const { sql, params } = whereOf(conditionsOf(filter));
  const rows = await db.all<any>(
    `SELECT agent_name, model, COUNT(*) AS requests, SUM(input_tokens) AS input_tokens, SUM(output_tokens) AS output_tokens,
        SUM(cache_creation_tokens) AS cache_creation_tokens, SUM(cache_read_tokens) AS cache_read_tokens
      FROM usage_records ${sql} GROUP BY agent_name, model ORDER BY agent_name, model`,
    params,
  );
  return rows.map((r) => ({
    agentName: r.agent_name,
    model: r.model,
    requests: Number(r.requests),
    inputTokens: Number(r.input_tokens ?? 0),
    outputTokens: Number(r.output_tokens ?? 0),
    cacheCreationTokens: Number(r.cache_creation_tokens ?? 0),
    cacheReadTokens: Number(r.cache_read_tokens ?? 0),
  }));
}

/** All tokens a session has used (what its budget is measured against). */
export async function sessionTokenTotal(db: Queryable, sessionId: string): Promise<number> {
  const row = await db.get<any>(
    `SELECT SUM(input_tokens + output_tokens + cache_creation_tokens + cache_read_tokens) AS total FROM usage_records WHERE session_id = ?`,
    [sessionId],
  );
  return Number(row?.total ?? 0);
}

/** Tokens a key's sessions used since `since` (epoch ms): what its tokensPerDay limit counts. */
export async function keyTokensSince(db: Queryable, apiKeyId: string, since: number): Promise<number> {
  const row = await db.get<any>(
    `SELECT SUM(input_tokens + output_tokens + cache_creation_tokens + cache_read_tokens) AS total FROM usage_records WHERE api_key_id = ? AND created_at >= ?`,
    [apiKeyId, since],
  );
  return Number(row?.total ?? 0);
}

export async function tenantTokensSince(db: Queryable, tenantId: string, since: number): Promise<number> {
  const row = await db.get<any>(
    `SELECT SUM(input_tokens + output_tokens + cache_creation_tokens + cache_read_tokens) AS total FROM usage_records WHERE tenant_id = ? AND created_at >= ?`,
    [tenantId, since],
  );
  return Number(row?.total ?? 0);
}
