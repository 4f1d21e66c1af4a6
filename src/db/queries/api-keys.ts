import type { Queryable } from "../types";

export async function countApiKeys(db: Queryable): Promise<number> {
  const row = await db.get<any>(`SELECT COUNT(*) AS n FROM api_keys`);
  return Number(row?.n ?? 0);
}

export async function findApiKeyByHash(db: Queryable, keyHash: string): Promise<{ id: string; label: string } | undefined> {
  return db.get(`SELECT id, label FROM api_keys WHERE key_hash = ?`, [keyHash]);
}

export async function listApiKeyHashes(db: Queryable): Promise<string[]> {
  return (await db.all<any>(`SELECT key_hash FROM api_keys`)).map((r) => r.key_hash);
}

export async function insertApiKey(db: Queryable, key: { id: string; keyHash: string; label: string }): Promise<void> {
  await db.run(`INSERT INTO api_keys (id, key_hash, label, created_at) VALUES (?, ?, ?, ?)`, [key.id, key.keyHash, key.label, Date.now()]);
}
