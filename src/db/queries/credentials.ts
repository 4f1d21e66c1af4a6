import type { Queryable } from "../types";

/** A stored model key, sealed (src/vault); the plaintext never reaches this table. */
export interface CredentialRecord {
  id: string;
  tenantId: string;
  type: string;
  label: string;
  /** For `custom`: the environment variable the value is given as. */
  variable: string | null;
  sealed: string;
  masterKeyId: string;
  active: boolean;
  createdAt: number;
  lastUsedAt: number | null;
}

const COLUMNS = `id, tenant_id, type, label, variable, sealed, master_key_id, active, created_at, last_used_at`;

function toCredential(row: any): CredentialRecord {
  return {
    id: row.id,
    tenantId: row.tenant_id,
    type: row.type,
    label: row.label,
    variable: row.variable ?? null,
    sealed: row.sealed,
    masterKeyId: row.master_key_id,
    active: Boolean(Number(row.active)),
    createdAt: Number(row.created_at),
    lastUsedAt: row.last_used_at === null || row.last_used_at === undefined ? null : Number(row.last_used_at),
  };
}

export async function insertCredential(db: Queryable, c: CredentialRecord): Promise<void> {
  await db.run(`INSERT INTO credentials (${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, [
    c.id,
    c.tenantId,
    c.type,
    c.label,
    c.variable,
    c.sealed,
    c.masterKeyId,
    c.active ? 1 : 0,
    c.createdAt,
    c.lastUsedAt,
  ]);
}

/** A tenant's credential; undefined when it does not exist or belongs to another tenant. */
export async function getCredential(db: Queryable, tenantId: string, id: string): Promise<CredentialRecord | undefined> {
  const row = await db.get(`SELECT ${COLUMNS} FROM credentials WHERE id = ? AND tenant_id = ?`, [id, tenantId]);
  return row ? toCredential(row) : undefined;
}

export async function listCredentials(db: Queryable, tenantId: string): Promise<CredentialRecord[]> {
  return (await db.all(`SELECT ${COLUMNS} FROM credentials WHERE tenant_id = ? ORDER BY created_at, id`, [tenantId])).map(toCredential);
}

export async function deleteCredential(db: Queryable, tenantId: string, id: string): Promise<boolean> {
  return (await db.run(`DELETE FROM credentials WHERE id = ? AND tenant_id = ?`, [id, tenantId])).changes > 0;
}

export async function touchCredential(db: Queryable, id: string, at: number): Promise<void> {
  await db.run(`UPDATE credentials SET last_used_at = ? WHERE id = ?`, [at, id]);
}

/** Every credential sealed under another master key than `keyId` (rotation). */
export async function credentialsSealedUnder(db: Queryable, notKeyId: string): Promise<CredentialRecord[]> {
  return (await db.all(`SELECT ${COLUMNS} FROM credentials WHERE master_key_id <> ?`, [notKeyId])).map(toCredential);
}

/** Replaces a credential's sealed value only if it is still the one that was read (no lost update). */
export async function resealCredential(db: Queryable, id: string, from: string, to: { sealed: string; masterKeyId: string }): Promise<boolean> {
  return (await db.run(`UPDATE credentials SET sealed = ?, master_key_id = ? WHERE id = ? AND sealed = ?`, [to.sealed, to.masterKeyId, id, from])).changes > 0;
}
