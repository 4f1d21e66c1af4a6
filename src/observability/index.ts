import { Metrics } from "./metrics";
import { createRedactor } from "./redact";
import { readObservabilitySettings, type ObservabilitySettings } from "./settings";
import { createTelemetry, disabledTelemetry, type Telemetry } from "./telemetry";
import { createTracing, type Tracing } from "./tracing";
import { observeHttp, type HttpObserver } from "./http";
import { TurnObserver } from "./turn";

export { Metrics, turnOutcomeOf, type TurnOutcome, type EvictionReason, type ResumeSource, type LimitKind } from "./metrics";
export { configureLogging, type LoggingConfig } from "./logger";
export { createRedactor } from "./redact";
export { readObservabilitySettings, type ObservabilitySettings } from "./settings";
export type { Telemetry, TelemetryEvent } from "./telemetry";
export type { Tracing } from "./tracing";
export type { HttpObserver } from "./http";
export { TurnObserver, type TurnSummary } from "./turn";
export { observeDatabase } from "./database";
export { installUnexpectedErrorHandlers } from "./unexpected-errors";

type Env = Record<string, string | undefined>;

/** Metrics, traces and event telemetry for one server process. */
export interface Observability {
  settings: ObservabilitySettings;
  metrics: Metrics;
  tracing: Tracing;
  telemetry: Telemetry;
  /** H3 hooks and middleware that count and trace every request. */
  http: HttpObserver;
  /** Masks secrets (keys, tokens, URL passwords) in text bound for telemetry or a span. */
  redact(text: string): string;
  /** Starts following one turn (see TurnObserver). */
  observeTurn(turn: { sessionId: string; agent: string; model?: string }): TurnObserver;
  /** Sends what is pending (spans, events) and stops, within `timeoutMs`. */
  shutdown(timeoutMs?: number): Promise<void>;
}

export interface ObservabilityOptions {
  version?: string;
  /** Where delivery trouble is reported (a logger's warn). */
  warn?: (message: string) => void;
}

/**
 * Everything observability needs, from the environment. Throws ConfigError
 * (with the variable's name) on a bad value. Tracing loads the OpenTelemetry
 * SDK only when an OTLP endpoint is set; telemetry sends only when
 * ASH_TELEMETRY_URL is set; metrics are always kept (they are cheap) and
 * served by GET /metrics.
 */
export async function createObservability(env: Env = process.env, options: ObservabilityOptions = {}): Promise<Observability> {
  const settings = readObservabilitySettings(env);
  const redact = createRedactor(env);
  const metrics = new Metrics({
    version: options.version,
    onCollectError: (metric, error) => options.warn?.(redact(`metrics: reading ${metric} failed: ${error instanceof Error ? error.message : String(error)}`)),
  });
  const tracing = await createTracing(settings.tracing, { version: options.version, redact, warn: options.warn });
  const telemetry = settings.telemetry.url
    ? createTelemetry({
        url: settings.telemetry.url,
        token: settings.telemetry.token,
        userAgent: `ash/${options.version ?? "unknown"}`,
        onSent: (count) => metrics.telemetrySent(count),
        onDropped: (count) => metrics.telemetryDropped(count),
        warn: options.warn,
      })
    : disabledTelemetry();
  metrics.collectTelemetryQueue(() => telemetry.stats().queued);

  let stopping: Promise<void> | undefined;
  return {
    settings,
    metrics,
    tracing,
    telemetry,
    http: observeHttp({ metrics, tracing }),
    redact,
    observeTurn: (turn) => new TurnObserver({ metrics, tracing }, turn),
    shutdown: (timeoutMs = 5000) => (stopping ??= Promise.all([telemetry.shutdown(timeoutMs), tracing.shutdown(timeoutMs)]).then(() => undefined)),
  };
}
