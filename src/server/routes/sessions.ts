import { sessionsActivity } from "../../db/queries/activity";
import { modelEndpointProblem } from "../../sessions/agent-env";
import { getRouterParam, type H3 } from "h3";
import { z } from "zod";
import type { AppContext } from "../context";
import { principalOf, scopeAllows } from "../auth";
import { readJsonBody } from "../body";
import { parseWholeNumber, validate, singleQuery } from "../validate";
import { badRequest, forbidden, notFound, unavailable } from "../errors";
import { getCredential } from "../../db/queries/credentials";
import { getAgent } from "../../db/queries/agents";
import { presentCheckpoint, presentSession } from "../present";
import { listSessions, type SessionRecord } from "../../db/queries/sessions";
import { isSessionStatus, SESSION_STATUSES } from "../../contract";

const PERMISSION_MODES = ["default", "acceptEdits", "bypassPermissions", "plan", "dontAsk"] as const;

/** Tools held for a person's decision: every one, or these names (an empty list: none, overriding the agent's). */
export const confirmToolsSchema = z.union([z.literal("all"), z.array(z.string().min(1).max(200)).max(200)]);

const createSchema = z
  .object({
    agent: z.string().min(1).max(64),
    model: z.string().min(1).max(200).optional(),
    systemPrompt: z.string().max(200_000).optional(),
    extraEnv: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "must be a valid variable name"), z.string()).optional(),
    mcpServers: z.record(z.string(), z.record(z.string(), z.unknown())).optional(),
    permissionMode: z.enum(PERMISSION_MODES).optional(),
    allowedTools: z.array(z.string()).optional(),
    disallowedTools: z.array(z.string()).optional(),
    confirmTools: confirmToolsSchema.optional(),
    maxTokens: z.number().int().min(1).optional(),
    /** A stored credential of the caller's tenant (POST /api/credentials). */
    credentialId: z.string().min(1).max(200).optional(),
  })
  .strict();

const patchSchema = z.object({ maxTokens: z.number().int().min(1).nullable() }).strict();

const checkpointNumber = z.number().int().min(1).max(Number.MAX_SAFE_INTEGER);
const forkSchema = z.object({ checkpoint: checkpointNumber.optional() }).strict();
const rewindSchema = z.object({ checkpoint: checkpointNumber }).strict();


