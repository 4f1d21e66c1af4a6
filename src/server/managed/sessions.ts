import { getRouterParam, type H3, type H3Event } from "h3";
import { z } from "zod";
import { randomUUID } from "node:crypto";
import type { AppContext } from "../context";
import { principalOf } from "../auth";
import { readJsonBody } from "../body";
import { validate } from "../validate";
import { badRequest, conflict, notFound } from "../errors";
import { json } from "../routes/sessions";
import { ATTACHMENTS_FOLDER } from "../routes/attachments";
import { getSession, type SessionRecord } from "../../db/queries/sessions";
import { getAgentFiles, getAgentVersionRecord } from "../../db/queries/agents";
import { getAttachment } from "../../db/queries/attachments";
import {
  getSessionExtras,
  insertSessionResource,
  lastTurnMarker,
  listSessionIds,
  listSessionResources,
  sessionUsage,
  setSessionExtras,
  turnBoundaries,
  type SessionExtras,
} from "../../db/queries/managed";
import { writeWorkspaceEntries, WorkspaceWriteError, type UploadEntry } from "../../sessions/workspace-files";
import { refuseFields, booleanOf, decodePage, encodePage, iso, isoOrNull, limitOf, listOf, metadataPatchSchema, metadataSchema, patchMetadata, queryOf, single } from "./common";
import { agentForSession, presentManagedAgent } from "./agents";
import { managedFieldsOf } from "./agent-shape";
import { environmentEnv, findEnvironment } from "./environments";
import { parseWholeNumber } from "../validate";
import { SESSION_STATUSES, type SessionStatus } from "../../contract";

/** Ash statuses the API calls terminated: ended, or never started. */
const ENDED_STATUSES: readonly SessionStatus[] = ["ended", "error"];

const MANAGED_STATUSES = ["rescheduling", "running", "idle", "terminated"] as const;
type ManagedStatus = (typeof MANAGED_STATUSES)[number];


const fileResourceSchema = z.object({ type: z.literal("file"), file_id: z.string().min(1).max(200), mount_path: z.string().min(1).max(1024).nullable().optional() }).strict();

const createSchema = z
  .object({
    agent: z.union([
      z.string().min(1).max(200),
      z.object({ type: z.literal("agent"), id: z.string().min(1).max(200), version: z.number().int().min(1).optional() }).strict(),
    ]),
    environment_id: z.string().min(1).max(200),
    title: z.string().max(500).nullable().optional(),
    metadata: metadataSchema.optional(),
    resources: z.array(fileResourceSchema).max(100).optional(),
    vault_ids: z.array(z.string()).max(0, "vaults are not available on this server: store model keys with POST /api/credentials").optional(),
  })
  .strict();

const updateSchema = z
  .object({
    title: z.string().max(500).nullable().optional(),
    metadata: metadataPatchSchema.nullable().optional(),
    vault_ids: z.array(z.string()).max(0, "vaults are not available on this server").optional(),
  })
  .strict();

/** A workspace path from a resource's mount_path: relative to the workspace (a leading / is dropped), no `..`. */
export function mountPathOf(raw: string | null | undefined, filename: string): string {
  if (!raw) return `${ATTACHMENTS_FOLDER}/${filename}`;
  const parts = raw.replace(/^\/+/, "").split("/");
  const bad = parts.some((p) => p === "" || p === "." || p === ".." || /[\u0000-\u001f\u007f]/.test(p) || Buffer.byteLength(p) > 255);
  if (bad || parts.length > 32) throw badRequest(`resources: mount_path "${raw.slice(0, 100)}" must be a file path inside the session's workspace (no "..", no empty parts).`);
  return parts.join("/");
}

/**
 * Why files mounted at these paths cannot all be written into a workspace
 * holding the agent's files: one would need another's file (or an agent
 * file) to be a folder, or would put a file where a folder must be.
 */
