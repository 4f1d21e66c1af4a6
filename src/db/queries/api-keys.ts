import type { Queryable } from "../types";

export async function listApiKeyHashes(db: Queryable): Promise<string[]> {
  return (await db.all<any>(`SELECT key_hash FROM api_keys`)).map((r) => r.key_hash);
}

export async function insertApiKey(db: Queryable, key: { id: string; keyHash: string; label: string }): Promise<void> {
  await db.run(`INSERT INTO api_keys (id, key_hash, label, created_at) VALUES (?, ?, ?, ?)`, [key.id, key.keyHash, key.label, Date.now()]);
}
