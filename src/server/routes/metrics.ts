import type { H3 } from "h3";
import { EXPOSITION_CONTENT_TYPE } from "../../observability/registry";
import type { Metrics } from "../../observability/metrics";
import { errorResponse } from "../errors";

export interface MetricsRouteOptions {
  metrics: Metrics;
  /** False when ASH_METRICS_PUBLIC=true: scrapers need no key. */
  requireKey: boolean;
  /** Checks the `Authorization` header's value (the app's bearer-key check). */
  verify: (authorization: string | null) => boolean;
}

/**
 * GET /metrics in the Prometheus text format. It lives outside /api, so the
 * app's key check does not cover it: this route checks the key itself
 * unless the operator made it public.
 */
export function registerMetrics(app: H3, options: MetricsRouteOptions): void {
  app.get("/metrics", async (event) => {
    if (options.requireKey && !options.verify(event.req.headers.get("authorization"))) {
      return errorResponse(401, "Missing or wrong API key: send Authorization: Bearer <key>, or set ASH_METRICS_PUBLIC=true to serve /metrics without one.", {
        "www-authenticate": "Bearer",
      });
    }
    return new Response(await options.metrics.render(), {
      status: 200,
      headers: { "content-type": EXPOSITION_CONTENT_TYPE, "cache-control": "no-store" },
    });
  });
}
