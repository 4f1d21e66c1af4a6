import { Registry, type GaugeSample } from "./registry";
import { SESSION_STATES, SESSION_STATUSES, type SessionState, type SessionStatus } from "../contract";

/**
 * Ash's metrics, named for what happened ("a turn finished", "a sandbox was
 * evicted"), so call sites read like the event and the label sets stay small.
 * Label values come from fixed lists; anything else is counted as "other",
 * so a stray value can never grow the number of series.
 */

export const TURN_OUTCOMES = [
  "complete",
  "interrupted",
  "model_error",
  "model_timeout",
  "max_turns",
  "sandbox_oom",
  "sandbox_pids",
  "sandbox_disk",
  "sandbox_crashed",
  "server_shutdown",
  "server_lost",
  "budget_exceeded",
  "error",
] as const;
export type TurnOutcome = (typeof TURN_OUTCOMES)[number];

/** Why a sandbox went away: idle or capacity eviction, pause, stop, session end, server shutdown, or its process died. */
export const EVICTION_REASONS = ["idle", "capacity", "pause", "stop", "end", "shutdown", "crash", "lease_lost"] as const;
export type EvictionReason = (typeof EVICTION_REASONS)[number];

export const RESUME_SOURCES = ["snapshot", "fresh"] as const;
export const SNAPSHOT_LISTINGS = ["changes", "everything"] as const;
export type SnapshotListing = (typeof SNAPSHOT_LISTINGS)[number];
export type ResumeSource = (typeof RESUME_SOURCES)[number];

export const LIMIT_KINDS = ["sandbox_oom", "sandbox_pids", "sandbox_disk"] as const;
export type LimitKind = (typeof LIMIT_KINDS)[number];

export const SANDBOX_STATES = ["busy", "idle", "evicted"] as const;
export { SESSION_STATUSES };

/** Errors nothing was waiting for: a rejected promise nobody handled, an exception nothing caught, a request answered 500. */
export const UNEXPECTED_ERROR_KINDS = ["rejection", "exception", "request"] as const;
export type UnexpectedErrorKind = (typeof UNEXPECTED_ERROR_KINDS)[number];

const HTTP_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/** Sandboxes by state: `busy` (running a turn), `idle` (live, no turn), `evicted` (not ended, no live sandbox). */
export type SandboxCounts = { busy: number; idle: number; evicted: number };
export type SessionCounts = Partial<Record<SessionStatus, number>>;
export type SessionStateCounts = Record<SessionState, number>;
/** The agent process start queue: starts running, waiting (sessions' and spares'), and the most that ever ran at once. */
export type StartCounts = { running: number; queued: number; queuedSpares: number; peak: number };
type Source<T> = () => T | Promise<T>;

const SECONDS = (ms: number) => Math.max(0, ms) / 1000;

export interface MetricsOptions {
  version?: string;
  collectTimeoutMs?: number;
  onCollectError?: (metric: string, error: unknown) => void;
}

export class Metrics {
  readonly registry: Registry;

  private readonly turns;
  private readonly turnDuration;
  private readonly turnFirstEvent;
  private readonly evictions;
  private readonly resumes;
  private readonly resumeHits;
  private readonly sandboxStart;
  private readonly snapshotBytes;
  private readonly snapshotDuration;
  private readonly snapshotSaves;
  private readonly limitKills;
  private readonly httpRequests;
  private readonly httpDuration;
  private readonly databaseErrors;
  private readonly telemetrySentTotal;
  private readonly telemetryDroppedTotal;
  private readonly sandboxes;
  private readonly sessions;
  private readonly telemetryQueue;
  private readonly modelTokensTotal;
  private readonly gatewayRejectedTotal;
  private readonly budgetRefusalsTotal;
  private readonly egressTotal;
  private readonly unexpectedErrors;
  private readonly sessionStates;
  private readonly agentStarts;
  private readonly agentStartsPeak;
  private readonly agentStartTime;
  private readonly wakes;

