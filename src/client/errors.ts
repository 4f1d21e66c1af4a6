/** Every error the client throws on purpose is an `AshError`, so callers can tell ours from theirs. */
export class AshError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The server answered with an error status; `message` is the server's own sentence. */
export class AshApiError extends AshError {
  /** HTTP status, e.g. 401, 404, 409, 410, 503. */
  readonly statusCode: number;
  /** Seconds the server asked us to wait (sent with 503), when it said so. */
  readonly retryAfter?: number;
  /** Method and path of the request that failed, e.g. `POST /api/sessions`. */
  readonly request: string;

  constructor(statusCode: number, message: string, request: string, retryAfter?: number) {
    super(message);
    this.statusCode = statusCode;
    this.request = request;
    this.retryAfter = retryAfter;
  }
}

/** Nothing answered at the server's address (connection refused, unknown host, reset before an answer). */
export class AshConnectionError extends AshError {
  /** The server address we tried, without a path. */
  readonly url: string;
  /** The network error code, e.g. `ECONNREFUSED`, when the platform gave one. */
  readonly code?: string;

  constructor(url: string, code: string | undefined, cause: unknown) {
    super(`No Ash server answers at ${url}${code ? ` (${code})` : ""}.`, { cause });
    this.url = url;
    this.code = code;
  }
}

/**
 * An event stream broke and could not be picked up again: either nothing had arrived yet
 * (so there is no position to resume from) or every reconnect attempt failed.
 */
export class AshStreamError extends AshError {
  /** The id of the last event received, the point a later `streamEvents` call can resume from. */
  readonly lastEventId?: number;

  constructor(message: string, lastEventId: number | undefined, cause?: unknown) {
    super(message, { cause });
    this.lastEventId = lastEventId;
  }
}

/** Network error codes that mean "no server there" rather than "the server failed". */
const UNREACHABLE_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ETIMEDOUT",
  "EPIPE",
  "UND_ERR_CONNECT_TIMEOUT",
  "UND_ERR_SOCKET",
]);

/**
 * Node's fetch reports network failures as `TypeError("fetch failed")` with the socket error
 * as `cause` (an `AggregateError` when several addresses were tried, as for `localhost`).
 * Returns the error code when `error` is such a failure, `undefined` otherwise.
 */
export function networkErrorCode(error: unknown): string | undefined {
  if (!(error instanceof Error)) return undefined;
  if (error.name === "AbortError") return undefined;
  const seen = new Set<unknown>();
  let current: any = error;
  while (current && typeof current === "object" && !seen.has(current)) {
    seen.add(current);
    if (typeof current.code === "string" && UNREACHABLE_CODES.has(current.code)) return current.code;
    if (Array.isArray(current.errors)) {
      const inner = current.errors.find((e: any) => typeof e?.code === "string" && UNREACHABLE_CODES.has(e.code));
      if (inner) return inner.code;
    }
    current = current.cause;
  }
  // "fetch failed" without a recognised code is still a transport failure.
  if (error instanceof TypeError && /fetch failed|terminated|other side closed/i.test(error.message)) return "ECONNRESET";
  return undefined;
}
