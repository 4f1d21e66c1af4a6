import type { AshDatabase, Queryable } from "../types";

export interface AgentRecord {
  id: string;
  tenantId: string;
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
  /** A stored credential of the agent's tenant its sessions use unless they name their own. */
  credentialId?: string;
  /** Tools its sessions hold for a person's allow or deny ("all" or tool names) unless a session sets its own. */
  confirmTools?: "all" | string[];
  /** Deployed from a prompt alone: its CLAUDE.md is that prompt, rewritten when the prompt changes. */
  managed?: boolean;
  /** A name and notes for this version (`POST /api/agents/:name/versions`). */
  label?: string;
  releaseNotes?: string;
}

/** Per-agent choices that are not part of a version (they do not change what a session runs). */
export interface AgentConfig {
  /** Ready sandboxes kept for this agent's new sessions. */
  warmSpares?: number;
}

function configOf(raw: unknown): AgentConfig {
  if (typeof raw !== "string" || !raw) return {};
  try {
    const parsed = JSON.parse(raw);
    return parsed && typeof parsed === "object" ? (parsed as AgentConfig) : {};
  } catch {
    return {};
  }
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

const SELECT_AGENT = `SELECT a.id, a.tenant_id, a.name, a.version, a.created_at, a.updated_at, v.env, v.system_prompt, v.settings
  FROM agents a JOIN agent_versions v ON v.agent_id = a.id AND v.version = a.version`;

function toAgent(row: any): AgentRecord {
  return {
    id: row.id,
    tenantId: row.tenant_id ?? "default",
    name: row.name,
    version: Number(row.version),
    createdAt: Number(row.created_at),
    updatedAt: Number(row.updated_at),
    env: JSON.parse(row.env),
    systemPrompt: row.system_prompt ?? null,
    settings: settingsOf(row.settings),
  };
}

/** The tenant's agent of that name (agents of other tenants do not exist for it). */
export async function getAgent(db: Queryable, tenantId: string, name: string): Promise<AgentRecord | undefined> {
  const row = await db.get(`${SELECT_AGENT} WHERE a.tenant_id = ? AND a.name = ?`, [tenantId, name]);
  return row ? toAgent(row) : undefined;
}

export async function listAgents(db: Queryable, tenantId: string): Promise<AgentRecord[]> {
  return (await db.all(`${SELECT_AGENT} WHERE a.tenant_id = ? ORDER BY a.name`, [tenantId])).map(toAgent);
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
 * version of an existing one (one past the highest, whichever is active).
 * Files of every version are kept, so sessions made from an older version
 * can still be rebuilt. With `activate: false` (an existing agent only) the
 * version is stored but new sessions keep getting the active one.
 */
export async function deployAgent(
  db: AshDatabase,
  input: { id: string; tenantId: string; name: string; env: Record<string, string>; systemPrompt: string | null; files: AgentFile[]; settings?: AgentSettings; activate?: boolean },
): Promise<AgentRecord & { previousVersion: number | null }> {
  return db.transaction(async (tx) => {
    const now = Date.now();
    const existing = await tx.get<any>(`SELECT id, version FROM agents WHERE tenant_id = ? AND name = ?`, [input.tenantId, input.name]);
    let id = input.id;
    let version = 1;
    const activate = input.activate !== false || !existing;
    if (existing) {
      id = existing.id;
      const top = await tx.get<any>(`SELECT MAX(version) AS top FROM agent_versions WHERE agent_id = ?`, [id]);
      version = Math.max(Number(existing.version), Number(top?.top ?? 0)) + 1;
      if (activate) await tx.run(`UPDATE agents SET version = ?, updated_at = ? WHERE id = ?`, [version, now, id]);
    } else {
      await tx.run(`INSERT INTO agents (id, tenant_id, name, version, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)`, [id, input.tenantId, input.name, version, now, now]);
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
    const row = await tx.get(`SELECT a.id, a.tenant_id, a.name, v.version, a.created_at, a.updated_at, v.env, v.system_prompt, v.settings
      FROM agents a JOIN agent_versions v ON v.agent_id = a.id WHERE a.id = ? AND v.version = ?`, [id, version]);
    return { ...toAgent(row), previousVersion: existing ? Number(existing.version) : null };
  });
}

/**
 * Takes back a deploy whose files could not be put in place: its version's
 * rows go, and the agent points at the version before (or goes, if this was
 * its first). Only when no later deploy has happened since.
 */
export async function undoDeploy(db: AshDatabase, agent: { id: string; version: number; previousVersion: number | null }): Promise<void> {
  await db.transaction(async (tx) => {
    const row = await tx.get<any>(`SELECT version FROM agents WHERE id = ?`, [agent.id]);
    if (!row || Number(row.version) !== agent.version) return;
    const used = await tx.get<any>(`SELECT 1 AS used FROM sessions WHERE agent_id = ? AND agent_version = ? LIMIT 1`, [agent.id, agent.version]);
    if (used) return;
    await tx.run(`DELETE FROM agent_files WHERE agent_id = ? AND version = ?`, [agent.id, agent.version]);
    await tx.run(`DELETE FROM agent_versions WHERE agent_id = ? AND version = ?`, [agent.id, agent.version]);
    if (agent.previousVersion !== null) await tx.run(`UPDATE agents SET version = ? WHERE id = ?`, [agent.previousVersion, agent.id]);
    else await tx.run(`DELETE FROM agents WHERE id = ?`, [agent.id]);
  });
}

/** Removes the agent from the list; sessions made from it keep their own copy. */
export async function deleteAgent(db: AshDatabase, tenantId: string, name: string): Promise<boolean> {
  return db.transaction(async (tx) => {
    const row = await tx.get<any>(`SELECT id FROM agents WHERE tenant_id = ? AND name = ?`, [tenantId, name]);
    if (!row) return false;
    await tx.run(`DELETE FROM agents WHERE id = ?`, [row.id]);
    return true;
  });
}

/** One stored version of an agent, active or not. */
export interface AgentVersionRecord {
  agentId: string;
  agentName: string;
  version: number;
  active: boolean;
  env: Record<string, string>;
  systemPrompt: string | null;
  settings: AgentSettings;
  createdAt: number;
  fileCount: number;
}

function toVersion(row: any): AgentVersionRecord {
  return {
    agentId: row.agent_id,
    agentName: row.name,
    version: Number(row.version),
    active: Number(row.version) === Number(row.active_version),
    env: JSON.parse(row.env),
    systemPrompt: row.system_prompt ?? null,
    settings: settingsOf(row.settings),
    createdAt: Number(row.created_at),
    fileCount: Number(row.file_count ?? 0),
  };
}

const SELECT_VERSION = `SELECT v.agent_id, a.name, v.version, a.version AS active_version, v.env, v.system_prompt, v.settings, v.created_at,
    (SELECT COUNT(*) FROM agent_files f WHERE f.agent_id = v.agent_id AND f.version = v.version) AS file_count
  FROM agent_versions v JOIN agents a ON a.id = v.agent_id`;

/** Every version of an agent, oldest first. */
export async function listAgentVersions(db: Queryable, agentId: string): Promise<AgentVersionRecord[]> {
  return (await db.all(`${SELECT_VERSION} WHERE v.agent_id = ? ORDER BY v.version`, [agentId])).map(toVersion);
}

export async function getAgentVersionRecord(db: Queryable, agentId: string, version: number): Promise<AgentVersionRecord | undefined> {
  const row = await db.get(`${SELECT_VERSION} WHERE v.agent_id = ? AND v.version = ?`, [agentId, version]);
  return row ? toVersion(row) : undefined;
}

/** Makes `version` the one new sessions get; false when the agent has no such version. Returns the one active before. */
export async function activateAgentVersion(db: AshDatabase, agentId: string, version: number): Promise<{ previous: number } | undefined> {
  return db.transaction(async (tx) => {
    const row = await tx.get<any>(`SELECT a.version FROM agents a JOIN agent_versions v ON v.agent_id = a.id AND v.version = ? WHERE a.id = ?`, [version, agentId]);
    if (!row) return undefined;
    await tx.run(`UPDATE agents SET version = ?, updated_at = ? WHERE id = ?`, [version, Date.now(), agentId]);
    return { previous: Number(row.version) };
  });
}

export async function getAgentConfig(db: Queryable, tenantId: string, name: string): Promise<AgentConfig | undefined> {
  const row = await db.get<any>(`SELECT config FROM agents WHERE tenant_id = ? AND name = ?`, [tenantId, name]);
  return row ? configOf(row.config) : undefined;
}

/** Merges `patch` into the agent's config (an undefined value removes the key); false when there is no such agent. */
export async function updateAgentConfig(
  db: AshDatabase,
  tenantId: string,
  name: string,
  patch: Partial<Record<keyof AgentConfig, number | null>>,
): Promise<AgentConfig | undefined> {
  return db.transaction(async (tx) => {
    const row = await tx.get<any>(`SELECT id, config FROM agents WHERE tenant_id = ? AND name = ?`, [tenantId, name]);
    if (!row) return undefined;
    const config: Record<string, unknown> = { ...configOf(row.config) };
    for (const [key, value] of Object.entries(patch)) {
      if (value === null) delete config[key];
      else if (value !== undefined) config[key] = value;
    }
    await tx.run(`UPDATE agents SET config = ?, updated_at = ? WHERE id = ?`, [JSON.stringify(config), Date.now(), row.id]);
    return config as AgentConfig;
  });
}

/** How many warm spares the agent asks for (`PATCH /api/agents/:name/config`), or undefined when it does not say. */
export async function agentWarmSpares(db: Queryable, tenantId: string, name: string): Promise<number | undefined> {
  return (await getAgentConfig(db, tenantId, name))?.warmSpares;
}

/** One file of one version, or undefined. */
export async function getAgentFile(db: Queryable, agentId: string, version: number, path: string): Promise<AgentFile | undefined> {
  const row = await db.get<any>(`SELECT path, mode, content_base64 FROM agent_files WHERE agent_id = ? AND version = ? AND path = ?`, [agentId, version, path]);
  return row ? { path: row.path, mode: Number(row.mode), content: Buffer.from(row.content_base64, "base64") } : undefined;
}

/** Every agent whose config asks for warm spares, as `{tenantId, name, warmSpares}`. */
export async function listAgentWarmSpares(db: Queryable): Promise<Array<{ tenantId: string; name: string; warmSpares: number }>> {
  const rows = await db.all<any>(`SELECT tenant_id, name, config FROM agents WHERE config IS NOT NULL`);
  return rows
    .map((row) => ({ tenantId: row.tenant_id as string, name: row.name as string, warmSpares: configOf(row.config).warmSpares }))
    .filter((row): row is { tenantId: string; name: string; warmSpares: number } => typeof row.warmSpares === "number");
}

/** The tenant's agent with that id, with when it was archived (null: it is not). */
export async function getAgentById(db: Queryable, tenantId: string, id: string): Promise<(AgentRecord & { archivedAt: number | null }) | undefined> {
  const row = await db.get<any>(`${SELECT_AGENT.replace("a.updated_at,", "a.updated_at, a.archived_at,")} WHERE a.tenant_id = ? AND a.id = ?`, [tenantId, id]);
  return row ? { ...toAgent(row), archivedAt: row.archived_at === null || row.archived_at === undefined ? null : Number(row.archived_at) } : undefined;
}

/** When each of a tenant's archived agents was archived, by id. */
export async function agentArchiveTimes(db: Queryable, tenantId: string): Promise<Map<string, number>> {
  const rows = await db.all<any>(`SELECT id, archived_at FROM agents WHERE tenant_id = ? AND archived_at IS NOT NULL`, [tenantId]);
  return new Map(rows.map((r) => [r.id as string, Number(r.archived_at)]));
}

export async function archiveAgent(db: Queryable, tenantId: string, id: string, at: number): Promise<void> {
  await db.run(`UPDATE agents SET archived_at = ? WHERE id = ? AND tenant_id = ? AND archived_at IS NULL`, [at, id, tenantId]);
}