  constructor(options: MetricsOptions = {}) {
    const r = (this.registry = new Registry({ collectTimeoutMs: options.collectTimeoutMs, onCollectError: options.onCollectError }));

    r.gauge("ash_build_info", "Always 1; the version label says which Ash is running.", ["version"]).set({ version: options.version ?? "unknown" }, 1);
    this.sandboxes = r.gauge("ash_sandboxes", "Sandboxes by state: busy (running a turn), idle (live, no turn), evicted (session not ended, no live sandbox).", ["state"]);
    this.sessions = r.gauge("ash_sessions", "Sessions by status.", ["status"]);
    this.sessionStates = r.gauge("ash_session_states", "Open sessions by where their processes are: hot (agent process running), idle (only the sandbox kept), asleep (workspace saved, nothing running).", ["state"]);
    this.agentStarts = r.gauge("ash_agent_starts", "Agent processes starting (running: spawned, start-up not over; queued: waiting for a slot, for a session or a spare).", ["state"]);
    this.agentStartsPeak = r.gauge("ash_agent_starts_peak", "The most agent processes that were ever starting at once (at most ASH_START_CONCURRENCY).");
    this.agentStartTime = r.histogram(
      "ash_agent_start_seconds",
      "Agent process starts: time waiting for a start slot (queued), then from the spawn until its start-up was over or failed (starting), for a session or a spare. Starts near ASH_AGENT_START_TIMEOUT_MS mean a machine short of CPU.",
      ["phase", "priority"],
      [0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120],
    );
    this.wakes = r.counter("ash_agent_restarts_total", "Agent processes started again for an idle session (its sandbox kept, no restore).");
    this.wakes.inc(undefined, 0);
    this.turns = r.counter("ash_turns_total", "Turns finished, by outcome (complete, or the error code the turn ended with).", ["outcome"]);
    this.turnDuration = r.histogram("ash_turn_duration_seconds", "Time from the start of a turn (its sandbox up) to its end, the workspace saved.", [], [0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800]);
    this.turnFirstEvent = r.histogram(
      "ash_turn_first_event_seconds",
      "Time from the start of a turn to its first text, thinking or tool event.",
      [],
      [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60],
    );
    this.evictions = r.counter("ash_evictions_total", "Sandboxes taken down, by reason (idle, capacity, pause, stop, end, shutdown, crash).", ["reason"]);
    this.resumes = r.counter("ash_resumes_total", "Sessions brought back to a live sandbox, by where the workspace came from.", ["from"]);
    this.resumeHits = r.counter(
      "ash_resume_hits_total",
      "Resumes by whether the session's sandbox was still up (warm) or had to be started again (cold).",
      ["kind"],
    );
    this.sandboxStart = r.histogram(
      "ash_sandbox_start_duration_seconds",
      "Time to bring a session's sandbox and agent process up, restore included.",
      [],
      [0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60],
    );
    this.snapshotBytes = r.histogram("ash_snapshot_bytes", "Size of saved workspace snapshots.", [], [1024, 65_536, 1_048_576, 16_777_216, 67_108_864, 268_435_456, 1_073_741_824, 4_294_967_296]);
    this.snapshotDuration = r.histogram("ash_snapshot_duration_seconds", "Time to save a workspace snapshot.", [], [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]);
    this.snapshotSaves = r.counter(
      "ash_snapshot_saves_total",
      "Workspace saves by what was listed: changes (only entries changed since the sandbox folder's last save) or everything (a walk of the whole workspace).",
      ["listed"],
    );
    for (const listed of SNAPSHOT_LISTINGS) this.snapshotSaves.inc({ listed }, 0);
    this.limitKills = r.counter("ash_limit_kills_total", "Sandboxes stopped for exceeding a limit, by kind.", ["kind"]);
    this.httpRequests = r.counter("ash_http_requests_total", "HTTP requests answered, by route pattern, method and status.", ["route", "method", "status"]);
    this.httpDuration = r.histogram(
      "ash_http_request_duration_seconds",
      "Time until the response starts (an event stream counts until its headers), by route pattern and method.",
      ["route", "method"],
      [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    );
    this.databaseErrors = r.counter("ash_database_errors_total", "Database operations that failed because the database was unreachable or busy.");
    this.telemetrySentTotal = r.counter("ash_telemetry_sent_total", "Telemetry events delivered to ASH_TELEMETRY_URL.");
    this.telemetryDroppedTotal = r.counter("ash_telemetry_dropped_total", "Telemetry events given up on: buffer full, delivery failed after retries, or left at shutdown.");
    this.telemetryQueue = r.gauge("ash_telemetry_queue_events", "Telemetry events waiting to be sent.");
    this.telemetryQueue.set(undefined, 0);
    this.modelTokensTotal = r.counter("ash_model_tokens_total", "Model tokens the gateway saw in responses, by agent, model and kind (input, output, cache_creation, cache_read).", ["agent", "model", "kind"]);
    this.gatewayRejectedTotal = r.counter("ash_gateway_rejected_total", "Model gateway calls refused for lack of a live session token, by reason (missing, unknown, wrong_sandbox).", ["reason"]);
    this.budgetRefusalsTotal = r.counter("ash_budget_refusals_total", "Model calls the gateway refused because a session's token budget was used up.");
    this.egressTotal = r.counter("ash_egress_connections_total", "Connections sandboxes asked the egress proxies for, by result (allowed, denied).", ["result"]);
    this.unexpectedErrors = r.counter(
      "ash_unhandled_errors_total",
      "Errors nothing handled, by kind: rejection (a promise), exception (uncaught), request (answered 500). The server logs each and keeps serving.",
      ["kind"],
    );
    // Every kind from the start, so an alert on increase() has a zero to begin with.
    for (const kind of UNEXPECTED_ERROR_KINDS) this.unexpectedErrors.inc({ kind }, 0);

    const startSeconds = Math.round(Date.now() / 1000 - process.uptime());
    r.gauge("process_start_time_seconds", "Start time of the process since the Unix epoch, in seconds.").set(undefined, startSeconds);
    r.gauge("process_resident_memory_bytes", "Resident memory size in bytes.", [], () => [{ value: process.memoryUsage.rss() }]);
    r.gauge("process_cpu_seconds_total", "User and system CPU time spent, in seconds.", [], () => {
      const { user, system } = process.cpuUsage();
      return [{ value: (user + system) / 1e6 }];
    });
  }

  /** One turn ended; `firstEventMs` is absent when nothing arrived before the end. */
  turnFinished(turn: { outcome: TurnOutcome | string; durationMs: number; firstEventMs?: number }): void {
    this.turns.inc({ outcome: oneOf(TURN_OUTCOMES, turn.outcome, "error") });
    this.turnDuration.observe(undefined, SECONDS(turn.durationMs));
    if (turn.firstEventMs !== undefined) this.turnFirstEvent.observe(undefined, SECONDS(turn.firstEventMs));
  }

  evicted(reason: EvictionReason): void {
    this.evictions.inc({ reason: oneOf(EVICTION_REASONS, reason, "other") });
  }

  /** A session came back on a new sandbox (a cold resume). */
  resumed(from: ResumeSource): void {
    this.resumes.inc({ from: oneOf(RESUME_SOURCES, from, "other") });
    this.resumeHits.inc({ kind: "cold" });
  }

  /** A resume found the session's sandbox still up: nothing had to start. */
  resumedWarm(): void {
    this.resumeHits.inc({ kind: "warm" });
  }

  /** Resumes since start-up, for /health: `resumeWarmHits`, `resumeColdHits`. */
  resumeCounts(): { resumeWarmHits: number; resumeColdHits: number } {
    return { resumeWarmHits: this.resumeHits.get({ kind: "warm" }), resumeColdHits: this.resumeHits.get({ kind: "cold" }) };
  }

  sandboxStarted(start: { durationMs: number }): void {
    this.sandboxStart.observe(undefined, SECONDS(start.durationMs));
  }

  snapshotTaken(snapshot: { bytes: number; durationMs: number; listed: SnapshotListing }): void {
    this.snapshotBytes.observe(undefined, Math.max(0, snapshot.bytes));
    this.snapshotDuration.observe(undefined, SECONDS(snapshot.durationMs));
    this.snapshotSaves.inc({ listed: oneOf(SNAPSHOT_LISTINGS, snapshot.listed, "everything") });
  }

  limitKilled(kind: LimitKind): void {
    this.limitKills.inc({ kind: oneOf(LIMIT_KINDS, kind, "other") });
  }

  /** `route` is the route pattern (`/api/sessions/:id`), never the raw path. */
  httpRequest(request: { route: string; method: string; status: number; durationMs: number }): void {
    const method = HTTP_METHODS.includes(request.method.toUpperCase()) ? request.method.toUpperCase() : "OTHER";
    const status = Number.isInteger(request.status) && request.status >= 100 && request.status <= 599 ? String(request.status) : "other";
    this.httpRequests.inc({ route: request.route, method, status });
    this.httpDuration.observe({ route: request.route, method }, SECONDS(request.durationMs));
  }

  /** One model response's tokens. */
  modelTokens(agent: string, usage: { model: string; inputTokens: number; outputTokens: number; cacheCreationTokens: number; cacheReadTokens: number }): void {
    const model = usage.model.slice(0, 100);
    const add = (kind: string, value: number) => {
      if (value > 0) this.modelTokensTotal.inc({ agent, model, kind }, value);
    };
    add("input", usage.inputTokens);
    add("output", usage.outputTokens);
    add("cache_creation", usage.cacheCreationTokens);
    add("cache_read", usage.cacheReadTokens);
  }

  gatewayRejected(reason: "missing" | "unknown" | "wrong_sandbox"): void {
    this.gatewayRejectedTotal.inc({ reason: oneOf(["missing", "unknown", "wrong_sandbox"], reason, "other") });
  }

  budgetRefused(): void {
    this.budgetRefusalsTotal.inc();
  }

  egress(allowed: boolean): void {
    this.egressTotal.inc({ result: allowed ? "allowed" : "denied" });
  }

  databaseError(): void {
    this.databaseErrors.inc();
  }

  unexpectedError(kind: UnexpectedErrorKind): void {
    this.unexpectedErrors.inc({ kind: oneOf(UNEXPECTED_ERROR_KINDS, kind, "other") });
  }

  telemetrySent(count: number): void {
    if (count > 0) this.telemetrySentTotal.inc(undefined, count);
  }

  telemetryDropped(count: number): void {
    if (count > 0) this.telemetryDroppedTotal.inc(undefined, count);
  }

  /** Where `ash_sandboxes` is read from on each scrape. */
  collectSandboxes(source: Source<SandboxCounts>): void {
    this.sandboxes.collectWith(async () => {
      const counts = await source();
      return SANDBOX_STATES.map((state): GaugeSample => ({ labels: { state }, value: counts[state] ?? 0 }));
    });
  }

  /** Where `ash_sessions` is read from on each scrape; statuses not reported count 0. */
  collectSessions(source: Source<SessionCounts>): void {
    this.sessions.collectWith(async () => {
      const counts = await source();
      return SESSION_STATUSES.map((status): GaugeSample => ({ labels: { status }, value: counts[status] ?? 0 }));
    });
  }

  /** Where `ash_session_states` is read from on each scrape. */
  collectSessionStates(source: Source<SessionStateCounts>): void {
    this.sessionStates.collectWith(async () => {
      const counts = await source();
      return SESSION_STATES.map((state): GaugeSample => ({ labels: { state }, value: counts[state] ?? 0 }));
    });
  }

  /** Where `ash_agent_starts` and `ash_agent_starts_peak` are read from on each scrape. */
  collectStarts(source: () => StartCounts): void {
    this.agentStarts.collectWith(() => {
      const c = source();
      return [
        { labels: { state: "running" }, value: c.running },
        { labels: { state: "queued" }, value: c.queued - c.queuedSpares },
        { labels: { state: "queued_spare" }, value: c.queuedSpares },
      ];
    });
    this.agentStartsPeak.collectWith(() => [{ value: source().peak }]);
  }

  /** One agent process start waited for its slot (`queued`) or ran its start-up (`starting`) this long. */
  agentStart(phase: "queued" | "starting", ms: number, priority: "session" | "spare"): void {
    this.agentStartTime.observe({ phase, priority }, SECONDS(ms));
  }

  /** An idle session's agent process was started again. */
  woken(): void {
    this.wakes.inc();
  }

  /** Where `ash_telemetry_queue_events` is read from on each scrape. */
  collectTelemetryQueue(source: () => number): void {
    this.telemetryQueue.collectWith(() => [{ value: source() }]);
  }

  render(): Promise<string> {
    return this.registry.render();
  }
}

/**
 * The outcome label of a turn from its last events: the code of its `error`
 * event, or `complete`.
 */
export function turnOutcomeOf(events: ReadonlyArray<{ type: string; data?: unknown }>): TurnOutcome {
  const error = [...events].reverse().find((e) => e.type === "error");
  if (!error) return "complete";
  const code = (error.data as { code?: unknown } | undefined)?.code;
  return oneOf(TURN_OUTCOMES, typeof code === "string" ? code : "error", "error") as TurnOutcome;
}

function oneOf<T extends string>(allowed: readonly T[], value: string, fallback: string): string {
  return (allowed as readonly string[]).includes(value) ? value : fallback;
}
