import { H3 } from "h3";
import type { AppContext } from "./context";
import { bearerKey, scopeAllows } from "./auth";
import { accessOf } from "./scopes";
import { RequestBuckets } from "./rate-limit";
import { getSession } from "../db/queries/sessions";
import { errorResponse, toErrorResponse } from "./errors";
import { drainGate } from "./drain";
import { forwardedPrincipal, forwarding } from "./forward";
import { registerHealth } from "./routes/health";
import { registerAgents } from "./routes/agents";
import { registerSessions } from "./routes/sessions";
import { registerMessages } from "./routes/messages";
import { registerWorkspace } from "./routes/workspace";
import { registerOpenApi } from "./routes/openapi";
import { registerMetrics } from "./routes/metrics";
import { registerUsage } from "./routes/usage";
import { registerAnalytics } from "./routes/analytics";
import { registerKeys } from "./routes/keys";
import { registerCredentials } from "./routes/credentials";
import { registerAttachments } from "./routes/attachments";
import { registerQueue } from "./routes/queue";
import { registerEvals } from "./routes/evals";
import { managedApiErrors, MANAGED_PREFIX, registerManagedApi } from "./managed";
import { consoleDir, registerConsole } from "./routes/console";

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
  // /v1 answers errors in Anthropic's shape, whichever part below gives them.
  app.use(
    managedApiErrors((cause) => {
      ctx.log.error("request failed:", cause);
      metrics.unexpectedError("request");
    }),
  );

  const buckets = new RequestBuckets();
  // Every route's access is decided in scopes.ts: public, a scope, or operator-only.
  app.use(async (event, next) => {
    const path = event.url.pathname;
    const route = event.context.matchedRoute?.route;
    const access = route === "/metrics" && settings.metrics.public ? "public" : accessOf(event.req.method === "HEAD" ? "GET" : event.req.method, route);
    if (access === "public" || (access === undefined && !(path === "/api" || path.startsWith("/api/")))) return next();
    const managed = path.startsWith(MANAGED_PREFIX);
    // Passed on by another server: the caller it authenticated, signed with the cluster secret.
    const forwarded = forwardedPrincipal(ctx, event);
    if (forwarded && "refused" in forwarded) return errorResponse(401, `Refused a request passed on by another server: ${forwarded.refused}.`);
    // 421: the sender's lease names a server that no longer answers at this address; it tells its caller to try again.
    if (forwarded && "misdirected" in forwarded) return errorResponse(421, `This server is not the one the request was passed on to: ${forwarded.misdirected}.`);
    // The Anthropic SDK sends its key as x-api-key (or as a bearer token).
    const principal = forwarded ? forwarded.principal : await ctx.keys.authenticate(bearerKey(event.req.headers.get("authorization")) ?? (managed ? (event.req.headers.get("x-api-key") ?? undefined) : undefined));
    if (!principal) {
      const hint = path === "/metrics" ? ", or set ASH_METRICS_PUBLIC=true to serve /metrics without one" : managed ? " (or x-api-key: <key>)" : "";
      return errorResponse(401, `Missing, wrong, revoked or expired API key: send Authorization: Bearer <key>${hint}.`, { "www-authenticate": "Bearer" });
    }
    event.context.principal = principal;
    event.context.forwarded = forwarded !== undefined;
    // Requests a minute: the key's own (or the server's default), then its tenant's; counted once, where the request arrived.
    if (!forwarded && principal.limits.requestsPerMinute) buckets.take(`key:${principal.keyId}`, principal.limits.requestsPerMinute, "this key");
    if (!forwarded && principal.tenantLimits.requestsPerMinute) buckets.take(`tenant:${principal.tenantId}`, principal.tenantLimits.requestsPerMinute, `tenant ${principal.tenantId}`);
    if (access === undefined) return next(); // no such route: 404
    if (access === "operator" ? !principal.operator : !principal.operator && !scopeAllows(principal.scope, access)) {
      return errorResponse(403, access === "operator" ? "Only the server's own key (ASH_API_KEY or the first-boot key) may do this." : `This key's scope is ${principal.scope}; this needs the ${access} scope.`);
    }
    // Every route about one session checks here that it is the caller's tenant's: another
    // tenant's session does not exist for it (404, the same answer as for no session at all).
    if (route?.startsWith("/api/sessions/:id")) {
      const id = event.context.params?.id ?? "";
      const session = await getSession(ctx.db, id);
      if (!session || session.tenantId !== principal.tenantId) return errorResponse(404, `No session with id "${id}".`);
    }
    return next();
  });
  // A session another server runs is answered there (before the drain gate: a draining server still passes requests on).
  app.use(forwarding(ctx));
  app.use(drainGate(ctx.drain));

  registerHealth(app, ctx);
  registerMetrics(app, { metrics, public: settings.metrics.public });
  registerOpenApi(app, ctx);
  registerAgents(app, ctx);
  registerSessions(app, ctx);
  registerMessages(app, ctx);
  registerWorkspace(app, ctx);
  registerUsage(app, ctx);
  registerAnalytics(app, ctx);
  registerKeys(app, ctx);
  registerCredentials(app, ctx);
  registerAttachments(app, ctx);
  registerQueue(app, ctx);
  registerEvals(app, ctx);
  registerManagedApi(app, ctx);
  // Off (ASH_CONSOLE=false), there is no route at all, so /console is an ordinary 404.
  if (ctx.config.console) registerConsole(app, { dir: consoleDir(), onMissing: (dir) => ctx.log.warn(`The web console is on but not built (no ${dir}/index.html): run \`npm run build\`, or set ASH_CONSOLE=false.`) });
  return app;
}
