import type { H3 } from "h3";
import type { AppContext } from "../context";

/** GET /health: public; 200 when the server can serve, 503 while the database is unreachable. */
export function registerHealth(app: H3, ctx: AppContext): void {
  app.get("/health", async () => {
    const databaseUp = await ctx.db.ping();
    const sandbox = ctx.sandboxes.describe();
    const body = {
      status: databaseUp ? "ok" : "degraded",
      version: ctx.version,
      uptime: Math.round((Date.now() - ctx.startedAt) / 1000),
      activeSessions: ctx.sessions.liveCount,
      activeSandboxes: ctx.sessions.pool.live,
      pool: {
        max: ctx.sessions.pool.max,
        live: ctx.sessions.pool.live,
        busy: ctx.sessions.busyCount,
        idle: ctx.sessions.pool.live - ctx.sessions.busyCount - ctx.sessions.warm.readyCount,
        idleTimeoutMs: ctx.config.idleTimeoutMs,
        // Ready spares per ASH_WARM_POOL agent; they are part of `live`.
        // /health is public: only the default tenant's agents are named (other tenants' names stay theirs).
        warm: { total: ctx.sessions.warm.readyCount, agents: Object.fromEntries(Object.entries(ctx.sessions.warm.counts()).filter(([key]) => !key.includes("/"))) },
        // Resumes that found the sandbox still up, and those that had to start one (restoring the workspace).
        ...ctx.observability.metrics.resumeCounts(),
      },
      isolation: sandbox.isolation,
      limits: sandbox.limits,
      database: ctx.db.dialect,
    };
    return new Response(JSON.stringify(body), {
      status: databaseUp ? 200 : 503,
      headers: { "content-type": "application/json; charset=utf-8", ...(databaseUp ? {} : { "retry-after": "5" }) },
    });
  });
}