export function registerSessions(app: H3, ctx: AppContext): void {
  const present = (session: SessionRecord) => presentSession(session, session.status === "ended" ? "asleep" : ctx.sessions.stateOf(session.id));
  app.post("/api/sessions", async (event) => {
    const body = validate(createSchema, await readJsonBody(event, ctx.config.maxBodyBytes));
    const endpoint = modelEndpointProblem(body.extraEnv ?? {});
    if (endpoint) throw badRequest(`extraEnv: ${endpoint}.`);
    const { agent, model, ...settings } = body;
    // bypassPermissions skips the CLI's question, so nothing would ever be held.
    if (settings.permissionMode === "bypassPermissions" && settings.confirmTools !== undefined && settings.confirmTools.length > 0) {
      throw badRequest('confirmTools cannot hold tools under permissionMode "bypassPermissions", which never asks; leave permissionMode out.');
    }
    const caller = principalOf(event);
    if (settings.maxTokens !== undefined && !caller.operator && !scopeAllows(caller.scope, "admin")) {
      // A session's own budget wins over its agent's and the server's: below an admin, it may only lower them.
      const fallback = (await getAgent(ctx.db, caller.tenantId, agent))?.settings.maxTokens ?? ctx.config.defaultMaxTokens;
      if (fallback !== undefined && settings.maxTokens > fallback) {
        throw forbidden(`maxTokens: ${settings.maxTokens} is more than the ${fallback} tokens this session would have; raising a session's budget is the tenant admin's call (an admin key, or PATCH /api/sessions/:id by one).`);
      }
    }
    if (settings.credentialId !== undefined) {
      if (!ctx.vault) throw unavailable("credentialId needs stored credentials, which this server does not have: set ASH_CREDENTIAL_KEY where it starts.", 3600);
      if (!(await getCredential(ctx.db, caller.tenantId, settings.credentialId))) throw notFound(`No credential with id "${settings.credentialId}".`);
    }
    const recorded = await ctx.limits.admitSession(caller);
    let session;
    try {
      session = await ctx.sessions.createSession({ agent, model, settings, tenantId: caller.tenantId, apiKeyId: caller.keyId, onRecorded: recorded });
    } finally {
      recorded();
    }
    return json(201, { session: present(session) });
  });

  app.get("/api/sessions", async (event) => {
    const q = singleQuery(event);
    const limit = q.limit === undefined ? 50 : parseWholeNumber(typeof q.limit === "string" ? q.limit : "", 'The query parameter "limit"', 1, 500);
    if (q.status && !isSessionStatus(q.status)) throw badRequest(`The query parameter "status" must be one of ${SESSION_STATUSES.join(", ")}.`);
    const cursor = q.cursor ? decodeCursor(q.cursor) : undefined;
    const rows = await listSessions(ctx.db, { tenantId: principalOf(event).tenantId, agent: q.agent, status: q.status, limit: limit + 1, cursor });
    const page = rows.slice(0, limit);
    const last = page[page.length - 1];
    const nextCursor = rows.length > limit && last ? Buffer.from(JSON.stringify([last.createdAt, last.id])).toString("base64url") : null;
    // What each one has done so far: completed turns and tokens (two queries for the whole page).
    const activity = await sessionsActivity(ctx.db, page.map((s) => s.id));
    return { sessions: page.map((s) => ({ ...present(s), turns: activity.get(s.id)?.turns ?? 0, tokens: activity.get(s.id)?.tokens ?? 0 })), nextCursor };
  });

  app.get("/api/sessions/:id", async (event) => ({ session: present(await ctx.sessions.requireSession(id(event))) }));
  app.post("/api/sessions/:id/pause", async (event) => ({ session: present(await ctx.sessions.pause(id(event))) }));
  app.post("/api/sessions/:id/resume", async (event) => {
    const current = await ctx.sessions.requireSession(id(event));
    const woken = await ctx.limits.admitWake(principalOf(event), current.status);
    try {
      return { session: present(await ctx.sessions.resume(id(event))) };
    } finally {
      woken?.();
    }
  });
  app.post("/api/sessions/:id/stop", async (event) => ({ session: present(await ctx.sessions.stop(id(event))) }));
  // No body (or no `checkpoint`): the files and conversation as they are now; else as after that checkpoint's turn.
  app.post("/api/sessions/:id/fork", async (event) => {
    const body = await readJsonBody(event, ctx.config.maxBodyBytes, { optional: true });
    const { checkpoint } = body === undefined ? {} : validate(forkSchema, body);
    return json(201, { session: present(await ctx.sessions.fork(id(event), checkpoint)) });
  });
  app.get("/api/sessions/:id/checkpoints", async (event) => ({ checkpoints: (await ctx.sessions.checkpoints(id(event))).map(presentCheckpoint) }));
  app.post("/api/sessions/:id/rewind", async (event) => {
    const { checkpoint } = validate(rewindSchema, await readJsonBody(event, ctx.config.maxBodyBytes));
    return { session: present(await ctx.sessions.rewind(id(event), checkpoint)) };
  });
  // Raising (or clearing, with null) the token budget lets a session that hit it work again.
  app.patch("/api/sessions/:id", async (event) => {
    const body = validate(patchSchema, await readJsonBody(event, ctx.config.maxBodyBytes));
    return { session: present(await ctx.sessions.setMaxTokens(id(event), body.maxTokens)) };
  });
  app.delete("/api/sessions/:id", async (event) => ({ session: present(await ctx.sessions.end(id(event))) }));
}

export function id(event: Parameters<typeof getRouterParam>[0]): string {
  return getRouterParam(event, "id")!;
}

export function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json; charset=utf-8" } });
}

function decodeCursor(cursor: string): { createdAt: number; id: string } {
  try {
    const [createdAt, sid] = JSON.parse(Buffer.from(cursor, "base64url").toString("utf8"));
    if (typeof createdAt === "number" && typeof sid === "string") return { createdAt, id: sid };
  } catch {
    // fall through
  }
  throw badRequest('The query parameter "cursor" is not one this server gave out.');
}
