import { SpanStatusCode, type Span } from "@opentelemetry/api";
import { LIMIT_KINDS, turnOutcomeOf, type LimitKind, type Metrics, type TurnOutcome } from "./metrics";
import type { Tracing } from "./tracing";

/** A stream event as the session layer stores it (`{type, data}`). */
export interface ObservedEvent {
  type: string;
  data?: unknown;
}

export interface TurnSummary {
  outcome: TurnOutcome;
  durationMs: number;
  firstEventMs?: number;
  toolCalls: number;
  inputTokens?: number;
  outputTokens?: number;
}

/**
 * Follows one turn through its stream events: a `turn` span with a
 * `tool.<name>` child per tool call, the time to the first text, thinking or
 * tool event, token usage from `turn_complete`, and at the end the outcome,
 * counted in the metrics (a limit kill also in `ash_limit_kills_total`).
 */
export class TurnObserver {
  readonly span: Span;
  private readonly startedAt = performance.now();
  private firstEventAt?: number;
  private readonly tools = new Map<string, Span>();
  private readonly seen: ObservedEvent[] = [];
  private toolCalls = 0;
  private usage?: { input_tokens?: number; output_tokens?: number; cache_read_input_tokens?: number; cache_creation_input_tokens?: number };
  private summary?: TurnSummary;

  constructor(
    private readonly deps: { metrics: Metrics; tracing: Tracing },
    turn: { sessionId: string; agent: string; model?: string },
  ) {
    this.span = deps.tracing.startSpan("turn", {
      "ash.session_id": turn.sessionId,
      "ash.agent": turn.agent,
      ...(turn.model ? { "gen_ai.request.model": turn.model } : {}),
    });
  }

  /** Each event of the turn, in order, as it is stored. */
  event(event: ObservedEvent): void {
    if (this.summary) return;
    const data = (event.data ?? {}) as Record<string, any>;
    if (this.firstEventAt === undefined && isFirstOutput(event)) this.firstEventAt = performance.now();
    switch (event.type) {
      case "tool_use": {
        this.toolCalls++;
        const name = typeof data.name === "string" ? data.name : "unknown";
        const span = this.deps.tracing.startSpan(`tool.${spanSafe(name)}`, { "ash.tool.name": name, "ash.tool.use_id": String(data.id ?? "") }, this.span);
        if (typeof data.id === "string") this.tools.set(data.id, span);
        else span.end();
        break;
      }
      case "tool_result": {
        const span = this.tools.get(String(data.tool_use_id));
        if (span) {
          if (data.is_error) span.setStatus({ code: SpanStatusCode.ERROR, message: "the tool reported an error" });
          span.end();
          this.tools.delete(String(data.tool_use_id));
        }
        break;
      }
      case "turn_complete":
        if (data.usage && typeof data.usage === "object") this.usage = data.usage;
        this.seen.push(event);
        break;
      case "error":
        this.seen.push(event);
        break;
    }
  }

  /** The turn is over (after its final events, before `done`). Safe to call twice. */
  end(): TurnSummary {
    if (this.summary) return this.summary;
    const outcome = turnOutcomeOf(this.seen);
    const durationMs = performance.now() - this.startedAt;
    const firstEventMs = this.firstEventAt === undefined ? undefined : this.firstEventAt - this.startedAt;
    this.summary = {
      outcome,
      durationMs,
      firstEventMs,
      toolCalls: this.toolCalls,
      inputTokens: numberOrUndefined(this.usage?.input_tokens),
      outputTokens: numberOrUndefined(this.usage?.output_tokens),
    };

    for (const span of this.tools.values()) {
      // A tool call the turn never saw finish (interrupt, crash, limit).
      span.setStatus({ code: SpanStatusCode.ERROR, message: `the turn ended (${outcome}) before the tool finished` });
      span.end();
    }
    this.tools.clear();

    this.span.setAttributes({
      "ash.outcome": outcome,
      "ash.tool_calls": this.toolCalls,
      ...(this.summary.inputTokens !== undefined ? { "gen_ai.usage.input_tokens": this.summary.inputTokens } : {}),
      ...(this.summary.outputTokens !== undefined ? { "gen_ai.usage.output_tokens": this.summary.outputTokens } : {}),
      ...(numberOrUndefined(this.usage?.cache_read_input_tokens) !== undefined ? { "ash.usage.cache_read_input_tokens": this.usage!.cache_read_input_tokens! } : {}),
      ...(firstEventMs !== undefined ? { "ash.first_event_ms": Math.round(firstEventMs) } : {}),
    });
    if (outcome !== "complete") this.span.setStatus({ code: SpanStatusCode.ERROR, message: outcome });
    this.span.end();

    this.deps.metrics.turnFinished({ outcome, durationMs, firstEventMs });
    if ((LIMIT_KINDS as readonly string[]).includes(outcome)) this.deps.metrics.limitKilled(outcome as LimitKind);
    return this.summary;
  }
}

function isFirstOutput(event: ObservedEvent): boolean {
  if (event.type === "text_delta" || event.type === "thinking_delta" || event.type === "tool_use") return true;
  // Without partial messages the first output is the first assistant message.
  return event.type === "message" && (event.data as { type?: string } | undefined)?.type === "assistant";
}

/** Tool names become part of a span name: keep them short and plain. */
function spanSafe(name: string): string {
  return name.replace(/[^A-Za-z0-9_.:-]/g, "_").slice(0, 64) || "unknown";
}

function numberOrUndefined(value: unknown): number | undefined {
  return typeof value === "number" && Number.isFinite(value) ? value : undefined;
}
