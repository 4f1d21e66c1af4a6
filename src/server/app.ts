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

/** The h3 app: public /health, everything under /api behind the bearer key. */
export function createApp(ctx: AppContext): H3 {
  const app = new H3({
    onError: (error) => toErrorResponse(error, (cause) => ctx.log.error("request failed:", cause)),
  });

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
  registerOpenApi(app, ctx);
  registerAgents(app, ctx);
  registerSessions(app, ctx);
  registerMessages(app, ctx);
  registerWorkspace(app, ctx);
  return app;
}
