import type { H3 } from "h3";
import type { AppContext } from "../context";

const json = (body: unknown, status: number, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json; charset=utf-8", "cache-control": "no-store", ...headers } });

/**
 * Public health answers. /health: 200 when the server can serve, 503 while the
 * database is unreachable or the server is shutting down. For load balancers
 * and Kubernetes probes, /health/live says only that the process answers (a
 * database outage must not get every server restarted) and /health/ready
 * whether to send it new work.
 */
export function registerHealth(app: H3, ctx: AppContext): void {
  app.get("/health/live", () => json({ status: "live" }, 200));

  app.get("/health/ready", async () => {
    if (ctx.drain.draining) return json({ status: "not ready", reason: "draining" }, 503, { "retry-after": "1" });
    if (!(await ctx.db.ping())) return json({ status: "not ready", reason: "database" }, 503, { "retry-after": "5" });
    return json({ status: "ready" }, 200);
  });

  app.get("/health", async () => {
    const databaseUp = await ctx.db.ping();
    const ready = databaseUp && !ctx.drain.draining;
    const sandbox = ctx.sandboxes.describe();
    const body = {
      status: ctx.drain.draining ? "draining" : databaseUp ? "ok" : "degraded",
      ready,
      version: ctx.version,
      // Which of several servers answered (a load balancer's probe, a test following a session).
      server: { id: ctx.sessions.leases.serverId, address: ctx.sessions.leases.advertised },
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
    return json(body, ready ? 200 : 503, ready ? {} : { "retry-after": ctx.drain.draining ? "1" : "5" });
  });
}
