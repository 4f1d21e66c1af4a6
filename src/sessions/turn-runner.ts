import { randomUUID } from "node:crypto";
import type { SDKMessage } from "@anthropic-ai/claude-agent-sdk";
import type { ConsolaInstance } from "consola";
import type { ServerConfig } from "../config";
import type { AshDatabase } from "../db/types";
import { updateSession, type SessionRecord } from "../db/queries/sessions";
import { lastMessageSeq } from "../db/queries/messages";
import { lastTranscriptIdx } from "../db/queries/transcripts";
import { hasTranscript } from "../runtime/transcript-store";
import { AgentStartTimeoutError, type TurnOutcome } from "../runtime/agent-session";
import { mapSdkMessage, turnCompleteOf, type StreamEvent, type TurnErrorCode } from "../runtime/stream-events";
import { SnapshotTooLargeError } from "../snapshots";
import type { Observability } from "../observability";
import type { EventLog, PendingMessage } from "./event-log";
import type { AgentProcess } from "./agent-process";
import type { BudgetState, TurnUsage } from "./gateway-accounting";
import { emptyTurnUsage } from "./gateway-accounting";
import type { LimitKillReason, SandboxHandle } from "./types";
import type { CheckpointInput } from "./workspaces";
import type { GatewayGrant } from "../gateway/gateway";

/** How long a CLI asked to stop a turn gets before it is ended. */
export const KILL_GRACE_MS = 5000;

/** What a turn uses of its live session. */
export interface TurnSession {
  session: SessionRecord;
  sandbox: SandboxHandle;
  agent: AgentProcess;
  grant: GatewayGrant;
  budget: BudgetState;
  turnUsage?: TurnUsage;
}

/** One turn while it runs; `interrupted` and `timedOut` say why it ended early. */
export interface RunningTurn {
  done: Promise<void>;
  interrupted: boolean;
  timedOut: boolean;
  /** Stopped because this server lost the session's lease (docs/decisions/cluster-leases.md). */
  lost?: boolean;
  /** Why its agent process was stopped before it finished starting (ASH_AGENT_START_TIMEOUT_MS). */
  startFailed?: string;
  live: TurnSession;
  /** Stops the idle watchdog while a person decides (a held tool use); the returned function lets it run again. */
  holdWatchdog?: () => () => void;
}

export interface TurnInput {
  content: string | unknown[];
  model?: string;
  maxTurns?: number;
  includePartialMessages?: boolean;
}

export interface TurnRunnerOptions {
  config: Pick<ServerConfig, "turnIdleTimeoutMs">;
  db: AshDatabase;
  log: ConsolaInstance;
  observability: Pick<Observability, "observeTurn" | "tracing" | "telemetry">;
  /** Set once the server shuts down: a turn cut off then says so. */
  shuttingDown: () => boolean;
  /** Saves the workspace as the turn's checkpoint. */
  snapshot: (live: TurnSession, checkpoint: CheckpointInput) => Promise<void>;
  /** The agent process died: the session's sandbox goes, and the session takes `status`. */
  exited: (sessionId: string, status: "active" | "error") => Promise<void>;
}

/**
 * Runs one turn into the session's event log: the CLI's messages as events,
 * the idle watchdog, what the outcome means for the user (final events), the
 * checkpoint, and `done` last.
 */
export class TurnRunner {
  constructor(private readonly o: TurnRunnerOptions) {}

