import type { CheckpointRecord } from "../db/queries/checkpoints";
import type { AgentRecord } from "../db/queries/agents";
import type { SessionRecord } from "../db/queries/sessions";
import type { SessionState } from "../contract";

// The JSON shapes of API.md. Times are ISO 8601 strings.

export function presentAgent(agent: AgentRecord) {
  return {
    id: agent.id,
    name: agent.name,
    version: agent.version,
    createdAt: new Date(agent.createdAt).toISOString(),
    updatedAt: new Date(agent.updatedAt).toISOString(),
    // Values are secrets as often as not: only the names are shown.
    env: Object.fromEntries(Object.keys(agent.env).map((k) => [k, "***"])),
    systemPrompt: agent.systemPrompt,
    egress: agent.settings.egress ?? [],
    maxTokens: agent.settings.maxTokens ?? null,
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
