import { type H3 } from "h3";
import { singleQuery } from "../validate";
import type { AppContext } from "../context";
import { principalOf } from "../auth";
import { badRequest } from "../errors";
import { listUsage, usageStats, type UsageFilter, type UsageRecord } from "../../db/queries/usage";
import { activitySums } from "../../db/queries/activity";

function timeOf(name: string, value: string | undefined): number | undefined {
  if (value === undefined || value === "") return undefined;
  const ms = /^\d+$/.test(value) ? Number(value) : Date.parse(value);
  if (!Number.isFinite(ms)) throw badRequest(`The query parameter "${name}" must be an ISO 8601 time or epoch milliseconds.`);
  return ms;
}

/** Our query names (session, agent, from, to), or the original API's (sessionId, agentName, after, before). */
export function filterOf(q: Record<string, string | undefined>, tenantId: string): UsageFilter {
  return {
    tenantId,
    sessionId: q.session || q.sessionId || undefined,
    agentName: q.agent || q.agentName || undefined,
    from: q.from !== undefined ? timeOf("from", q.from) : timeOf("after", q.after),
    to: q.to !== undefined ? timeOf("to", q.to) : timeOf("before", q.before),
  };
}

const ORIGINAL_EVENT_TYPES = [
  ["input_tokens", "inputTokens"],
  ["output_tokens", "outputTokens"],
  ["cache_creation_tokens", "cacheCreationTokens"],
  ["cache_read_tokens", "cacheReadTokens"],
] as const;

/** A record as the original API's usage events: one per kind of token it counted. */
function originalEvents(r: UsageRecord) {
  return ORIGINAL_EVENT_TYPES.filter(([, key]) => r[key] > 0).map(([eventType, key]) => ({
    id: `${r.id}:${eventType}`,
    sessionId: r.sessionId,
    agentName: r.agentName,
    eventType,
    value: r[key],
    createdAt: new Date(r.createdAt).toISOString(),
  }));
}

/** The original API's flat totals, from the gateway's records and the sessions' stored history. */
export async function originalStats(ctx: AppContext, filter: UsageFilter, totals: { inputTokens: number; outputTokens: number; cacheCreationTokens: number; cacheReadTokens: number }) {
  const activity = await activitySums(ctx.db, filter);
  return {
    totalInputTokens: totals.inputTokens,
    totalOutputTokens: totals.outputTokens,
    totalCacheCreationTokens: totals.cacheCreationTokens,
    totalCacheReadTokens: totals.cacheReadTokens,
    totalToolCalls: activity.toolCalls,
    totalMessages: activity.messages,
    totalComputeSeconds: activity.computeSeconds,
  };
}

/** Sums of the gateway's records, grouped by agent and model, and in all. */
export async function usageTotals(ctx: AppContext, filter: UsageFilter) {
  const groups = await usageStats(ctx.db, filter);
  const sum = (key: "requests" | "inputTokens" | "outputTokens" | "cacheCreationTokens" | "cacheReadTokens") => groups.reduce((n, g) => n + g[key], 0);
  const totals = {
    requests: sum("requests"),
    inputTokens: sum("inputTokens"),
    outputTokens: sum("outputTokens"),
    cacheCreationTokens: sum("cacheCreationTokens"),
    cacheReadTokens: sum("cacheReadTokens"),
  };
  return { totals: { ...totals, totalTokens: totals.inputTokens + totals.outputTokens + totals.cacheCreationTokens + totals.cacheReadTokens }, groups };
}

function present(r: UsageRecord) {
  return {
    id: r.id,
    sessionId: r.sessionId,
    agentName: r.agentName,
    turnId: r.turnId,
    keyId: r.keyId,
    model: r.model,
    inputTokens: r.inputTokens,
    outputTokens: r.outputTokens,
    cacheCreationTokens: r.cacheCreationTokens,
    cacheReadTokens: r.cacheReadTokens,
    createdAt: new Date(r.createdAt).toISOString(),
  };
}

/** What the model gateway measured: one record per model response, and sums. */
export function registerUsage(app: H3, ctx: AppContext): void {
  app.get("/api/usage", async (event) => {
    const q = singleQuery(event);
    const limit = q.limit === undefined ? 100 : Number(q.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw badRequest('The query parameter "limit" must be a whole number from 1 to 1000.');
    let cursor: { createdAt: number; id: string } | undefined;
    if (q.cursor) {
      try {
        const [createdAt, rid] = JSON.parse(Buffer.from(q.cursor, "base64url").toString("utf8"));
        if (typeof createdAt === "number" && typeof rid === "string") cursor = { createdAt, id: rid };
      } catch {
        // refused below
      }
      if (!cursor) throw badRequest('The query parameter "cursor" is not one this server gave out.');
    }
    const rows = await listUsage(ctx.db, { ...filterOf(q, principalOf(event).tenantId), limit: limit + 1, cursor });
    const page = rows.slice(0, limit);
    const last = page[page.length - 1];
    const nextCursor = rows.length > limit && last ? Buffer.from(JSON.stringify([last.createdAt, last.id])).toString("base64url") : null;
    // `events` is the original API's shape of the same page.
    return { usage: page.map(present), nextCursor, events: page.flatMap(originalEvents) };
  });

  app.get("/api/usage/stats", async (event) => {
    const filter = filterOf(singleQuery(event), principalOf(event).tenantId);
    const { totals, groups } = await usageTotals(ctx, filter);
    // `stats` is the original API's shape.
    return { totals, groups, stats: await originalStats(ctx, filter, totals) };
  });
}