  /** `release` ends the session's turn before `done` is written: a client that reads `done` may send the next message at once. */
  async run(turn: RunningTurn, log: EventLog, options: TurnInput, release: () => void): Promise<void> {
    const { live } = turn;
    const { config } = this.o;
    const observer = this.o.observability.observeTurn({ sessionId: live.session.id, agent: live.session.agentName, model: options.model ?? live.session.model ?? undefined });
    const partials = options.includePartialMessages !== false;
    // Asked for in so many words (not the default): also the raw partial messages.
    const rawPartials = options.includePartialMessages === true;
    let lastAppend: Promise<unknown> = Promise.resolve();
    let watchdog: NodeJS.Timeout | undefined;
    // Tool uses waiting for a person: the model is not the one who is slow then.
    let holds = 0;
    const arm = () => {
      clearTimeout(watchdog);
      if (holds > 0) return;
      watchdog = setTimeout(() => {
        turn.timedOut = true;
        this.o.log.warn(`session ${live.session.id}: the model sent nothing for ${config.turnIdleTimeoutMs} ms; ending the turn`);
        void live.agent.interrupt();
        setTimeout(() => void live.agent.close(0), KILL_GRACE_MS).unref();
      }, config.turnIdleTimeoutMs);
    };
    const emit = (events: StreamEvent[], messages: Array<PendingMessage | undefined> = []) => {
      for (const event of events) observer.event(event);
      lastAppend = log.append(events, messages);
      lastAppend.catch((error) => this.o.log.error(`session ${live.session.id}: storing events failed:`, error));
    };

    const hold = () => {
      holds++;
      clearTimeout(watchdog);
      let released = false;
      return () => {
        if (released) return;
        released = true;
        holds--;
        arm();
      };
    };
    turn.holdWatchdog = hold;
    arm();
    live.grant.turnId = randomUUID();
    live.turnUsage = emptyTurnUsage();
    live.budget.exceeded = undefined;
    const countersBefore = live.sandbox.limitCounters();
    let lastUuid: string | null = null;
    let outcome: TurnOutcome;
    // Waiting for a start slot and the process's start-up are not the model's silence (a burst of
    // woken sessions can queue longer than the idle timeout); the start-up has its own bound.
    const starting = hold();
    try {
      const running = live.agent.runTurn(options.content, {
        model: options.model,
        maxTurns: options.maxTurns,
        onMessage: (message) => {
          arm();
          const m = message as { type?: string; uuid?: string; parent_tool_use_id?: string | null };
          // The conversation's position after this turn: its last entry of the main thread.
          if (m.type === "assistant" && typeof m.uuid === "string" && !m.parent_tool_use_id) lastUuid = m.uuid;
          const events = mapSdkMessage(message, { partials, rawPartials });
          emit(events, events.map((e) => (e.type === "message" ? historyMessageOf(message) : undefined)));
        },
      });
      // A start-up past ASH_AGENT_START_TIMEOUT_MS stops the process itself; the outcome says so.
      live.agent.started().then(starting, starting);
      outcome = await running;
      if (outcome.kind === "process_exit" && outcome.error instanceof AgentStartTimeoutError) {
        turn.startFailed = outcome.error.message;
        this.o.log.warn(`session ${live.session.id}: ${outcome.error.message}; ending the turn`);
      }
    } catch (error) {
      outcome = { kind: "process_exit", error: error instanceof Error ? error : new Error(String(error)) };
    } finally {
      holds = Number.POSITIVE_INFINITY;
      clearTimeout(watchdog);
      live.grant.turnId = undefined;
    }
    await lastAppend.catch(() => undefined);

    // A turn stopped because this server lost the lease writes nothing more to the session: another server owns it.
    // Decided once: a turn told complete is one whose conversation and checkpoint this server still writes.
    const lost = turn.lost === true;
    // Stored only with a line of it: an id of a conversation with nothing stored could never be resumed.
    const sdkSessionId = live.agent.sdkSessionId;
    if (!lost && sdkSessionId && sdkSessionId !== live.session.sdkSessionId && (await hasTranscript(this.o.db, live.session.id, sdkSessionId).catch(() => false))) {
      // Kept in memory only once stored, so a failed write is tried again after the next turn.
      await updateSession(this.o.db, live.session.id, { sdkSessionId }).then(
        () => void (live.session.sdkSessionId = sdkSessionId),
        (error) => this.o.log.warn(`session ${live.session.id}: storing its conversation id failed:`, error),
      );
    }

    const final = finalEvents({ ...turn, lost, shuttingDown: this.o.shuttingDown() }, outcome, limitHit(countersBefore, live.sandbox.limitCounters())).map((e) =>
      e.type === "turn_complete" ? { ...e, data: { ...(e.data as object), gatewayUsage: live.turnUsage ?? null } } : e,
    );
    emit(final);
    await lastAppend.catch(() => undefined);

    try {
      if (lost) {
        // Its sandbox goes unsaved (SessionManager.leasesLost / fence); no checkpoint, no session row change.
      } else if (turn.lost) {
        // Lost after it was told complete: its checkpoint would write over the new owner's, so the client hears it was not saved.
        emit([saveFailedEvent(undefined, "lost")]);
      } else if (outcome.kind === "process_exit") {
        const status = this.o.shuttingDown() ? "active" : final.some((e) => (e.data as any).code?.startsWith("sandbox_")) ? "error" : "active";
        await this.o.exited(live.session.id, status).catch(() => undefined);
      } else {
        // Saved before `done`: a client told the turn is done can rely on its files.
        // A failed save fails this turn only; the session and its sandbox go on.
        const checkpoint = await this.checkpointInput(live, log, options.content, lastUuid);
        const failure = await this.o.observability.tracing.withActiveSpan(observer.span, () => this.o.snapshot(live, checkpoint)).then(
          () => undefined,
          (error: unknown) => error,
        );
        if (failure !== undefined) emit([saveFailedEvent(failure, turn.lost ? "lost" : this.o.shuttingDown() ? "shutdown" : undefined)]);
      }
    } finally {
      // Counted and its span closed even when saving the workspace failed.
      observer.end();
    }
    if (!turn.lost) await updateSession(this.o.db, live.session.id, { touch: true }).catch(() => undefined);
    release();
    const limit = final.find((e) => e.type === "error" && ["sandbox_oom", "sandbox_pids", "sandbox_disk"].includes((e.data as any).code));
    if (limit) this.o.observability.telemetry.emit({ type: "sandbox_limit", sessionId: live.session.id, agent: live.session.agentName, data: { code: (limit.data as any).code } });
    emit([{ type: "done", data: { sessionId: live.session.id } }]);
    await lastAppend.catch(() => undefined);
  }

