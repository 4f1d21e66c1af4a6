import { context, diag, DiagLogLevel, SpanStatusCode, trace, type Attributes, type Context, type Span, type Tracer } from "@opentelemetry/api";
import type { ObservabilitySettings } from "./settings";

/**
 * OpenTelemetry tracing, off unless an OTLP endpoint is configured. Off, no
 * SDK module is loaded and every span comes from the API's no-op tracer, so
 * the helpers cost a function call. On, spans are batched and exported over
 * OTLP/HTTP (JSON) by a provider of our own; nothing is registered as the
 * process-wide provider, only the async context manager that lets a span
 * started in one `await` be the parent of spans started in the next.
 */
export interface Tracing {
  readonly enabled: boolean;
  /**
   * Runs `fn` inside a new span (a child of the active one), ends it when
   * `fn` settles, and records a thrown error on it (status ERROR) before
   * rethrowing.
   */
  withSpan<T>(name: string, attributes: Attributes, fn: (span: Span) => T | Promise<T>): Promise<T>;
  /** A span the caller ends; its parent is `parent` or the active span. */
  startSpan(name: string, attributes?: Attributes, parent?: Span): Span;
  /** Runs `fn` with `span` as the active span, so spans started inside are its children. */
  withActiveSpan<T>(span: Span, fn: () => T): T;
  /** Marks a span failed with this error (message and stack go through the redactor). */
  recordError(span: Span, error: unknown): void;
  /**
   * Variables for a sandbox's environment: `TRACEPARENT` (and `TRACESTATE`)
   * naming `span` or the active span, so the agent CLI's own spans join this
   * trace; with ASH_SANDBOX_OTEL=true also the settings that turn the CLI's
   * trace export on and point it at the same collector. Empty when off.
   */
  traceparentEnv(span?: Span): Record<string, string>;
  /** Sends every finished span now. */
  flush(timeoutMs?: number): Promise<void>;
  /** Flushes and stops; later spans are dropped. Bounded by `timeoutMs`. */
  shutdown(timeoutMs?: number): Promise<void>;
}

export interface TracingOptions {
  version?: string;
  /** Redacts exception messages and stacks before they leave the process. */
  redact?: (text: string) => string;
  /** Told (at most once a minute) when spans cannot be exported. */
  warn?: (message: string) => void;
  /** How long the exporter waits for the collector per request (default: OTEL_EXPORTER_OTLP_TIMEOUT, else 10 s). */
  exportTimeoutMs?: number;
  /** How often the batch processor sends (default: OTEL_BSP_SCHEDULE_DELAY, else 5 s). */
  scheduledDelayMs?: number;
}

type TracingSettings = ObservabilitySettings["tracing"];

export async function createTracing(settings: TracingSettings, options: TracingOptions = {}): Promise<Tracing> {
  const redact = options.redact ?? ((text: string) => text);
  if (!settings.tracesUrl) return makeTracing(trace.getTracer("ash"), { enabled: false, redact, settings });

  // Loaded only here: a server without an endpoint never loads the SDK.
  const [{ BasicTracerProvider, BatchSpanProcessor }, { OTLPTraceExporter }, { resourceFromAttributes }, { AsyncLocalStorageContextManager }] = await Promise.all([
    import("@opentelemetry/sdk-trace-base"),
    import("@opentelemetry/exporter-trace-otlp-http"),
    import("@opentelemetry/resources"),
    import("@opentelemetry/context-async-hooks"),
  ]);

  // Without a context manager `context.with` is a no-op and every span is a root.
  const manager = new AsyncLocalStorageContextManager().enable();
  // False when one is registered already (a second tracer in the same process): that one serves both.
  if (!context.setGlobalContextManager(manager)) manager.disable();
  if (options.warn) installDiagnostics((message) => options.warn!(redact(message)));

  // Timeouts and batching left unset here fall back to the SDK's own OTEL_* variables and defaults.
  const exporter = new OTLPTraceExporter({
    url: settings.tracesUrl,
    headers: settings.headers,
    ...(options.exportTimeoutMs !== undefined ? { timeoutMillis: options.exportTimeoutMs } : {}),
  });
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({
      ...settings.resourceAttributes,
      "service.name": settings.serviceName,
      ...(options.version ? { "service.version": options.version } : {}),
    }),
    spanProcessors: [
      new BatchSpanProcessor(exporter, {
        ...(options.scheduledDelayMs !== undefined ? { scheduledDelayMillis: options.scheduledDelayMs } : {}),
        ...(options.exportTimeoutMs !== undefined ? { exportTimeoutMillis: options.exportTimeoutMs } : {}),
      }),
    ],
  });
  return makeTracing(provider.getTracer("ash", options.version), {
    enabled: true,
    redact,
    settings,
    flush: (timeoutMs) => provider.forceFlush({ timeoutMillis: timeoutMs }),
    shutdown: () => provider.shutdown(),
  });
}

