import type { AshDatabase, Queryable } from "../types";
import { isUniqueViolation } from "../errors";

/** The server a live session runs on, until `expiresAt` unless its heartbeat renews it. */
export interface LeaseRecord {
  sessionId: string;
  serverId: string;
  /** Where that server answers other servers (its ASH_ADVERTISE_URL). */
  address: string;
  acquiredAt: number;
  expiresAt: number;
}

/** A server as its last heartbeat left it. */
export interface ServerRecord {
  id: string;
  address: string;
  startedAt: number;
  heartbeatAt: number;
  expiresAt: number;
  draining: boolean;
  liveSessions: number;
  capacity: number;
}

/**
 * What claiming a lease came to: `won` (with the server it was taken from
 * when that server's lease had run out), or the lease another server holds.
 */
export type ClaimResult = { won: true; takenFrom?: LeaseRecord } | { won: false; holder: LeaseRecord };

const LEASE_COLUMNS = "session_id, server_id, address, acquired_at, expires_at";

function leaseOfRow(row: Record<string, unknown>): LeaseRecord {
  return {
    sessionId: String(row.session_id),
    serverId: String(row.server_id),
    address: String(row.address),
    acquiredAt: Number(row.acquired_at),
    expiresAt: Number(row.expires_at),
  };
}

export async function getLease(db: Queryable, sessionId: string): Promise<LeaseRecord | undefined> {
  const row = await db.get<Record<string, unknown>>(`SELECT ${LEASE_COLUMNS} FROM session_leases WHERE session_id = ?`, [sessionId]);
  return row ? leaseOfRow(row) : undefined;
}

/**
 * Takes the session's lease for `serverId` when nobody holds it, this server
 * holds it already, or its holder let it run out. One SERIALIZABLE
 * transaction (retried on conflicts), so of servers racing for it exactly one
 * wins; a concurrent insert of the same row is a loss, read back afterwards.
 */
export async function claimLease(db: AshDatabase, lease: { sessionId: string; serverId: string; address: string; now: number; ttlMs: number }): Promise<ClaimResult> {
  const { sessionId, serverId, address, now, ttlMs } = lease;
  try {
    return await db.transaction(async (tx): Promise<ClaimResult> => {
      const held = await getLease(tx, sessionId);
      if (!held) {
        await tx.run(`INSERT INTO session_leases (${LEASE_COLUMNS}) VALUES (?, ?, ?, ?, ?)`, [sessionId, serverId, address, now, now + ttlMs]);
        return { won: true };
      }
      if (held.serverId !== serverId && held.expiresAt > now) return { won: false, holder: held };
      const acquiredAt = held.serverId === serverId ? held.acquiredAt : now;
      await tx.run(`UPDATE session_leases SET server_id = ?, address = ?, acquired_at = ?, expires_at = ? WHERE session_id = ?`, [serverId, address, acquiredAt, now + ttlMs, sessionId]);
      return held.serverId === serverId ? { won: true } : { won: true, takenFrom: held };
    });
  } catch (error) {
    if (!isUniqueViolation(error)) throw error;
    const holder = await getLease(db, sessionId);
    if (!holder) throw error;
    return holder.serverId === serverId ? { won: true } : { won: false, holder };
  }
}

/** Pushes out the expiry of the leases of `sessionIds` that `serverId` still holds; returns those sessions. */
export async function renewLeases(db: Queryable, serverId: string, sessionIds: string[], expiresAt: number): Promise<string[]> {
  const still: string[] = [];
  for (let i = 0; i < sessionIds.length; i += IDS_PER_STATEMENT) {
    const ids = sessionIds.slice(i, i + IDS_PER_STATEMENT);
    const marks = ids.map(() => "?").join(", ");
    await db.run(`UPDATE session_leases SET expires_at = ? WHERE server_id = ? AND session_id IN (${marks})`, [expiresAt, serverId, ...ids]);
    const rows = await db.all<{ session_id: string }>(`SELECT session_id FROM session_leases WHERE server_id = ? AND session_id IN (${marks})`, [serverId, ...ids]);
    still.push(...rows.map((r) => r.session_id));
  }
  return still;
}

