import type { H3 } from "h3";
import { EXPOSITION_CONTENT_TYPE } from "../../observability/registry";
import type { Metrics } from "../../observability/metrics";

export interface MetricsRouteOptions {
  metrics: Metrics;
  /** ASH_METRICS_PUBLIC=true: scrapers need no key (else the app's key check asks for the operator's). */
  public: boolean;
}

/** GET /metrics in the Prometheus text format (the app's access check asks for the operator's key unless public). */
export function registerMetrics(app: H3, options: MetricsRouteOptions): void {
  app.get("/metrics", async (event) => {
    return new Response(await options.metrics.render(), {
      status: 200,
      headers: { "content-type": EXPOSITION_CONTENT_TYPE, "cache-control": "no-store" },
    });
  });
}
