import type { Metrics } from "./metrics";

export interface UnexpectedErrorOptions {
  metrics: Metrics;
  /** Where each error is reported (a logger's error). */
  log: (message: string) => void;
  /** Masks secrets in what is logged. */
  redact?: (text: string) => string;
  /** At most this many errors are logged per minute; the rest are only counted. Default 20. */
  logsPerMinute?: number;
  /** The process to watch (tests pass their own emitter). */
  on?: Pick<NodeJS.Process, "on" | "off">;
}

/**
 * The process-wide policy for errors nothing handled (see
 * docs/decisions/server-unexpected-errors.md): each is logged with its stack
 * and counted in ash_unhandled_errors_total, and the process keeps serving.
 * A flood is not logged line by line: past the per-minute budget only a
 * summary line says how many were left out. Returns the uninstaller.
 */
export function installUnexpectedErrorHandlers(options: UnexpectedErrorOptions): () => void {
  const target = options.on ?? process;
  const redact = options.redact ?? ((text: string) => text);
  const budget = options.logsPerMinute ?? 20;
  let windowStart = Date.now();
  let logged = 0;
  let suppressed = 0;

  const report = (kind: "rejection" | "exception", error: unknown, origin?: string) => {
    options.metrics.unexpectedError(kind);
    const now = Date.now();
    if (now - windowStart >= 60_000) {
      if (suppressed > 0) options.log(`${suppressed} more unexpected error(s) in the last minute were counted but not logged`);
      windowStart = now;
      logged = 0;
      suppressed = 0;
    }
    if (logged >= budget) {
      suppressed++;
      return;
    }
    logged++;
    const what = kind === "rejection" ? "unhandled promise rejection" : `uncaught exception${origin && origin !== "uncaughtException" ? ` (${origin})` : ""}`;
    options.log(redact(`${what}; the server keeps serving: ${describe(error)}`));
  };

  const onRejection = (reason: unknown) => report("rejection", reason);
  const onException = (error: unknown, origin?: string) => report("exception", error, origin);
  target.on("unhandledRejection", onRejection);
  target.on("uncaughtException", onException);
  return () => {
    target.off("unhandledRejection", onRejection);
    target.off("uncaughtException", onException);
  };
}

function describe(error: unknown): string {
  if (error instanceof Error) return error.stack ?? `${error.name}: ${error.message}`;
  try {
    return `a non-error value: ${typeof error === "string" ? error : JSON.stringify(error)}`;
  } catch {
    return `a non-error value of type ${typeof error}`;
  }
}
