import { H3 } from "h3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createObservability, type Observability } from "../../src/observability/index";
import { registerMetrics } from "../../src/server/routes/metrics";
import { conflict, toErrorResponse } from "../../src/server/errors";
import { startOtlpCollector, type OtlpCollector } from "../helpers/otlp-collector";

/** An h3 app wired the way the server wires it: hooks in the config, the middleware first. */
function appWith(obs: Observability): H3 {
  const app = new H3({
    silent: true,
    onError: (error) => toErrorResponse(error, () => undefined),
    onRequest: obs.http.onRequest,
    onResponse: obs.http.onResponse,
  });
  app.use(obs.http.middleware);
  registerMetrics(app, { metrics: obs.metrics, public: obs.settings.metrics.public });
  app.get("/api/sessions/:id", (event) =>
    obs.tracing.withSpan("session.lookup", { "ash.session_id": event.context.params!.id }, async () => {
      await new Promise((r) => setTimeout(r, 2));
      return { session: { id: event.context.params!.id } };
    }),
  );
  app.post("/api/sessions/:id/pause", () => {
    throw conflict("A turn is running on this session.");
  });
  app.get("/api/crash", () => {
    throw new Error("a real bug");
  });
  return app;
}

const get = (app: H3, path: string, init: RequestInit = {}) => app.fetch(new Request(`http://ash.test${path}`, init));

describe("HTTP metrics and spans", () => {
  let collector: OtlpCollector;
  let obs: Observability;
  let app: H3;

  beforeAll(async () => {
    collector = await startOtlpCollector();
    obs = await createObservability({ OTEL_EXPORTER_OTLP_ENDPOINT: collector.url });
    app = appWith(obs);
    expect((await get(app, "/api/sessions/0b7e-aaaa")).status).toBe(200);
    expect((await get(app, "/api/sessions/91c2-bbbb")).status).toBe(200);
    expect((await get(app, "/api/sessions/x/pause", { method: "POST" })).status).toBe(409);
    expect((await get(app, "/api/crash")).status).toBe(500);
    expect((await get(app, "/no/such/route/with-an-id-1234")).status).toBe(404);
    expect((await get(app, "/metrics", {})).status).toBe(200);
    await obs.tracing.flush(5000);
  });

  afterAll(async () => {
    await obs?.shutdown(1000);
    await collector?.close();
  });

  it("counts requests by route pattern, method and final status (thrown errors included), never by raw path", async () => {
    const text = await (await get(app, "/metrics", {})).text();
    expect(text).toContain('ash_http_requests_total{route="/api/sessions/:id",method="GET",status="200"} 2');
    expect(text).toContain('ash_http_requests_total{route="/api/sessions/:id/pause",method="POST",status="409"} 1');
    expect(text).toContain('ash_http_requests_total{route="/api/crash",method="GET",status="500"} 1');
    expect(text).toContain('ash_http_requests_total{route="unmatched",method="GET",status="404"} 1');
    expect(text).toMatch(/ash_http_request_duration_seconds_count\{route="\/api\/sessions\/:id",method="GET"\} 2/);
    for (const raw of ["0b7e-aaaa", "91c2-bbbb", "with-an-id-1234"]) expect(text).not.toContain(raw);
  });

  it("opens a span per request named by method and route; spans made in the handler are its children", () => {
    const spans = collector.spans();
    const requests = spans.filter((s) => s.name === "GET /api/sessions/:id");
    expect(requests).toHaveLength(2);
    for (const request of requests) {
      expect(request.attributes).toMatchObject({ "http.request.method": "GET", "http.route": "/api/sessions/:id", "http.response.status_code": 200 });
      const child = spans.find((s) => s.name === "session.lookup" && s.parentSpanId === request.spanId);
      expect(child, "a session.lookup child").toBeDefined();
      expect(child!.traceId).toBe(request.traceId);
      expect(child!.attributes["ash.session_id"]).toBe(request.attributes["url.path"]!.toString().split("/").at(-1));
    }
    const crash = spans.find((s) => s.name === "GET /api/crash")!;
    expect(crash.status.code).toBe(2);
    const conflictSpan = spans.find((s) => s.name === "POST /api/sessions/:id/pause")!;
    expect(conflictSpan.status.code).toBe(0);
    // Health checks and scrapes are counted, not traced.
    expect(spans.some((s) => s.attributes["url.path"] === "/metrics" || s.name.includes("/metrics"))).toBe(false);
  });

  it("GET /metrics answers the text format (the app's access check guards it: tests/integration/server-keys.test.ts)", async () => {
    const ok = await get(app, "/metrics");
    expect(ok.status).toBe(200);
    expect(ok.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
    expect(await ok.text()).toMatch(/^# HELP /);
  });

  it("ASH_METRICS_PUBLIC is read as a boolean", async () => {
    const publicObs = await createObservability({ ASH_METRICS_PUBLIC: "true" });
    expect(publicObs.settings.metrics.public).toBe(true);
    expect((await createObservability({})).settings.metrics.public).toBe(false);
    await expect(createObservability({ ASH_METRICS_PUBLIC: "sometimes" })).rejects.toThrow(/ASH_METRICS_PUBLIC must be true or false/);
  });
});