export function mountClash(mounts: string[], agentFiles: string[]): string | undefined {
  const fileAt = new Map<string, string>();
  for (const path of agentFiles) fileAt.set(path, `the agent's file "${path}"`);
  for (const path of mounts) fileAt.set(path, `the mount_path "${path}"`);
  const folders = new Map<string, string>();
  for (const path of [...agentFiles, ...mounts]) {
    const parts = path.split("/");
    for (let i = 1; i < parts.length; i++) folders.set(parts.slice(0, i).join("/"), path);
  }
  for (const path of mounts) {
    const parts = path.split("/");
    for (let i = 1; i < parts.length; i++) {
      const folder = parts.slice(0, i).join("/");
      const there = fileAt.get(folder);
      if (there) return `mount_path "${path}" needs "${folder}" to be a folder, but it is ${there}.`;
    }
    const inside = folders.get(path);
    if (inside) return `mount_path "${path}" would put a file where "${inside}" needs a folder.`;
  }
  return undefined;
}

/** The folders a file at `path` needs, outermost first. */
function parentDirs(path: string): UploadEntry[] {
  const parts = path.split("/").slice(0, -1);
  return parts.map((_, i) => ({ type: "dir" as const, path: parts.slice(0, i + 1).join("/"), mode: 0o755 }));
}

export interface ManagedSession {
  record: SessionRecord;
  extras: SessionExtras;
}

/** The caller's session by id: another tenant's, or one deleted through /v1, does not exist. */
export async function requireManagedSession(ctx: AppContext, event: H3Event): Promise<ManagedSession> {
  const id = getRouterParam(event, "id") ?? "";
  const record = await getSession(ctx.db, id);
  const extras = record && record.tenantId === principalOf(event).tenantId ? await getSessionExtras(ctx.db, id) : undefined;
  if (!record || !extras || extras.deletedAt !== null) throw notFound(`No session with id "${id}".`);
  return { record, extras };
}

/** idle, running (a turn's `session_start` has no `done` yet) or terminated (ended, or never started). */
export async function managedStatusOf(ctx: AppContext, record: SessionRecord): Promise<ManagedStatus> {
  if (ENDED_STATUSES.includes(record.status)) return "terminated";
  // A tool use waiting for a user.tool_confirmation: the session waits on the user (requires_action).
  if (ctx.sessions.waitingTools(record.id).length > 0) return "idle";
  return (await lastTurnMarker(ctx.db, record.id))?.type === "session_start" ? "running" : "idle";
}

