import { randomUUID } from "node:crypto";
import type { H3Event, Middleware } from "h3";
import { toErrorResponse } from "../errors";

/** Where the Managed Agents API lives: everything under it speaks Anthropic's shapes. */
export const MANAGED_PREFIX = "/v1/";

/** The error `type` the Anthropic SDK maps each status to its typed error by. */
const ERROR_TYPE: Record<number, string> = {
  400: "invalid_request_error",
  401: "authentication_error",
  403: "permission_error",
  404: "not_found_error",
  405: "invalid_request_error",
  409: "invalid_request_error",
  410: "not_found_error",
  413: "request_too_large",
  415: "invalid_request_error",
  422: "invalid_request_error",
  429: "rate_limit_error",
  503: "overloaded_error",
};

export function anthropicError(status: number, message: string, headers: Record<string, string> = {}): Response {
  const type = ERROR_TYPE[status] ?? (status >= 500 ? "api_error" : "invalid_request_error");
  return new Response(JSON.stringify({ type: "error", error: { type, message } }), {
    status,
    headers: { "content-type": "application/json; charset=utf-8", ...headers },
  });
}

/** An /api-shaped error answer (`{error, statusCode}`) in the Anthropic shape, keeping its status and headers. */
async function reshape(response: Response, requestId: string): Promise<Response> {
  let message = response.statusText || "Request failed.";
  try {
    const body = (await response.clone().json()) as { error?: unknown };
    if (typeof body.error === "string") message = body.error;
  } catch {
    // not JSON: keep the status text
  }
  const headers: Record<string, string> = { "request-id": requestId };
  for (const name of ["retry-after", "www-authenticate"]) {
    const value = response.headers.get(name);
    if (value !== null) headers[name] = value;
  }
  return anthropicError(response.status, message, headers);
}

/**
 * Runs first for every /v1 request: gives it a `request-id` (the SDK shows it
 * with every error) and turns every error, whoever answered it (the access
 * check, a handler, the router), into `{type:"error", error:{type, message}}`
 * with the same status, so the SDK raises its typed errors.
 */
export function managedApiErrors(log: (error: unknown) => void): Middleware {
  return async (event: H3Event, next) => {
    if (!event.url.pathname.startsWith(MANAGED_PREFIX)) return next();
    const requestId = `req_${randomUUID().replace(/-/g, "")}`;
    // Answers made here carry it themselves: h3 adds these headers only to the handlers' own.
    event.res.headers.set("request-id", requestId);
    try {
      const result = await next();
      if (typeof result === "symbol") return anthropicError(404, `No such route: ${event.req.method} ${event.url.pathname}.`, { "request-id": requestId });
      if (result instanceof Response && result.status >= 400 && (result.headers.get("content-type") ?? "").includes("json")) return reshape(result, requestId);
      return result;
    } catch (error) {
      return reshape(toErrorResponse(error, log), requestId);
    }
  };
}
