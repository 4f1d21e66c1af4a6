import type { Scope } from "../db/queries/api-keys";

/**
 * What each route needs, decided route by route: `public` (no key), a scope
 * (read < sessions < admin; each includes the ones before), or `operator`
 * (the server's own keys: what spans every tenant). A route missing here is
 * refused to everyone but operators, and tests/unit/route-scopes.test.ts
 * fails until it is decided.
 */
export type RouteAccess = Scope | "public" | "operator";

export const ROUTE_ACCESS: Record<string, RouteAccess> = {
  "GET /health": "public",
  "GET /health/live": "public",
  "GET /health/ready": "public",
  "GET /openapi.json": "public",
  // The web console's static files: no key, no setting in them (it signs in with a key of its own).
  "GET /console": "public",
  "GET /console/**": "public",
  // Server-wide numbers name every tenant's agents.
  "GET /metrics": "operator",

  "GET /api/agents": "read",
  "GET /api/agents/:name": "read",
  "POST /api/agents": "admin",
  "DELETE /api/agents/:name": "admin",
  "PATCH /api/agents/:name": "admin",
  "GET /api/agents/:name/files": "read",
  "GET /api/agents/:name/files/**": "read",
  "POST /api/agents/:name/files": "admin",
  "GET /api/agents/:name/versions": "read",
  "POST /api/agents/:name/versions": "admin",
  "GET /api/agents/:name/versions/:version": "read",
  "POST /api/agents/:name/versions/:version/activate": "admin",
  "GET /api/agents/:name/config": "read",
  "PATCH /api/agents/:name/config": "admin",

  "GET /api/sessions": "read",
  "GET /api/sessions/:id": "read",
  "GET /api/sessions/:id/checkpoints": "read",
  "GET /api/sessions/:id/events": "read",
  "GET /api/sessions/:id/files": "read",
  "GET /api/sessions/:id/files/**": "read",
  "GET /api/sessions/:id/logs": "read",
  "GET /api/sessions/:id/messages": "read",
  "GET /api/sessions/:id/stream": "read",
  "GET /api/sessions/:id/workspace": "read",
  "POST /api/sessions": "sessions",
  "POST /api/sessions/:id/messages": "sessions",
  "POST /api/sessions/:id/exec": "sessions",
  "POST /api/sessions/:id/files": "sessions",
  "DELETE /api/sessions/:id/files/**": "sessions",
  "POST /api/sessions/:id/workspace": "sessions",
  "POST /api/sessions/:id/attachments": "sessions",
  "GET /api/sessions/:id/attachments": "read",
  "GET /api/attachments/:id": "read",
  "DELETE /api/attachments/:id": "sessions",
  "POST /api/sessions/:id/fork": "sessions",
  "POST /api/sessions/:id/interrupt": "sessions",
  "POST /api/sessions/:id/tool-confirmations": "sessions",
  "POST /api/sessions/:id/pause": "sessions",
  "POST /api/sessions/:id/resume": "sessions",
  "POST /api/sessions/:id/rewind": "sessions",
  "POST /api/sessions/:id/stop": "sessions",
  "DELETE /api/sessions/:id": "sessions",
  // Raising a session's token budget is the tenant admin's call, not the session user's.
  "PATCH /api/sessions/:id": "admin",

  "GET /api/usage": "read",
  "GET /api/usage/stats": "read",
  "GET /api/analytics": "read",

  // Queued prompts run sessions; reading the queue is reading.
  "POST /api/queue": "sessions",
  "GET /api/queue": "read",
  "GET /api/queue/stats": "read",
  "GET /api/queue/:id": "read",
  "DELETE /api/queue/:id": "sessions",

  // Cases describe how an agent must behave: the admin's, like the agent; runs use sessions; scoring is a reviewer's call.
  "GET /api/agents/:name/evals/cases": "read",
  "POST /api/agents/:name/evals/cases": "admin",
  "DELETE /api/agents/:name/evals/cases/:caseId": "admin",
  "POST /api/agents/:name/evals/import": "admin",
  "GET /api/agents/:name/evals/export": "read",
  "POST /api/agents/:name/evals/runs": "sessions",
  "GET /api/agents/:name/evals/runs": "read",
  "GET /api/eval-runs/:id": "read",
  "PATCH /api/eval-runs/:id/results/:caseId": "admin",
  "GET /api/eval-runs/:id/compare/:other": "read",

  "GET /api/api-keys": "admin",
  "POST /api/api-keys": "admin",
  "DELETE /api/api-keys/:id": "admin",
  "PATCH /api/api-keys/:id": "admin",
  "GET /api/tenants": "operator",
  "POST /api/tenants": "operator",
  "GET /api/tenants/:id": "admin",
  "PATCH /api/tenants/:id": "operator",
  "GET /api/credentials": "admin",
  "POST /api/credentials": "admin",
  "DELETE /api/credentials/:id": "admin",

  // The Managed Agents API (/v1): the same objects as /api, so the same scopes.
  "POST /v1/agents": "admin",
  "GET /v1/agents": "read",
  "GET /v1/agents/:id": "read",
  "POST /v1/agents/:id": "admin",
  "POST /v1/agents/:id/archive": "admin",
  "GET /v1/agents/:id/versions": "read",
  // Environments are what sessions run in: the tenant admin's, like agents.
  "POST /v1/environments": "admin",
  "GET /v1/environments": "read",
  "GET /v1/environments/:id": "read",
  "POST /v1/environments/:id": "admin",
  "POST /v1/environments/:id/archive": "admin",
  "DELETE /v1/environments/:id": "admin",
  "POST /v1/sessions": "sessions",
  "GET /v1/sessions": "read",
  "GET /v1/sessions/:id": "read",
  "POST /v1/sessions/:id": "sessions",
  "DELETE /v1/sessions/:id": "sessions",
  "POST /v1/sessions/:id/archive": "sessions",
  "GET /v1/sessions/:id/events": "read",
  "POST /v1/sessions/:id/events": "sessions",
  "GET /v1/sessions/:id/events/stream": "read",
  "POST /v1/files": "sessions",
  "GET /v1/files": "read",
  "GET /v1/files/:id": "read",
  "GET /v1/files/:id/content": "read",
  "DELETE /v1/files/:id": "sessions",
};

export function accessOf(method: string, route: string | undefined): RouteAccess | undefined {
  return route === undefined ? undefined : ROUTE_ACCESS[`${method} ${route}`];
}