  /** Where the conversation stands after a turn, for its checkpoint. */
  private async checkpointInput(live: TurnSession, log: EventLog, content: TurnInput["content"], transcriptUuid: string | null): Promise<CheckpointInput> {
    const sdkSessionId = live.agent.sdkSessionId ?? live.session.sdkSessionId ?? null;
    const { db } = this.o;
    return {
      sdkSessionId,
      transcriptUuid,
      transcriptIdx: sdkSessionId ? await lastTranscriptIdx(db, { sessionId: live.session.id, sdkSessionId, subpath: "" }) : null,
      messageSeq: await lastMessageSeq(db, live.session.id),
      eventSeq: log.lastSeq,
      prompt: promptOf(content),
    };
  }
}

/** Why a turn cut short by a lost lease ended (this server could not renew it in time). */
export const LEASE_LOST_MESSAGE = "This server lost its hold on the session (it could not reach the database in time) and stopped the turn, so that no other server runs it at the same time. Send the message again.";

/** What decides a turn's final events besides its outcome. */
export interface TurnEnding {
  interrupted: boolean;
  timedOut: boolean;
  startFailed?: string;
  shuttingDown: boolean;
  lost?: boolean;
  live: { budget: Pick<BudgetState, "exceeded"> };
}

/**
 * What a turn's outcome means for the user: `turn_complete` and/or an `error`
 * with its code. A lost lease wins, then a refused budget, then (for a turn that ended with a
 * result) a timeout or interrupt, a model error, a limit that stopped a
 * process; a dead process is named by its likeliest cause.
 */
/** What a user does about a sandbox over its disk limit (the next turn runs, so the agent can clean up). */
const DISK_ADVICE = " Delete files in the workspace (ask the agent, or use exec) to get under the limit.";

export function finalEvents(turn: TurnEnding, outcome: TurnOutcome, limit: LimitKillReason | null): StreamEvent[] {
  const error = (message: string, code: TurnErrorCode | "max_turns"): StreamEvent => ({ type: "error", data: { error: message, code } });
  const limitText = (l: LimitKillReason) => ({ sandbox_oom: "its memory limit", sandbox_pids: "its process limit", sandbox_disk: "its disk limit" })[l];
  // Another server owns the session now (or may): nothing of this turn is saved, whatever the CLI answered.
  if (turn.lost) return [error(LEASE_LOST_MESSAGE, "server_lost")];
  const exceeded = turn.live.budget.exceeded;
  if (exceeded && !turn.interrupted && !turn.shuttingDown) {
    const which = { session: "the session's token budget (maxTokens)", agent: "the agent's default token budget (maxTokens on deploy)", server: "the server's default token budget (ASH_DEFAULT_MAX_TOKENS)" }[exceeded.budget] ?? "a token budget";
    return [
      {
        type: "error",
        data: {
          error: `The model call was refused: this session has used ${exceeded.used} tokens, which reaches ${which} of ${exceeded.limit}. Raise it with PATCH /api/sessions/:id {"maxTokens": n} to continue.`,
          code: "budget_exceeded",
          budget: exceeded.budget,
          limit: exceeded.limit,
          used: exceeded.used,
        },
      },
    ];
  }
  if (outcome.kind === "result") {
    const r = outcome.result;
    if (turn.timedOut) return [error("The model did not answer in time.", "model_timeout")];
    if (turn.interrupted) return [error("The turn was interrupted.", "interrupted")];
    if (r.is_error || r.subtype !== "success") {
      const detail = typeof r.result === "string" && r.result ? r.result : Array.isArray(r.errors) && r.errors.length ? r.errors.join("; ") : r.subtype;
      return [error(modelFailure(detail), "model_error")];
    }
    // The CLI survived, but a process it ran was stopped by a limit: say so.
    if (limit) return [turnCompleteOf(r), error(`A process in the sandbox was stopped because the sandbox exceeded ${limitText(limit)}.${limit === "sandbox_disk" ? DISK_ADVICE : ""}`, limit)];
    return [turnCompleteOf(r)];
  }
  if (outcome.kind === "max_turns") {
    const events: StreamEvent[] = [];
    if (outcome.result) events.push(turnCompleteOf(outcome.result));
    events.push(error("The turn reached its maxTurns limit.", "max_turns"));
    return events;
  }
  if (limit) return [error(`The sandbox was stopped because it exceeded ${limitText(limit)}.${limit === "sandbox_disk" ? DISK_ADVICE : ""}`, limit)];
  if (turn.shuttingDown) return [error("The server is shutting down.", "server_shutdown")];
  if (turn.startFailed) return [error(`The agent process was stopped: ${turn.startFailed} (ASH_AGENT_START_TIMEOUT_MS).`, "sandbox_crashed")];
  if (turn.timedOut) return [error("The model did not answer in time.", "model_timeout")];
  if (turn.interrupted) return [error("The turn was interrupted.", "interrupted")];
  return [error(`The agent process ended unexpectedly: ${outcome.error.message}`, "sandbox_crashed")];
}

