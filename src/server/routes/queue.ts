import { randomUUID } from "node:crypto";
import { type H3 } from "h3";
import { z } from "zod";
import type { AppContext } from "../context";
import { principalOf } from "../auth";
import { readJsonBody } from "../body";
import { parseWholeNumber, validate, singleQuery } from "../validate";
import { badRequest, conflict, notFound } from "../errors";
import { id, json } from "./sessions";
import { AGENT_NAME, AGENT_NAME_RULE, isQueueStatus, QUEUE_STATUSES } from "../../contract";
import { getAgent } from "../../db/queries/agents";
import { getSession } from "../../db/queries/sessions";
import { cancelQueueItem, getQueueItem, insertQueueItem, listQueueItems, queueCounts, type QueueItemRecord } from "../../db/queries/queue";

const addSchema = z
  .object({
    agent: z.string().regex(AGENT_NAME, AGENT_NAME_RULE),
    prompt: z.string().min(1, "must not be empty").max(500_000),
    sessionId: z.string().min(1).max(200).optional(),
    priority: z.number().int().min(-1000).max(1000).optional(),
    maxRetries: z.number().int().min(0).max(20).optional(),
  })
  .strict();

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

export function presentQueueItem(item: QueueItemRecord) {
  return {
    id: item.id,
    agent: item.agentName,
    prompt: item.prompt,
    status: item.status,
    priority: item.priority,
    attempts: item.attempts,
    maxRetries: item.maxRetries,
    sessionId: item.sessionId,
    continueSessionId: item.continueSessionId,
    result: item.result,
    error: item.error,
    claimedBy: item.status === "running" ? item.claimedBy : null,
    leaseUntil: item.status === "running" ? iso(item.leaseUntil) : null,
    nextAttemptAt: item.status === "pending" ? iso(item.nextAttemptAt) : null,
    createdAt: iso(item.createdAt),
    startedAt: iso(item.startedAt),
    completedAt: iso(item.completedAt),
  };
}

/** Prompts that servers run in the background, claimed through the database. */
export function registerQueue(app: H3, ctx: AppContext): void {
  app.post("/api/queue", async (event) => {
    const body = validate(addSchema, await readJsonBody(event, ctx.config.maxBodyBytes));
    const caller = principalOf(event);
    if (!(await getAgent(ctx.db, caller.tenantId, body.agent))) throw notFound(`No agent named "${body.agent}".`);
    await ctx.limits.admitQueued(caller);
    if (body.sessionId !== undefined) {
      const session = await getSession(ctx.db, body.sessionId);
      if (!session || session.tenantId !== caller.tenantId) throw notFound(`No session with id "${body.sessionId}".`);
      if (session.agentName !== body.agent) throw badRequest(`Session ${body.sessionId} belongs to agent "${session.agentName}", not "${body.agent}".`);
      if (session.status === "ended") throw conflict(`Session ${body.sessionId} has ended; queue the prompt without a session id to start a new one.`);
    }
    const item = await insertQueueItem(ctx.db, {
      id: randomUUID(),
      tenantId: caller.tenantId,
      apiKeyId: caller.keyId,
      agentName: body.agent,
      prompt: body.prompt,
      continueSessionId: body.sessionId ?? null,
      priority: body.priority ?? 0,
      maxRetries: body.maxRetries ?? 3,
      createdAt: Date.now(),
    });
    ctx.queue.wake();
    return json(201, { item: presentQueueItem(item) });
  });

  app.get("/api/queue", async (event) => {
    const q = singleQuery(event);
    const limit = q.limit === undefined ? 50 : parseWholeNumber(typeof q.limit === "string" ? q.limit : "", 'The query parameter "limit"', 1, 500);
    if (q.status !== undefined && !isQueueStatus(q.status)) throw badRequest(`The query parameter "status" must be one of ${QUEUE_STATUSES.join(", ")}.`);
    const cursor = q.cursor ? decodeCursor(q.cursor) : undefined;
    const rows = await listQueueItems(ctx.db, { tenantId: principalOf(event).tenantId, status: q.status, agentName: q.agent || undefined, limit: limit + 1, cursor });
    const page = rows.slice(0, limit);
    const last = page[page.length - 1];
    const nextCursor = rows.length > limit && last ? Buffer.from(JSON.stringify([last.createdAt, last.id])).toString("base64url") : null;
    return { items: page.map(presentQueueItem), nextCursor };
  });

  app.get("/api/queue/stats", async (event) => {
    const counts = await queueCounts(ctx.db, principalOf(event).tenantId);
    return { ...counts, total: Object.values(counts).reduce((a, b) => a + b, 0), runningHere: ctx.queue.runningCount, concurrency: ctx.config.queue.concurrency };
  });

  app.get("/api/queue/:id", async (event) => ({ item: presentQueueItem(await requireItem(ctx, principalOf(event).tenantId, id(event))) }));

  // Cancels a pending or running item (a running one's turn is interrupted); a finished one is 409.
  app.delete("/api/queue/:id", async (event) => {
    const itemId = id(event);
    const before = await requireItem(ctx, principalOf(event).tenantId, itemId);
    if (!(await cancelQueueItem(ctx.db, itemId, Date.now()))) {
      const now = (await getQueueItem(ctx.db, itemId)) ?? before;
      throw conflict(`Queue item ${itemId} is ${now.status} already; only pending or running items can be cancelled.`);
    }
    await ctx.queue.cancelled(itemId);
    return { item: presentQueueItem((await getQueueItem(ctx.db, itemId))!) };
  });
}

async function requireItem(ctx: AppContext, tenantId: string, itemId: string): Promise<QueueItemRecord> {
  const item = await getQueueItem(ctx.db, itemId);
  if (!item || item.tenantId !== tenantId) throw notFound(`No queue item with id "${itemId}".`);
  return item;
}

function decodeCursor(cursor: string): { createdAt: number; id: string } {
  try {
    const [createdAt, itemId] = JSON.parse(Buffer.from(cursor, "base64url").toString("utf8"));
    if (typeof createdAt === "number" && typeof itemId === "string") return { createdAt, id: itemId };
  } catch {
    // fall through
  }
  throw badRequest('The query parameter "cursor" is not one this server gave out.');
}