function makeTracing(
  tracer: Tracer,
  o: {
    enabled: boolean;
    redact: (text: string) => string;
    settings: TracingSettings;
    flush?: (timeoutMs: number) => Promise<void>;
    shutdown?: () => Promise<void>;
  },
): Tracing {
  let stopped: Promise<void> | undefined;

  const recordError = (span: Span, error: unknown) => {
    const e = error instanceof Error ? error : new Error(String(error));
    span.addEvent("exception", {
      "exception.type": e.name,
      "exception.message": o.redact(e.message),
      ...(e.stack ? { "exception.stacktrace": o.redact(e.stack) } : {}),
    });
    span.setStatus({ code: SpanStatusCode.ERROR, message: o.redact(e.message) });
  };

  const parentContext = (parent?: Span): Context => (parent ? trace.setSpan(context.active(), parent) : context.active());

  return {
    enabled: o.enabled,
    async withSpan(name, attributes, fn) {
      const span = tracer.startSpan(name, { attributes }, context.active());
      try {
        return await context.with(trace.setSpan(context.active(), span), () => fn(span));
      } catch (error) {
        recordError(span, error);
        throw error;
      } finally {
        span.end();
      }
    },
    startSpan(name, attributes, parent) {
      return tracer.startSpan(name, { attributes }, parentContext(parent));
    },
    withActiveSpan(span, fn) {
      return context.with(trace.setSpan(context.active(), span), fn);
    },
    recordError,
    traceparentEnv(span) {
      if (!o.enabled) return {};
      const env: Record<string, string> = {};
      const target = span ?? trace.getActiveSpan();
      const sc = target?.spanContext();
      if (sc && trace.isSpanContextValid(sc)) {
        env.TRACEPARENT = `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & 0xff).toString(16).padStart(2, "0")}`;
        const state = sc.traceState?.serialize();
        if (state) env.TRACESTATE = state;
      }
      if (o.settings.sandboxExport) {
        // The CLI's own switches for OpenTelemetry export and its (beta) spans.
        env.CLAUDE_CODE_ENABLE_TELEMETRY = "1";
        env.CLAUDE_CODE_ENHANCED_TELEMETRY_BETA = "1";
        env.OTEL_TRACES_EXPORTER = "otlp";
        Object.assign(env, o.settings.sandboxEnv);
      }
      return env;
    },
    async flush(timeoutMs = 5000) {
      if (o.flush && !stopped) await withDeadline(o.flush(timeoutMs), timeoutMs);
    },
    shutdown(timeoutMs = 5000) {
      return (stopped ??= o.shutdown ? withDeadline(o.shutdown(), timeoutMs) : Promise.resolve());
    },
  };
}

/** The SDK reports export failures through `diag`; pass them on, at most once a minute. */
function installDiagnostics(warn: (message: string) => void): void {
  let last = 0;
  const report = (message: string, ...args: unknown[]) => {
    const now = Date.now();
    if (now - last < 60_000) return;
    last = now;
    const detail = args.map((a) => (a instanceof Error ? a.message : typeof a === "string" ? a : "")).filter(Boolean).join(" ");
    warn(`tracing: ${message}${detail ? ` ${detail}` : ""}`);
  };
  const quiet = () => undefined;
  diag.setLogger({ error: report, warn: report, info: quiet, debug: quiet, verbose: quiet }, { logLevel: DiagLogLevel.WARN, suppressOverrideMessage: true });
}

function withDeadline(promise: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise.catch(() => undefined),
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, ms);
      timer.unref();
    }),
  ]).finally(() => clearTimeout(timer));
}
