import { H3 } from "h3";
import type { AppContext } from "./context";
import { bearerKey } from "./auth";
import { errorResponse, toErrorResponse } from "./errors";
import { registerHealth } from "./routes/health";
import { registerAgents } from "./routes/agents";
import { registerSessions } from "./routes/sessions";
import { registerMessages } from "./routes/messages";
import { registerWorkspace } from "./routes/workspace";
import { registerOpenApi } from "./routes/openapi";
import { registerMetrics } from "./routes/metrics";
import { registerUsage } from "./routes/usage";
import { registerQueue } from "./routes/queue";
import { registerEvals } from "./routes/evals";

/** The h3 app: public /health, everything under /api behind the bearer key. */
export function createApp(ctx: AppContext): H3 {
  const { http, metrics, telemetry, settings } = ctx.observability;
  const app = new H3({
    // Expected 4xx answers are not logged as crashes; real 500s are logged below.
    silent: true,
    onError: (error, event) =>
      toErrorResponse(error, (cause) => {
        ctx.log.error("request failed:", cause);
        metrics.unexpectedError("request");
        telemetry.emit({ type: "server_error", data: { method: event.req.method, route: event.context.matchedRoute?.route ?? null, message: ctx.observability.redact(cause instanceof Error ? cause.message : String(cause)) } });
      }),
    onRequest: http.onRequest,
    onResponse: http.onResponse,
  });
  // First: every request, answered by any route or middleware, is counted and traced.
  app.use(http.middleware);

  app.use((event, next) => {
    const path = event.url.pathname;
    if (path === "/api" || path.startsWith("/api/")) {
      if (!ctx.keys.verify(bearerKey(event.req.headers.get("authorization")))) {
        return errorResponse(401, "Missing or wrong API key: send Authorization: Bearer <key>.", { "www-authenticate": "Bearer" });
      }
    }
    return next();
  });

  registerHealth(app, ctx);
  registerMetrics(app, { metrics, requireKey: !settings.metrics.public, verify: (header) => ctx.keys.verify(bearerKey(header)) });
  registerOpenApi(app, ctx);
  registerAgents(app, ctx);
  registerSessions(app, ctx);
  registerMessages(app, ctx);
  registerWorkspace(app, ctx);
  registerUsage(app, ctx);
  registerQueue(app, ctx);
  registerEvals(app, ctx);
  return app;
}
