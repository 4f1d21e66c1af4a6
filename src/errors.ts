/**
 * What the domain says went wrong, in its own words: not found, conflict, gone,
 * bad input, a request that cannot be served, too large, no capacity. Lower
 * layers (agents, sandbox, sessions) throw these; the server maps each kind to
 * its HTTP status in one place (src/server/errors.ts).
 */
export type DomainErrorKind = "invalid" | "forbidden" | "not_found" | "conflict" | "gone" | "too_large" | "unprocessable" | "rate_limited" | "capacity";

export class DomainError extends Error {
  override name = "DomainError";
  constructor(
    readonly kind: DomainErrorKind,
    message: string,
    /** For "capacity" and "rate_limited": when to try again. */
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
  }
}

export const badRequest = (message: string) => new DomainError("invalid", message);
export const notFound = (message: string) => new DomainError("not_found", message);
export const conflict = (message: string) => new DomainError("conflict", message);
export const gone = (message: string) => new DomainError("gone", message);
export const tooLarge = (message: string) => new DomainError("too_large", message);
export const unprocessable = (message: string) => new DomainError("unprocessable", message);
export const unavailable = (message: string, retryAfterSeconds = 5) => new DomainError("capacity", message, retryAfterSeconds);
/** A server that is shutting down starts nothing new: the client sends the request again (another server takes it). */
export const shuttingDown = () => unavailable("This server is shutting down and starts nothing new; send the request again (another server takes it).", 1);
export const forbidden = (message: string) => new DomainError("forbidden", message);
export const rateLimited = (message: string, retryAfterSeconds: number) => new DomainError("rate_limited", message, retryAfterSeconds);
