import { type H3 } from "h3";
import { singleQuery } from "../validate";
import type { AppContext } from "../context";
import { principalOf } from "../auth";
import { listAgents } from "../../db/queries/agents";
import { evalRunsByStatus, sessionsByStatus } from "../../db/queries/activity";
import { filterOf, originalStats, usageTotals } from "./usage";

/** The original API's one-page summary of a tenant: agents, sessions by status, usage, evaluation runs. */
export function registerAnalytics(app: H3, ctx: AppContext): void {
  app.get("/api/analytics", async (event) => {
    const tenantId = principalOf(event).tenantId;
    const q = singleQuery(event);
    // Like the original, `after` and `before` narrow the usage only.
    const filter = filterOf({ after: q.after, before: q.before }, tenantId);
    const [agents, sessions, evals, { totals }] = await Promise.all([
      listAgents(ctx.db, tenantId),
      sessionsByStatus(ctx.db, tenantId),
      evalRunsByStatus(ctx.db, tenantId),
      usageTotals(ctx, filter),
    ]);
    const total = (counts: Record<string, number>) => Object.values(counts).reduce((a, b) => a + b, 0);
    return {
      agents: { total: agents.length },
      sessions: { total: total(sessions), byStatus: sessions },
      usage: await originalStats(ctx, filter, totals),
      evals: { totalRuns: total(evals), byStatus: evals },
    };
  });
}
