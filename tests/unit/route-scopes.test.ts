import { describe, expect, it } from "vitest";
import { createApp } from "../../src/server/app";
import { ROUTE_ACCESS } from "../../src/server/scopes";
import { createObservability } from "../../src/observability/index";
import type { AppContext } from "../../src/server/context";
import { openApiDocument } from "../../src/server/routes/openapi";

// Every route the app serves has an access decision (public, a scope, or
// operator-only) in src/server/scopes.ts, and every decision names a route:
// a new route cannot ship without saying who may call it.
describe("route access decisions", () => {
  it("covers exactly the routes the app registers", async () => {
    const observability = await createObservability({});
    const app = createApp({ observability, config: { maxBodyBytes: 1024, console: true } } as unknown as AppContext);
    const routes = (app as unknown as { "~routes": Array<{ method?: string; route: string }> })["~routes"].map((r) => `${(r.method ?? "ALL").toUpperCase()} ${r.route}`);
    expect(routes.length).toBeGreaterThan(20);
    const missing = routes.filter((r) => !(r in ROUTE_ACCESS));
    const stale = Object.keys(ROUTE_ACCESS).filter((r) => !routes.includes(r));
    expect({ missing, stale }).toEqual({ missing: [], stale: [] });
    await observability.shutdown(100);
  });

  it("documents every /api route in the OpenAPI reference", async () => {
    const observability = await createObservability({});
    const app = createApp({ observability, config: { maxBodyBytes: 1024 } } as unknown as AppContext);
    const doc = openApiDocument("test") as { paths: Record<string, Record<string, unknown>> };
    // h3's `:name` and `**` are OpenAPI's `{name}`; the catch-all is documented as `{path}`.
    const undocumented = (app as unknown as { "~routes": Array<{ method?: string; route: string }> })["~routes"]
      .filter((r) => r.route.startsWith("/api"))
      .map((r) => [String(r.method).toLowerCase(), r.route.replace(/:(\w+)/g, "{$1}").replace(/\*\*$/, "{path}")] as const)
      .filter(([method, path]) => !doc.paths[path]?.[method])
      .map(([method, path]) => `${method.toUpperCase()} ${path}`);
    expect(undocumented).toEqual([]);
    await observability.shutdown(100);
  });
});
