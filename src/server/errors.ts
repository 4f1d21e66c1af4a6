import { HTTPError } from "h3";
import { isRefusedValue, isUnavailableError } from "../db/errors";

import { DomainError, type DomainErrorKind } from "../errors";

/**
 * Every error answer is `{"error": "<sentence>", "statusCode": n}` (API.md).
 * Handlers and the layers below throw DomainErrors; the app's error hook turns
 * them into the body here, the one place that knows their HTTP status.
 */
export { badRequest, conflict, forbidden, gone, notFound, rateLimited, shuttingDown, tooLarge, unavailable, unprocessable } from "../errors";

const STATUS: Record<DomainErrorKind, number> = {
  invalid: 400,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  gone: 410,
  too_large: 413,
  unprocessable: 422,
  rate_limited: 429,
  capacity: 503,
};

export function errorResponse(statusCode: number, message: string, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify({ error: message, statusCode }), {
    status: statusCode,
    headers: { "content-type": "application/json; charset=utf-8", ...headers },
  });
}

/** Maps anything thrown to the contract's error answer; only real bugs become 500. */
export function toErrorResponse(error: unknown, log: (error: unknown) => void): Response {
  const cause = error instanceof HTTPError && (error as any).cause ? (error as any).cause : error;
  if (cause instanceof DomainError) {
    const headers: Record<string, string> = cause.retryAfterSeconds === undefined ? {} : { "retry-after": String(cause.retryAfterSeconds) };
    return errorResponse(STATUS[cause.kind], cause.message, headers);
  }
  if (isUnavailableError(cause)) {
    return errorResponse(503, "The database is not reachable right now; try again shortly.", { "retry-after": "5" });
  }
  if (isRefusedValue(cause)) {
    // Only a request's own values reach a query unchecked this way (a NUL byte, a number past a column's range).
    return errorResponse(400, "The request holds a value the database cannot store or compare (a NUL character, or a number out of range).");
  }
  if (error instanceof HTTPError && error.status && error.status < 500) {
    const message = error.status === 404 ? "No such route." : error.status === 405 ? "Method not allowed on this route." : error.message;
    return errorResponse(error.status, message);
  }
  log(cause);
  return errorResponse(500, "Internal server error.");
}