/** Which limit, if any, struck between two counter readings (memory first: it also causes the others). */
export function limitHit(before: ReturnType<SandboxHandle["limitCounters"]>, after: ReturnType<SandboxHandle["limitCounters"]>): LimitKillReason | null {
  if (after.oomKills > before.oomKills) return "sandbox_oom";
  if (after.pidsMaxHits > before.pidsMaxHits) return "sandbox_pids";
  if (after.diskKills > before.diskKills) return "sandbox_disk";
  return null;
}

/** The `error` event of a turn whose workspace could not be saved. */
export function saveFailedEvent(error: unknown, cause?: "lost" | "shutdown"): StreamEvent {
  // The save was cut by what stopped the server's hold on the session, not by the workspace: say that.
  if (cause === "lost") return { type: "error", data: { error: LEASE_LOST_MESSAGE, code: "server_lost" } };
  if (cause === "shutdown") return { type: "error", data: { error: "The server shut down while saving this turn's files; the last save is kept.", code: "server_shutdown" } };
  if (error instanceof SnapshotTooLargeError) return { type: "error", data: { error: error.message, code: "sandbox_disk" } };
  return {
    type: "error",
    data: { error: "Saving the workspace failed, so the last save is kept; the session's logs say why. The session can go on.", code: "workspace_save_failed" },
  };
}

/** Which raw SDK messages also go into the session's history (GET /messages). */
export function historyMessageOf(message: SDKMessage): PendingMessage | undefined {
  const m = message as any;
  if (m.type === "assistant") return { id: randomUUID(), role: "assistant", content: m.message?.content ?? [] };
  if (m.type === "user" && Array.isArray(m.message?.content) && m.message.content.some((b: any) => b.type === "tool_result")) {
    return { id: randomUUID(), role: "tool", content: m.message.content };
  }
  if (m.type === "result") return { id: randomUUID(), role: "result", content: { subtype: m.subtype, result: m.result ?? null, isError: m.is_error, usage: m.usage ?? null } };
  return undefined;
}

/** The start of a user message, as a checkpoint lists it. */
export function promptOf(content: TurnInput["content"]): string | null {
  const text = typeof content === "string" ? content : content.map((b: any) => (b && b.type === "text" && typeof b.text === "string" ? b.text : "")).join(" ");
  const trimmed = text.trim();
  return trimmed ? trimmed.slice(0, 200) : null;
}

/**
 * The CLI's own words for a missing or rejected key ("Not logged in · Please
 * run /login") mean nothing to an API user: name the server setting instead.
 */
export function modelFailure(detail: string): string {
  if (/not logged in|\/login|invalid (x-)?api[ -]key|authentication_error/i.test(detail)) {
    return `The model refused the call: the server has no valid ANTHROPIC_API_KEY (${detail}). Set it where the server starts: export ANTHROPIC_API_KEY=sk-ant-... before \`ash start\` (or \`ash start -e ANTHROPIC_API_KEY=...\`), then \`ash stop\` and \`ash start\` again.`;
  }
  return `The model call failed: ${detail}`;
}