/** Session ids per statement: far below every dialect's limit on parameters. */
const IDS_PER_STATEMENT = 500;

/** Gives a lease back to the server it was taken from, as it was (run out), after a takeover failed half way. */
export async function returnLease(db: Queryable, lease: LeaseRecord, takenBy: string): Promise<void> {
  await db.run(`UPDATE session_leases SET server_id = ?, address = ?, acquired_at = ?, expires_at = ? WHERE session_id = ? AND server_id = ?`, [
    lease.serverId,
    lease.address,
    lease.acquiredAt,
    lease.expiresAt,
    lease.sessionId,
    takenBy,
  ]);
}

/** Heartbeat rows of servers whose last heartbeat ran out before `before`. */
export async function forgetServers(db: Queryable, before: number): Promise<void> {
  await db.run(`DELETE FROM servers WHERE expires_at < ?`, [before]);
}

/** Lets go of a lease, if `serverId` still holds it. */
export async function releaseLease(db: Queryable, sessionId: string, serverId: string): Promise<void> {
  await db.run(`DELETE FROM session_leases WHERE session_id = ? AND server_id = ?`, [sessionId, serverId]);
}

/** Every lease of `serverId`: what a previous run of it left. */
export async function dropLeasesOf(db: Queryable, serverId: string): Promise<void> {
  await db.run(`DELETE FROM session_leases WHERE server_id = ?`, [serverId]);
}

/** Leases other servers let run out (their server died or lost the database): their sessions wait for a new owner. */
export async function expiredLeases(db: Queryable, serverId: string, now: number, limit: number): Promise<LeaseRecord[]> {
  const rows = await db.all<Record<string, unknown>>(`SELECT ${LEASE_COLUMNS} FROM session_leases WHERE expires_at < ? AND server_id <> ? ORDER BY expires_at LIMIT ?`, [now, serverId, limit]);
  return rows.map(leaseOfRow);
}

export async function recordHeartbeat(db: Queryable, server: ServerRecord): Promise<void> {
  const values = [server.address, server.heartbeatAt, server.expiresAt, server.draining ? 1 : 0, server.liveSessions, server.capacity];
  const updated = await db.run(`UPDATE servers SET address = ?, heartbeat_at = ?, expires_at = ?, draining = ?, live_sessions = ?, capacity = ? WHERE id = ?`, [...values, server.id]);
  if (updated.changes > 0) return;
  try {
    await db.run(`INSERT INTO servers (id, address, started_at, heartbeat_at, expires_at, draining, live_sessions, capacity) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, [server.id, server.address, server.startedAt, ...values.slice(1)]);
  } catch (error) {
    if (!isUniqueViolation(error)) throw error;
  }
}

/** Servers whose heartbeat has not run out, least loaded first. */
export async function liveServers(db: Queryable, now: number): Promise<ServerRecord[]> {
  const rows = await db.all<Record<string, unknown>>(
    `SELECT id, address, started_at, heartbeat_at, expires_at, draining, live_sessions, capacity FROM servers WHERE expires_at > ? ORDER BY live_sessions, id`,
    [now],
  );
  return rows.map((row) => ({
    id: String(row.id),
    address: String(row.address),
    startedAt: Number(row.started_at),
    heartbeatAt: Number(row.heartbeat_at),
    expiresAt: Number(row.expires_at),
    draining: Number(row.draining) === 1,
    liveSessions: Number(row.live_sessions),
    capacity: Number(row.capacity),
  }));
}

/** A server that stopped: it is gone from placement at once (its leases were released first). */
export async function removeServer(db: Queryable, serverId: string): Promise<void> {
  await db.run(`DELETE FROM servers WHERE id = ?`, [serverId]);
}

/**
 * Sandboxes of a session another server left live (it died): marked ended so
 * counts and the session's history are right. Their processes died with it.
 */
export async function endSandboxesOf(db: Queryable, sessionId: string, serverId: string, reason: string): Promise<void> {
  await db.run(`UPDATE sandboxes SET status = 'evicted', ended_at = ?, end_reason = ? WHERE session_id = ? AND server_id = ? AND status = 'live'`, [Date.now(), reason, sessionId, serverId]);
}
