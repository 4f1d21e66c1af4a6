import { HTTPError } from "h3";
import { isUnavailableError } from "../db/errors";

/**
 * Every error answer is `{"error": "<sentence>", "statusCode": n}` (API.md).
 * Handlers throw these; the app's error hook turns them into the body.
 */
export class ApiError extends Error {
  constructor(
    readonly statusCode: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

export const badRequest = (message: string) => new ApiError(400, message);
export const notFound = (message: string) => new ApiError(404, message);
export const conflict = (message: string) => new ApiError(409, message);
export const gone = (message: string) => new ApiError(410, message);
export const tooLarge = (message: string) => new ApiError(413, message);
export const unprocessable = (message: string) => new ApiError(422, message);
export const unavailable = (message: string, retryAfterSeconds = 5) =>
  new ApiError(503, message, { "retry-after": String(retryAfterSeconds) });

export function errorResponse(statusCode: number, message: string, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify({ error: message, statusCode }), {
    status: statusCode,
    headers: { "content-type": "application/json; charset=utf-8", ...headers },
  });
}

/** Maps anything thrown to the contract's error answer; only real bugs become 500. */
export function toErrorResponse(error: unknown, log: (error: unknown) => void): Response {
  const cause = error instanceof HTTPError && (error as any).cause ? (error as any).cause : error;
  if (cause instanceof ApiError) return errorResponse(cause.statusCode, cause.message, cause.headers);
  if (isUnavailableError(cause)) {
    return errorResponse(503, "The database is not reachable right now; try again shortly.", { "retry-after": "5" });
  }
  if (error instanceof HTTPError && error.status && error.status < 500) {
    const message = error.status === 404 ? "No such route." : error.status === 405 ? "Method not allowed on this route." : error.message;
    return errorResponse(error.status, message);
  }
  log(cause);
  return errorResponse(500, "Internal server error.");
}
