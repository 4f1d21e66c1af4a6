import type { Queryable } from "../types";

export type SandboxStatus = "live" | "evicted" | "destroyed";

export async function insertSandbox(db: Queryable, s: { id: string; sessionId: string; serverId: string }): Promise<void> {
  const now = Date.now();
  await db.run(`INSERT INTO sandboxes (id, session_id, status, server_id, created_at, last_used_at) VALUES (?, ?, 'live', ?, ?, ?)`, [
    s.id,
    s.sessionId,
    s.serverId,
    now,
    now,
  ]);
}

export async function endSandbox(db: Queryable, id: string, status: Exclude<SandboxStatus, "live">, reason: string): Promise<void> {
  await db.run(`UPDATE sandboxes SET status = ?, ended_at = ?, end_reason = ? WHERE id = ?`, [status, Date.now(), reason, id]);
}

/** Sandboxes this server (same id, kept in the data dir) left live before a crash or restart: their processes are gone. */
export async function endOrphanedSandboxes(db: Queryable, serverId: string): Promise<string[]> {
  const rows = await db.all<{ id: string }>(`SELECT id FROM sandboxes WHERE status = 'live' AND server_id = ?`, [serverId]);
  await db.run(`UPDATE sandboxes SET status = 'evicted', ended_at = ?, end_reason = 'server_restart' WHERE status = 'live' AND server_id = ?`, [
    Date.now(),
    serverId,
  ]);
  return rows.map((r) => r.id);
}
