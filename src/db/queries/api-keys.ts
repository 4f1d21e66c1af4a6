import type { Queryable } from "../types";

/** What a key may do, weakest first; each includes the ones before it. */
export const SCOPES = ["read", "sessions", "admin"] as const;
export type Scope = (typeof SCOPES)[number];

export interface KeyLimits {
  /** Requests a minute (each server counts its own). */
  requestsPerMinute?: number;
  /** Sessions not ended and not paused, at once. */
  liveSessions?: number;
  /** Turns running at once. */
  runningTurns?: number;
  /** Model tokens since midnight UTC (from the gateway's usage records). */
  tokensPerDay?: number;
}

export interface ApiKeyRecord {
  id: string;
  tenantId: string;
  label: string;
  scope: Scope;
  /** The server's own keys (ASH_API_KEY, the first-boot key, keys made as such): admin of every tenant. */
  operator: boolean;
  /** The first characters of the key, to tell keys apart in a listing. */
  prefix: string | null;
  createdAt: number;
  expiresAt: number | null;
  revokedAt: number | null;
  lastUsedAt: number | null;
  limits: KeyLimits;
}

const COLUMNS = `id, tenant_id, label, scopes, prefix, created_at, expires_at, revoked_at, last_used_at, limits`;
const KEY_COLUMNS = COLUMNS.split(", ").map((c) => `k.${c}`).join(", ");
const num = (v: unknown) => (v === null || v === undefined ? null : Number(v));

function toKey(row: any): ApiKeyRecord {
  const operator = row.scopes === "operator";
  const scope = operator ? "admin" : (SCOPES as readonly string[]).includes(row.scopes) ? (row.scopes as Scope) : "read";
  return {
    id: row.id,
    tenantId: row.tenant_id,
    label: row.label,
    scope,
    operator,
    prefix: row.prefix ?? null,
    createdAt: Number(row.created_at),
    expiresAt: num(row.expires_at),
    revokedAt: num(row.revoked_at),
    lastUsedAt: num(row.last_used_at),
    limits: row.limits ? (JSON.parse(row.limits) as KeyLimits) : {},
  };
}

export async function insertApiKey(
  db: Queryable,
  key: { id: string; keyHash: string; label: string; tenantId?: string; scope?: Scope; operator?: boolean; prefix?: string | null; expiresAt?: number | null; limits?: KeyLimits },
): Promise<void> {
  await db.run(`INSERT INTO api_keys (id, key_hash, label, created_at, tenant_id, scopes, prefix, expires_at, limits) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, [
    key.id,
    key.keyHash,
    key.label,
    Date.now(),
    key.tenantId ?? "default",
    key.operator ? "operator" : (key.scope ?? "read"),
    key.prefix ?? null,
    key.expiresAt ?? null,
    key.limits && Object.keys(key.limits).length ? JSON.stringify(key.limits) : null,
  ]);
}

/** The key with this hash and its tenant's limits, revoked and expired ones included (the caller decides). */
export async function apiKeyByHash(db: Queryable, keyHash: string): Promise<(ApiKeyRecord & { tenantLimits: KeyLimits }) | undefined> {
  const row = await db.get<any>(`SELECT ${KEY_COLUMNS}, t.limits AS tenant_limits FROM api_keys k LEFT JOIN tenants t ON t.id = k.tenant_id WHERE k.key_hash = ?`, [keyHash]);
  return row ? { ...toKey(row), tenantLimits: row.tenant_limits ? (JSON.parse(row.tenant_limits) as KeyLimits) : {} } : undefined;
}

export async function countApiKeys(db: Queryable): Promise<number> {
  return Number((await db.get<any>(`SELECT COUNT(*) AS n FROM api_keys`))?.n ?? 0);
}

/** A tenant's keys (all tenants' with null), newest first, revoked ones included. */
export async function listApiKeys(db: Queryable, tenantId: string | null): Promise<ApiKeyRecord[]> {
  const rows = tenantId === null
    ? await db.all(`SELECT ${COLUMNS} FROM api_keys ORDER BY created_at DESC, id`)
    : await db.all(`SELECT ${COLUMNS} FROM api_keys WHERE tenant_id = ? ORDER BY created_at DESC, id`, [tenantId]);
  return rows.map(toKey);
}

export async function getApiKey(db: Queryable, id: string): Promise<ApiKeyRecord | undefined> {
  const row = await db.get(`SELECT ${COLUMNS} FROM api_keys WHERE id = ?`, [id]);
  return row ? toKey(row) : undefined;
}

export async function revokeApiKey(db: Queryable, id: string, at: number): Promise<boolean> {
  return (await db.run(`UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL`, [at, id])).changes > 0;
}

export async function setApiKeyLimits(db: Queryable, id: string, limits: KeyLimits): Promise<void> {
  await db.run(`UPDATE api_keys SET limits = ? WHERE id = ?`, [Object.keys(limits).length ? JSON.stringify(limits) : null, id]);
}

export async function touchApiKey(db: Queryable, id: string, at: number): Promise<void> {
  await db.run(`UPDATE api_keys SET last_used_at = ? WHERE id = ?`, [at, id]);
}

export interface TenantRecord {
  id: string;
  label: string;
  limits: KeyLimits;
  createdAt: number;
}

export async function getTenant(db: Queryable, id: string): Promise<TenantRecord | undefined> {
  const row = await db.get<any>(`SELECT id, label, limits, created_at FROM tenants WHERE id = ?`, [id]);
  return row ? { id: row.id, label: row.label, limits: row.limits ? JSON.parse(row.limits) : {}, createdAt: Number(row.created_at) } : undefined;
}

export async function listTenants(db: Queryable): Promise<TenantRecord[]> {
  const rows = await db.all<any>(`SELECT id, label, limits, created_at FROM tenants ORDER BY created_at, id`);
  return rows.map((row) => ({ id: row.id, label: row.label, limits: row.limits ? JSON.parse(row.limits) : {}, createdAt: Number(row.created_at) }));
}

/** Creates the tenant when it does not exist yet; answers whether it did. */
export async function ensureTenant(db: Queryable, id: string, label: string): Promise<boolean> {
  return (await db.run(`INSERT INTO tenants (id, label, limits, created_at) VALUES (?, ?, NULL, ?) ON CONFLICT DO NOTHING`, [id, label, Date.now()])).changes > 0;
}

export async function setTenantLimits(db: Queryable, id: string, limits: KeyLimits): Promise<void> {
  await db.run(`UPDATE tenants SET limits = ? WHERE id = ?`, [Object.keys(limits).length ? JSON.stringify(limits) : null, id]);
}
