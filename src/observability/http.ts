import { context, SpanStatusCode, trace, type Span } from "@opentelemetry/api";
import type { H3Event, Middleware } from "h3";
import type { Metrics } from "./metrics";
import type { Tracing } from "./tracing";

/** The route label of a request no route matched (never the raw path: it would grow the series without bound). */
export const UNMATCHED_ROUTE = "unmatched";

/** Polled by health checks and scrapers every few seconds: counted, but a trace each would bury the real ones. */
const UNTRACED_PATHS = new Set(["/health", "/metrics"]);

export interface HttpObserver {
  /** H3 config hook: notes when the request arrived and opens its span. */
  onRequest(event: H3Event): void;
  /** Global middleware (register it first): runs the handler with the request's span active. */
  middleware: Middleware;
  /** H3 config hook: the final response (errors included) is counted and the span closed. */
  onResponse(response: Response, event: H3Event): void;
}

interface RequestState {
  startedAt: number;
  span?: Span;
}

/**
 * Per-request metrics and spans for an h3 app. The status comes from the
 * final response, after the error hook has turned a thrown error into its
 * answer; the duration is the time until the response starts (for an event
 * stream: until its headers).
 */
export function observeHttp(deps: { metrics: Metrics; tracing: Tracing }): HttpObserver {
  const requests = new WeakMap<H3Event, RequestState>();
  return {
    onRequest(event) {
      const path = event.url.pathname;
      const span = UNTRACED_PATHS.has(path) ? undefined : deps.tracing.startSpan("http.request", { "http.request.method": event.req.method, "url.path": path });
      requests.set(event, { startedAt: performance.now(), span });
    },
    middleware(event, next) {
      const state = requests.get(event);
      if (!state?.span) return next();
      return context.with(trace.setSpan(context.active(), state.span), next);
    },
    onResponse(response, event) {
      const state = requests.get(event);
      requests.delete(event);
      const route = event.context.matchedRoute?.route ?? UNMATCHED_ROUTE;
      const method = event.req.method;
      deps.metrics.httpRequest({
        route,
        method,
        status: response.status,
        durationMs: state ? performance.now() - state.startedAt : 0,
      });
      if (state?.span) {
        state.span.updateName(`${method} ${route}`);
        state.span.setAttributes({ "http.route": route, "http.response.status_code": response.status });
        if (response.status >= 500) state.span.setStatus({ code: SpanStatusCode.ERROR, message: `HTTP ${response.status}` });
        state.span.end();
      }
    },
  };
}
