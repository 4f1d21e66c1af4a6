import { join, relative } from "node:path";
import { agentsDirOf } from "../agents/agent-files";
import type { CheckpointRecord } from "../db/queries/checkpoints";
import type { AgentConfig, AgentRecord, AgentVersionRecord } from "../db/queries/agents";
import type { SessionRecord } from "../db/queries/sessions";
import type { SessionState } from "../contract";

// The JSON shapes of API.md. Times are ISO 8601 strings.

/** `extra.systemPrompt`: the prompt as the agent runs it (for one deployed from a prompt alone, its CLAUDE.md). */
export function presentAgent(agent: AgentRecord, extra: { systemPrompt?: string | null; config?: AgentConfig } = {}) {
  return {
    id: agent.id,
    name: agent.name,
    version: agent.version,
    createdAt: new Date(agent.createdAt).toISOString(),
    updatedAt: new Date(agent.updatedAt).toISOString(),
    // Values are secrets as often as not: only the names are shown.
    env: Object.fromEntries(Object.keys(agent.env).map((k) => [k, "***"])),
    systemPrompt: extra.systemPrompt !== undefined ? extra.systemPrompt : agent.systemPrompt,
    egress: agent.settings.egress ?? [],
    maxTokens: agent.settings.maxTokens ?? null,
    confirmTools: agent.settings.confirmTools ?? null,
    /** Deployed from a prompt alone: its CLAUDE.md is that prompt. */
    managed: Boolean(agent.settings.managed),
    /** Its folder inside the server's data folder (the original showed a host path; ours never does). */
    path: relative("/", join(agentsDirOf("/", agent.tenantId), agent.name)),
    ...(extra.config?.warmSpares !== undefined ? { warmSpares: extra.config.warmSpares } : {}),
  };
}

/** A version as `GET /api/agents/:name/versions` lists it (the original's field names, plus ours). */
export function presentAgentVersion(v: AgentVersionRecord, systemPrompt: string | null) {
  const createdAt = new Date(v.createdAt).toISOString();
  return {
    agentName: v.agentName,
    version: v.version,
    versionNumber: v.version,
    name: v.settings.label ?? `v${v.version}`,
    isActive: v.active,
    systemPrompt,
    releaseNotes: v.settings.releaseNotes ?? null,
    env: Object.fromEntries(Object.keys(v.env).map((k) => [k, "***"])),
    egress: v.settings.egress ?? [],
    maxTokens: v.settings.maxTokens ?? null,
    managed: Boolean(v.settings.managed),
    fileCount: v.fileCount,
    createdAt,
    updatedAt: createdAt,
  };
}

/** `state` says where its processes are (hot, idle, asleep); `status` keeps its meaning. */
export function presentSession(session: SessionRecord, state: SessionState) {
  return {
    id: session.id,
    agentName: session.agentName,
    agentVersion: session.agentVersion,
    sandboxId: session.sandboxId,
    status: session.status,
    state,
    createdAt: new Date(session.createdAt).toISOString(),
    lastActiveAt: new Date(session.lastActiveAt).toISOString(),
    model: session.model ?? undefined,
    parentSessionId: session.parentSessionId ?? undefined,
    maxTokens: session.settings.maxTokens ?? null,
  };
}

export function presentCheckpoint(c: CheckpointRecord) {
  return {
    checkpoint: c.number,
    turn: c.turn,
    parent: c.parent,
    createdAt: new Date(c.createdAt).toISOString(),
    prompt: c.prompt,
    fileCount: c.fileCount,
    bytes: c.bytes,
    filesChanged: c.filesChanged,
    bytesChanged: c.bytesChanged,
    rewound: c.rewoundAt !== null,
  };
}
