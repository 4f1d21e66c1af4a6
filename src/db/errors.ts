/**
 * Classifying driver errors: which mean "the database cannot be reached"
 * (answer 503, try again later), which mean "retry the transaction", and
 * which are unique-key conflicts. Works on errors from `pg` and `better-sqlite3`.
 */

/** The database server cannot be reached right now; the request may be retried later. */
export class DatabaseUnavailableError extends Error {
  override name = "DatabaseUnavailableError";
  code = "DATABASE_UNAVAILABLE";

  constructor(cause: unknown, message = `database unavailable: ${describeUnavailability(cause)}`) {
    super(message, { cause });
  }
}

/**
 * A transaction kept conflicting with concurrent ones (serialization failures,
 * deadlocks, SQLite busy) until its retries ran out. Like an outage, the request
 * can succeed later, so it is a DatabaseUnavailableError (503) too.
 */
export class DatabaseBusyError extends DatabaseUnavailableError {
  override name = "DatabaseBusyError";
  override code = "DATABASE_BUSY";

  constructor(cause: unknown, attempts: number) {
    const code = (cause as { code?: unknown } | null)?.code;
    super(cause, `database busy: the transaction conflicted with concurrent ones ${attempts} times in a row${typeof code === "string" ? ` (${code})` : ""}`);
  }
}

type ErrorLike = { code?: unknown; message?: unknown; cause?: unknown; errors?: unknown };

/** The error itself, then its `cause` chain and any AggregateError members. */
function* related(err: unknown, depth = 0): Generator<ErrorLike> {
  if (depth > 4 || err === null || typeof err !== "object") return;
  const e = err as ErrorLike;
  yield e;
  if (Array.isArray(e.errors)) for (const inner of e.errors) yield* related(inner, depth + 1);
  if (e.cause !== undefined) yield* related(e.cause, depth + 1);
}

function codeOf(e: ErrorLike): string {
  return typeof e.code === "string" ? e.code : "";
}

function messageOf(e: ErrorLike): string {
  return typeof e.message === "string" ? e.message : "";
}

/** Socket-level failures Node reports while connecting to or talking with a server. */
const NETWORK_CODES: Record<string, string> = {
  ECONNREFUSED: "connection refused",
  ECONNRESET: "connection reset",
  ECONNABORTED: "connection aborted",
  EPIPE: "connection closed",
  ETIMEDOUT: "connection timed out",
  EHOSTUNREACH: "host unreachable",
  ENETUNREACH: "network unreachable",
  ENOTFOUND: "host not found",
  EAI_AGAIN: "host not found",
};

/** SQLSTATEs outside class 08 that still mean the server is not serving us. */
const UNAVAILABLE_SQLSTATES: Record<string, string> = {
  "57P01": "server shutting down",
  "57P02": "server crashed",
  "57P03": "server starting up",
  "53300": "too many connections",
};

/** Messages `pg` and `pg-pool` use for connections that died or never opened. */
const UNAVAILABLE_MESSAGES: Array<[RegExp, string]> = [
  [/^Connection terminated/i, "connection terminated"],
  [/timeout exceeded when trying to connect/i, "connection timed out"],
  [/^timeout expired$/i, "connection timed out"],
  [/not queryable/i, "connection lost"],
];

function unavailabilityReason(e: ErrorLike): string | undefined {
  const code = codeOf(e);
  if (NETWORK_CODES[code]) return NETWORK_CODES[code];
  if (UNAVAILABLE_SQLSTATES[code]) return UNAVAILABLE_SQLSTATES[code];
  if (/^08[0-9A-Z]{3}$/.test(code)) return `connection failure (${code})`;
  const message = messageOf(e);
  for (const [pattern, reason] of UNAVAILABLE_MESSAGES) if (pattern.test(message)) return reason;
  return undefined;
}

/** True when `err` means the PostgreSQL server could not be reached or dropped the connection. */
export function isUnavailableError(err: unknown): boolean {
  if (err instanceof DatabaseUnavailableError) return true;
  for (const e of related(err)) if (unavailabilityReason(e)) return true;
  return false;
}

/** A short human reason such as "connection refused", for logs and error messages. */
export function describeUnavailability(err: unknown): string {
  for (const e of related(err)) {
    const reason = unavailabilityReason(e);
    if (reason) return reason;
  }
  for (const e of related(err)) if (messageOf(e)) return messageOf(e);
  return String(err);
}

/** Wraps connection failures in DatabaseUnavailableError; returns other errors unchanged. */
export function toDatabaseError(err: unknown): unknown {
  if (err instanceof DatabaseUnavailableError) return err;
  return isUnavailableError(err) ? new DatabaseUnavailableError(err) : err;
}

/** A unique or primary-key constraint rejected the write, on SQLite or PostgreSQL/CockroachDB. */
export function isUniqueViolation(err: unknown): boolean {
  for (const e of related(err)) {
    const code = codeOf(e);
    if (code === "23505" || code === "SQLITE_CONSTRAINT_UNIQUE" || code === "SQLITE_CONSTRAINT_PRIMARYKEY") {
      return true;
    }
  }
  return false;
}

/**
 * The database refused a value a request carried (PostgreSQL/CockroachDB class
 * 22, "data exception": a NUL byte in text, a number out of a column's range,
 * text where a number goes, a time out of range). SQLite takes such values, so
 * the request is the client's mistake wherever it is refused.
 */
export function isRefusedValue(err: unknown): boolean {
  for (const e of related(err)) {
    const code = codeOf(e);
    if (code.length === 5 && code.startsWith("22")) return true;
  }
  return false;
}

/**
 * PostgreSQL/CockroachDB asked for the transaction to be run again:
 * 40001 serialization failure (CockroachDB's "restart transaction"), 40P01 deadlock.
 */
export function isRetryableTransactionError(err: unknown): boolean {
  for (const e of related(err)) {
    const code = codeOf(e);
    if (code === "40001" || code === "40P01") return true;
  }
  return false;
}

/** SQLite could not take a lock because another connection (another process) holds it. */
export function isSqliteBusy(err: unknown): boolean {
  for (const e of related(err)) if (codeOf(e).startsWith("SQLITE_BUSY")) return true;
  return false;
}
