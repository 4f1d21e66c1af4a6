import type { AshDatabase, Queryable } from "../types";

export interface AgentRecord {
  id: string;
  name: string;
  version: number;
  createdAt: number;
  updatedAt: number;
  env: Record<string, string>;
  systemPrompt: string | null;
  settings: AgentSettings;
}

/** Per-version choices beyond env and prompt: a token budget per session, egress hosts. */
export interface AgentSettings {
  maxTokens?: number;
  egress?: string[];
}

function settingsOf(raw: unknown): AgentSettings {
  if (typeof raw !== "string" || !raw) return {};
  try {
    return JSON.parse(raw) as AgentSettings;
  } catch {
    return {};
  }
}

export interface AgentFile {
  path: string;
  mode: number;
  content: Buffer;
}

const SELECT_AGENT = `SELECT a.id, a.name, a.version, a.created_at, a.updated_at, v.env, v.system_prompt, v.settings
  FROM agents a JOIN agent_versions v ON v.agent_id = a.id AND v.version = a.version`;

function toAgent(row: any): AgentRecord {
  return {
    id: row.id,
    name: row.name,
    version: Number(row.version),
    createdAt: Number(row.created_at),
    updatedAt: Number(row.updated_at),
    env: JSON.parse(row.env),
    systemPrompt: row.system_prompt ?? null,
    settings: settingsOf(row.settings),
  };
}

export async function getAgent(db: Queryable, name: string): Promise<AgentRecord | undefined> {
  const row = await db.get(`${SELECT_AGENT} WHERE a.name = ?`, [name]);
  return row ? toAgent(row) : undefined;
}

export async function listAgents(db: Queryable): Promise<AgentRecord[]> {
  return (await db.all(`${SELECT_AGENT} ORDER BY a.name`)).map(toAgent);
}

/** The env and prompt of one version, which a session keeps even after a redeploy. */
export async function getAgentVersion(db: Queryable, agentId: string, version: number) {
  const row = await db.get<any>(`SELECT env, system_prompt, settings FROM agent_versions WHERE agent_id = ? AND version = ?`, [agentId, version]);
  return row
    ? { env: JSON.parse(row.env) as Record<string, string>, systemPrompt: (row.system_prompt ?? null) as string | null, settings: settingsOf(row.settings) }
    : undefined;
}

export async function getAgentFiles(db: Queryable, agentId: string, version: number): Promise<AgentFile[]> {
  const rows = await db.all<any>(`SELECT path, mode, content_base64 FROM agent_files WHERE agent_id = ? AND version = ? ORDER BY path`, [agentId, version]);
  return rows.map((r) => ({ path: r.path, mode: Number(r.mode), content: Buffer.from(r.content_base64, "base64") }));
}

/**
 * Stores a deploy as one transaction: a new agent at version 1, or the next
 * version of an existing one. Files of every version are kept, so sessions
 * made from an older version can still be rebuilt.
 */
export async function deployAgent(
  db: AshDatabase,
  input: { id: string; name: string; env: Record<string, string>; systemPrompt: string | null; files: AgentFile[]; settings?: AgentSettings },
): Promise<AgentRecord> {
  return db.transaction(async (tx) => {
    const now = Date.now();
    const existing = await tx.get<any>(`SELECT id, version FROM agents WHERE name = ?`, [input.name]);
    let id = input.id;
    let version = 1;
    if (existing) {
      id = existing.id;
      version = Number(existing.version) + 1;
      await tx.run(`UPDATE agents SET version = ?, updated_at = ? WHERE id = ?`, [version, now, id]);
    } else {
      await tx.run(`INSERT INTO agents (id, name, version, created_at, updated_at) VALUES (?, ?, ?, ?, ?)`, [id, input.name, version, now, now]);
    }
    await tx.run(`INSERT INTO agent_versions (agent_id, version, env, system_prompt, settings, created_at) VALUES (?, ?, ?, ?, ?, ?)`, [
      id,
      version,
      JSON.stringify(input.env),
      input.systemPrompt,
      JSON.stringify(input.settings ?? {}),
      now,
    ]);
    for (const file of input.files) {
      await tx.run(`INSERT INTO agent_files (agent_id, version, path, mode, content_base64) VALUES (?, ?, ?, ?, ?)`, [
        id,
        version,
        file.path,
        file.mode,
        file.content.toString("base64"),
      ]);
    }
    const row = await tx.get(`${SELECT_AGENT} WHERE a.id = ?`, [id]);
    return toAgent(row);
  });
}

/**
 * Takes back a deploy whose files could not be put in place: its version's
 * rows go, and the agent points at the version before (or goes, if this was
 * its first). Only when no later deploy has happened since.
 */
export async function undoDeploy(db: AshDatabase, agent: { id: string; version: number }): Promise<void> {
  await db.transaction(async (tx) => {
    const row = await tx.get<any>(`SELECT version FROM agents WHERE id = ?`, [agent.id]);
    if (!row || Number(row.version) !== agent.version) return;
    const used = await tx.get<any>(`SELECT 1 AS used FROM sessions WHERE agent_id = ? AND agent_version = ? LIMIT 1`, [agent.id, agent.version]);
    if (used) return;
    await tx.run(`DELETE FROM agent_files WHERE agent_id = ? AND version = ?`, [agent.id, agent.version]);
    await tx.run(`DELETE FROM agent_versions WHERE agent_id = ? AND version = ?`, [agent.id, agent.version]);
    if (agent.version > 1) await tx.run(`UPDATE agents SET version = ? WHERE id = ?`, [agent.version - 1, agent.id]);
    else await tx.run(`DELETE FROM agents WHERE id = ?`, [agent.id]);
  });
}

/** Removes the agent from the list; sessions made from it keep their own copy. */
export async function deleteAgent(db: AshDatabase, name: string): Promise<boolean> {
  return db.transaction(async (tx) => {
    const row = await tx.get<any>(`SELECT id FROM agents WHERE name = ?`, [name]);
    if (!row) return false;
    await tx.run(`DELETE FROM agents WHERE id = ?`, [row.id]);
    return true;
  });
}