export function registerManagedSessions(app: H3, ctx: AppContext): void {
  async function present({ record, extras }: ManagedSession) {
    const status = await managedStatusOf(ctx, record);
    const agent = await getAgentVersionRecord(ctx.db, record.agentId, record.agentVersion);
    const shown = agent
      ? await presentManagedAgent(ctx, { id: record.agentId, tenantId: record.tenantId, name: record.agentName, version: record.agentVersion, systemPrompt: agent.systemPrompt, settings: agent.settings, createdAt: agent.createdAt, updatedAt: agent.createdAt, archivedAt: null })
      : undefined;
    const { archived_at: _a, created_at: _c, updated_at: _u, metadata: _m, ...sessionAgent } = shown ?? ({ type: "agent", id: record.agentId, name: record.agentName, version: record.agentVersion } as any);
    const usage = await sessionUsage(ctx.db, record.id);
    const now = Date.now();
    let active = 0;
    let startedAt: number | undefined;
    for (const b of await turnBoundaries(ctx.db, record.id)) {
      if (b.type === "session_start") startedAt = b.createdAt;
      else if (startedAt !== undefined) {
        active += b.createdAt - startedAt;
        startedAt = undefined;
      }
    }
    if (startedAt !== undefined && status === "running") active += now - startedAt;
    const resources = await listSessionResources(ctx.db, record.id);
    return {
      type: "session" as const,
      id: record.id,
      title: extras.title,
      metadata: extras.metadata,
      status,
      environment_id: extras.environmentId ?? "env_default",
      agent: sessionAgent,
      resources: resources.map((r) => ({ type: "file", id: r.id, file_id: r.fileId, mount_path: r.mountPath, created_at: iso(r.createdAt), updated_at: iso(r.createdAt) })),
      usage: {
        input_tokens: usage.input,
        output_tokens: usage.output,
        cache_read_input_tokens: usage.cacheRead,
        cache_creation: { ephemeral_5m_input_tokens: usage.cacheCreation },
        active_seconds: active / 1000,
      },
      stats: { active_seconds: active / 1000, duration_seconds: ((status === "terminated" ? record.lastActiveAt : now) - record.createdAt) / 1000 },
      budget: null,
      outcome_evaluations: [],
      vault_ids: [],
      archived_at: isoOrNull(extras.archivedAt),
      created_at: iso(record.createdAt),
      updated_at: iso(record.lastActiveAt),
    };
  }

  app.post("/v1/sessions", async (event) => {
    const raw = await readJsonBody(event, ctx.config.maxBodyBytes);
    if ((raw as { agent?: { type?: unknown } } | null)?.agent?.type === "agent_with_overrides") {
      throw badRequest("agent: per-session overrides (agent_with_overrides) are not available on this server; update the agent (a new version) and start the session from it.");
    }
    refuseFields(raw, {
      budget: "list-cost budgets are not available on this server; a session's token budget is PATCH /api/sessions/{id}.",
      initial_events: "initial events are not available on this server; send them with POST /v1/sessions/{id}/events.",
    });
    const body = validate(createSchema, raw);
    const caller = principalOf(event);
    // Everything named is checked before anything is made.
    const ref = typeof body.agent === "string" ? { id: body.agent, version: undefined } : body.agent;
    const agent = await agentForSession(ctx, caller.tenantId, ref.id);
    const version = ref.version ?? agent.version;
    const versionRecord = await getAgentVersionRecord(ctx.db, agent.id, version);
    if (!versionRecord) throw notFound(`Agent "${agent.id}" has no version ${version}.`);
    const environment = await findEnvironment(ctx, caller.tenantId, body.environment_id);
    if (environment.archivedAt !== null) throw badRequest(`Environment "${environment.id}" is archived; archived environments start no sessions.`);
    const files = [];
    for (const [i, r] of (body.resources ?? []).entries()) {
      const file = await getAttachment(ctx.db, caller.tenantId, r.file_id);
      if (!file) throw notFound(`resources.${i}: no file with id "${r.file_id}".`);
      files.push({ file, mountPath: mountPathOf(r.mount_path, file.filename) });
    }
    if (new Set(files.map((f) => f.mountPath)).size !== files.length) throw badRequest("resources: two files have the same mount_path.");
    const clash = mountClash(files.map((f) => f.mountPath), (await getAgentFiles(ctx.db, agent.id, version)).map((f) => f.path));
    if (clash) throw badRequest(`resources: ${clash}`);

    const recorded = await ctx.limits.admitSession(caller);
    let session;
    try {
      const model = managedFieldsOf(versionRecord.settings)?.model ?? undefined;
      const extraEnv = environmentEnv(environment);
      session = await ctx.sessions.createSession({
        agent: agent.name,
        agentVersion: version,
        model,
        settings: Object.keys(extraEnv).length ? { extraEnv } : {},
        tenantId: caller.tenantId,
        apiKeyId: caller.keyId,
        onRecorded: recorded,
      });
    } finally {
      recorded();
    }
    const extras: SessionExtras = { title: body.title ?? null, metadata: body.metadata ?? {}, environmentId: environment.id, archivedAt: null, deletedAt: null };
    await setSessionExtras(ctx.db, session.id, extras);
    if (files.length > 0) {
      const sandbox = ctx.sessions.liveSandbox(session.id) ?? (await ctx.sessions.sandboxOf(session.id));
      const entries: UploadEntry[] = [];
      for (const { file, mountPath } of files) entries.push(...parentDirs(mountPath), { type: "file", path: mountPath, mode: 0o644, content: file.content });
      const seen = new Set<string>();
      try {
        await writeWorkspaceEntries(sandbox.io, entries.filter((e) => (e.type === "dir" ? !seen.has(e.path) && seen.add(e.path) : true)));
      } catch (error) {
        // Checked above, so this is the workspace's own doing: the session without its files is no use to the caller.
        await ctx.sessions.end(session.id).catch(() => undefined);
        await setSessionExtras(ctx.db, session.id, { ...extras, deletedAt: Date.now() }).catch(() => undefined);
        if (error instanceof WorkspaceWriteError) throw conflict(`resources: ${error.message}.`);
        throw error;
      }
      const now = Date.now();
      for (const { file, mountPath } of files) await insertSessionResource(ctx.db, { id: `sesrsc_${randomUUID().replace(/-/g, "")}`, sessionId: session.id, fileId: file.id, mountPath, createdAt: now });
    }
    return json(200, await present({ record: (await getSession(ctx.db, session.id))!, extras }));
  });

  app.get("/v1/sessions/:id", async (event) => present(await requireManagedSession(ctx, event)));

  app.post("/v1/sessions/:id", async (event) => {
    const raw = await readJsonBody(event, ctx.config.maxBodyBytes);
    refuseFields(raw, {
      agent: "changing a session's agent is not available on this server; update the agent and start a new session.",
      budget: "list-cost budgets are not available on this server; a session's token budget is PATCH /api/sessions/{id}.",
    });
    const body = validate(updateSchema, raw);
    const session = await requireManagedSession(ctx, event);
    const extras: SessionExtras = {
      ...session.extras,
      title: body.title === undefined ? session.extras.title : body.title,
      metadata: patchMetadata(session.extras.metadata, body.metadata),
    };
    await setSessionExtras(ctx.db, session.record.id, extras);
    return present({ record: session.record, extras });
  });

  // Newest first by default; `page` tokens go either way (next_page older, prev_page newer).
  app.get("/v1/sessions", async (event) => {
    const q = queryOf(event);
    const limit = limitOf(q);
    const order = single(q, "order") ?? "desc";
    if (order !== "asc" && order !== "desc") throw badRequest('The query parameter "order" must be asc or desc.');
    const statuses = listOf(q, "statuses");
    for (const s of statuses) if (!(MANAGED_STATUSES as readonly string[]).includes(s)) throw badRequest(`The query parameter "statuses" may hold ${MANAGED_STATUSES.join(", ")}; not "${s.slice(0, 50)}".`);
    const agentVersion = single(q, "agent_version");
    const page = decodePage(q);
    const wantsLive = statuses.length === 0 || statuses.some((s) => s !== "terminated");
    const wantsEnded = statuses.length === 0 || statuses.includes("terminated");
    const rows = await listSessionIds(ctx.db, {
      tenantId: principalOf(event).tenantId,
      agentId: single(q, "agent_id"),
      agentVersion: agentVersion === undefined ? undefined : parseWholeNumber(agentVersion, 'The query parameter "agent_version"', 1, 1_000_000_000),
      includeArchived: booleanOf(q, "include_archived"),
      statuses: wantsLive && wantsEnded ? undefined : SESSION_STATUSES.filter((s) => ENDED_STATUSES.includes(s) === wantsEnded),
      order,
      back: page?.back ?? false,
      cursor: page,
      limit: limit + 1,
    });
    const back = page?.back ?? false;
    // Read limit + 1: the extra row says whether there is more in the reading direction.
    const more = rows.length > limit;
    const pageRows = back ? rows.slice(rows.length - Math.min(rows.length, limit)) : rows.slice(0, limit);
    const first = pageRows[0];
    const last = pageRows[pageRows.length - 1];
    const next = last && (back || more) ? encodePage({ createdAt: last.createdAt, id: last.id }) : null;
    const prev = first && (page !== undefined && (!back || more)) ? encodePage({ createdAt: first.createdAt, id: first.id, back: true }) : null;
    const sessions: ManagedSession[] = [];
    for (const row of pageRows) {
      const record = await getSession(ctx.db, row.id);
      const extras = record && (await getSessionExtras(ctx.db, row.id));
      if (record && extras) sessions.push({ record, extras });
    }
    const shown = await Promise.all(sessions.map(present));
    const data = statuses.length ? shown.filter((s) => statuses.includes(s.status)) : shown;
    return { data, next_page: next, prev_page: prev };
  });

  // Ends the session (its sandbox goes); the record leaves /v1 but /api keeps its history.
  app.delete("/v1/sessions/:id", async (event) => {
    const session = await requireManagedSession(ctx, event);
    if (session.record.status !== "ended") await ctx.sessions.end(session.record.id);
    await setSessionExtras(ctx.db, session.record.id, { ...session.extras, deletedAt: Date.now() });
    return { type: "session_deleted", id: session.record.id };
  });

  // Archived: ended (no more events) and listed only with include_archived.
  app.post("/v1/sessions/:id/archive", async (event) => {
    const session = await requireManagedSession(ctx, event);
    if (session.record.status !== "ended") await ctx.sessions.end(session.record.id);
    const extras = session.extras.archivedAt === null ? { ...session.extras, archivedAt: Date.now() } : session.extras;
    await setSessionExtras(ctx.db, session.record.id, extras);
    return present({ record: (await getSession(ctx.db, session.record.id))!, extras });
  });
}
