import { randomUUID } from "node:crypto";
import { dirname, join } from "node:path";
import type { SpawnedProcess } from "@anthropic-ai/claude-agent-sdk";
import type { ConsolaInstance } from "consola";
import type { ServerConfig } from "../config";
import type { AshDatabase } from "../db/types";
import { getAgent, getAgentFiles, getAgentVersion, listAgents, type AgentRecord } from "../db/queries/agents";
import { getSession, insertSession, updateSession, updateSessionSettings, type SessionRecord, type SessionSettings } from "../db/queries/sessions";
import { ModelGateway, type GatewayGrant } from "../gateway/gateway";
import { prepareSandboxAccess, type SandboxAccessDeps } from "./sandbox-access";
import { endOrphanedSandboxes, endSandbox, insertSandbox } from "../db/queries/sandboxes";
import { copyEvents, unfinishedTurnSessions } from "../db/queries/events";
import { copyMessages, rewindMessages } from "../db/queries/messages";
import { copyTranscript } from "../db/queries/transcripts";
import { copyCheckpoints, getCheckpoint, headCheckpoint, listCheckpoints, rewindCheckpoints, type CheckpointRecord } from "../db/queries/checkpoints";
import { StartQueue } from "../runtime/start-queue";
import { holdOutputUntil, untilFileExists } from "../runtime/hold-start";
import { createTranscriptStore, materializeTranscript } from "../runtime/transcript-store";
import { writeFiles } from "../agents/agent-files";
import { SandboxPool } from "../sandbox/pool";
import { conflict, gone, notFound, unavailable, unprocessable } from "../errors";
import { openCredential, type OpenedCredential } from "../vault/credentials";
import type { Vault } from "../vault/vault";
import { EventLog } from "./event-log";
import type { SandboxFactory, SandboxHandle, WorkspaceStore } from "./types";
import { Workspaces, type CheckpointInput } from "./workspaces";
import { buildAgentEnv } from "./agent-env";
import { launchAgentSession, sandboxAgent, type AgentLauncher, type AgentProcess } from "./agent-process";
import { GatewayAccounting, type BudgetState, type TurnUsage } from "./gateway-accounting";
import { KILL_GRACE_MS, TurnRunner, type RunningTurn } from "./turn-runner";

export { modelFailure } from "./turn-runner";
import { poolKey, spareCanServe, WarmPool, type WarmSpare } from "./warm-pool";
import type { EvictionReason, Observability } from "../observability";
import type { SessionState } from "../contract";

/** A session whose sandbox and CLI process are running. */
interface LiveSession {
  session: SessionRecord;
  sandbox: SandboxHandle;
  agent: AgentProcess;
  /** A new agent process for the same sandbox, resuming `resume` (what waking an idle session starts). */
  respawn: (resume: string | undefined) => AgentProcess;
  /** Its agent process was stopped after ASH_KEEPALIVE_MS without a turn; the sandbox stays. */
  parked?: boolean;
  /** The stopping of its parked agent process, awaited before a new one resumes the transcript. */
  parking?: Promise<void>;
  busy: boolean;
  lastUsedAt: number;
  /** Set while it is being put to sleep: it still holds its pool slot until its processes are gone. */
  closing?: Promise<void>;
  /** Its model gateway token's grant, revoked when the sandbox goes. */
  grant: GatewayGrant;
  budget: BudgetState;
  /** Tokens of the running turn, as the gateway read them. */
  turnUsage?: TurnUsage;
}

export interface NewSession {
  agent: string;
  /** Default: the default tenant (the server's own key). */
  tenantId?: string;
  /** The API key that asks; null for the server's own work. */
  apiKeyId?: string | null;
  agentVersion?: number;
  model?: string;
  settings: SessionSettings;
  /** Called once the session's row exists (limits on live sessions count it from then on). */
  onRecorded?: () => void;
}

export interface SendOptions {
  content: string | unknown[];
  /** Called once when the turn has ended (or did not start): limits on running turns count with it. */
  onTurnEnd?: () => void;
  model?: string;
  maxTurns?: number;
  includePartialMessages?: boolean;
}

export interface SessionManagerOptions {
  config: ServerConfig;
  db: AshDatabase;
  serverId: string;
  sandboxes: SandboxFactory;
  workspaceStore: WorkspaceStore;
  /** Opens sessions' stored credentials; undefined without ASH_CREDENTIAL_KEY. */
  vault?: Vault;
  log: ConsolaInstance;
  observability: Observability;
  /** Makes agent processes; default: the Claude Code CLI through the Agent SDK. */
  launchAgent?: AgentLauncher;
}

/**
 * Kept in a session's settings until its CLI first starts: continue the
 * conversation of Claude Code session `forkOf` under a new id (a fork or a
 * rewind), cut at `forkAt` (a checkpoint's position) when set.
 */
interface ForkState {
  forkOf?: string;
  forkAt?: { uuid: string | null; idx: number | null };
}

/** deactivate()'s reasons as ash_evictions_total labels them. */
const EVICTION_REASON: Record<string, EvictionReason> = {
  idle_timeout: "idle",
  capacity: "capacity",
  paused: "pause",
  stopped: "stop",
  ended: "end",
  server_shutdown: "shutdown",
  process_exited: "crash",
};

/**
 * The life of every session: bringing its sandbox and CLI up (restoring the
 * workspace and the conversation when it was evicted, paused or moved), running
 * one turn at a time into its event log, and putting it to sleep again.
 */
export class SessionManager {
  readonly pool: SandboxPool;
  /** The model gateway every sandbox's CLI calls instead of the model API. */
  readonly gateway: ModelGateway;
  /** What new sandboxes get to reach the model and the network (also used by the warm pool). */
  readonly access: SandboxAccessDeps;
  /** ASH_WARM_POOL's spares; idle when it names no agent. */
  readonly warm: WarmPool;
  /** Saved workspaces, checkpoints and their garbage collection. */
  readonly workspaces: Workspaces;
  /** Agent processes starting at once (ASH_START_CONCURRENCY), sessions before spares. */
  readonly starts: StartQueue;
  private readonly live = new Map<string, LiveSession>();
  private readonly activating = new Map<string, Promise<LiveSession>>();
  private readonly turns = new Map<string, RunningTurn>();
  /** Sessions between "accepted a message" and "turn registered". */
  private readonly claimed = new Set<string>();
  private readonly logs = new Map<string, EventLog>();
  private readonly accounting: GatewayAccounting;
  private readonly runner: TurnRunner;
  private sweeper?: NodeJS.Timeout;
  private keeper?: NodeJS.Timeout;
  private shuttingDown = false;

  /** Makes agent processes, for sessions and spares alike. */
  private readonly launch: AgentLauncher;

  constructor(private readonly o: SessionManagerOptions) {
    this.launch = o.launchAgent ?? launchAgentSession;
    this.pool = new SandboxPool(
      o.config.maxSandboxes,
      () =>
        [...this.live.values()].map((l) => ({
          key: l.session.id,
          busy: l.busy || l.closing !== undefined || this.turns.has(l.session.id) || this.activating.has(l.session.id),
          lastUsedAt: l.lastUsedAt,
        })),
      (key, reason) => this.evict(key, reason),
      { count: () => this.warm.readyCount, yieldOne: () => this.warm.yieldOne() },
    );
    const { metrics } = o.observability;
    this.accounting = new GatewayAccounting({
      config: o.config,
      db: o.db,
      log: o.log,
      metrics,
      liveOf: (id) => this.live.get(id),
      egressDenied: async (sessionId, data) => void (await (await this.logFor(sessionId)).append([{ type: "egress_denied", data }])),
    });
    this.gateway = new ModelGateway({
      admit: (grant) => this.accounting.admit(grant),
      usage: (grant, usage) => this.accounting.recordUsage(grant, usage),
      rejected: (reason) => metrics.gatewayRejected(reason),
    });
    this.access = { config: o.config, gateway: this.gateway, onEgress: (grant, attempt, allowed) => this.accounting.egressSeen(grant, attempt, allowed) };
    this.workspaces = new Workspaces({ db: o.db, store: o.workspaceStore, retention: o.config.checkpoints, log: o.log });
    this.starts = new StartQueue(o.config.startConcurrency);
    this.runner = new TurnRunner({
      config: o.config,
      db: o.db,
      log: o.log,
      observability: o.observability,
      shuttingDown: () => this.shuttingDown,
      snapshot: (live, checkpoint) => this.snapshot(live, checkpoint),
      exited: async (sessionId, status) => {
        await this.deactivate(sessionId, "evicted", "process_exited").catch(() => undefined);
        await updateSession(this.o.db, sessionId, { status, sandboxId: null }).catch(() => undefined);
      },
    });
    this.warm = new WarmPool({ config: o.config, db: o.db, sandboxes: o.sandboxes, log: o.log, tryReserve: () => this.pool.tryReserve(), access: this.access, starts: this.starts, launch: this.launch });
  }

  get liveCount(): number {
    return this.live.size;
  }

  get busyCount(): number {
    return this.turns.size;
  }

  /** Live sandboxes running a turn and waiting, for ash_sandboxes. */
  sandboxCounts(): { busy: number; idle: number } {
    const busy = [...this.live.keys()].filter((id) => this.turns.has(id)).length;
    return { busy, idle: this.live.size - busy };
  }

  /** Cleans up after a previous run of this server, then starts the idle sweeper. */
  async start(): Promise<void> {
    await this.closeInterruptedTurns();
    const orphans = await endOrphanedSandboxes(this.o.db, this.o.serverId);
    const removed = await this.o.sandboxes.removeLeftovers(orphans);
    if (removed > 0) this.o.log.info(`removed ${removed} sandbox folder(s) left by the previous run`);
    const every = Math.max(1000, Math.min(this.o.config.idleTimeoutMs / 2, 30_000));
    this.sweeper = setInterval(() => {
      this.pool.evictIdle(this.o.config.idleTimeoutMs).catch((error) => this.o.log.error("idle eviction failed:", error));
    }, every);
    this.sweeper.unref();
    // Stops agent processes idle past ASH_KEEPALIVE_MS (their sandboxes stay until the idle timeout).
    const keepalive = this.o.config.keepaliveMs;
    this.keeper = setInterval(() => this.parkIdle(), Math.max(100, Math.min(keepalive / 4, 5000)));
    this.keeper.unref();
    this.warm.start();
    this.workspaces.start();
  }

  /**
   * A new session of the tenant's agent, made by `apiKeyId` (its limits count it).
   * `agentVersion`: a deployed version other than the latest (evaluation runs); unset, the latest.
   */
  createSession(input: NewSession): Promise<SessionRecord> {
    return this.o.observability.tracing.withSpan("session.create", { "ash.agent": input.agent }, async (span) => {
      const session = await this.createSessionNow(input);
      span.setAttribute("ash.session_id", session.id);
      this.o.observability.telemetry.emit({ type: "session_created", sessionId: session.id, agent: session.agentName, data: { model: session.model ?? null } });
      return session;
    });
  }

  private async createSessionNow(input: NewSession): Promise<SessionRecord> {
    const tenantId = input.tenantId ?? "default";
    const agent = await getAgent(this.o.db, tenantId, input.agent);
    if (!agent) throw await this.unknownAgent(tenantId, input.agent);
    const pooled = poolKey(agent);
    // Spares are made with the server's model key: an agent with its own credential gets none.
    if (!agent.settings.credentialId) this.warm.demand(pooled);
    const version = input.agentVersion ?? agent.version;
    if (version !== agent.version && !(await getAgentVersion(this.o.db, agent.id, version))) {
      throw notFound(`Agent "${agent.name}" has no version ${version}; its latest is ${agent.version}.`);
    }
    // Spares are made from the latest version only.
    const warm = version === agent.version && !agent.settings.credentialId && this.warm.serves(pooled) && spareCanServe(input);
    // With a ready spare the slot comes with it; otherwise reserve one as usual.
    let release: (() => void) | undefined = warm && this.warm.readyCount > 0 ? undefined : await this.pool.reserve();
    let record: SessionRecord | undefined;
    try {
      record = await insertSession(this.o.db, {
        id: randomUUID(),
        agentId: agent.id,
        agentName: agent.name,
        agentVersion: version,
        status: "starting",
        sandboxId: null,
        sdkSessionId: null,
        model: input.model ?? null,
        settings: input.settings,
        parentSessionId: null,
        tenantId,
        apiKeyId: input.apiKeyId ?? null,
      });
      input.onRecorded?.();
      const spare = warm && !release ? this.warm.take(agent) : undefined;
      if (spare) await this.adopt(record, agent, spare);
      else {
        release ??= await this.pool.reserve();
        await this.activate(record, release);
      }
      return (await getSession(this.o.db, record.id))!;
    } catch (error) {
      release?.();
      if (record) await updateSession(this.o.db, record.id, { status: "error" }).catch(() => undefined);
      throw error;
    }
  }

  /** Accepts a message, starts its turn in the background, and says where its events begin. */
  async sendMessage(sessionId: string, options: SendOptions): Promise<{ log: EventLog; after: number }> {
    const session = await this.requireSession(sessionId);
    if (session.status === "ended") throw gone("This session has ended; start a new one.");
    if (this.turns.has(sessionId) || this.claimed.has(sessionId)) throw conflict("A turn is already running on this session.");
    this.claimed.add(sessionId);
    try {
      const live = await this.activate(session);
      live.busy = true;
      const log = await this.logFor(sessionId);
      const after = log.lastSeq;
      await log.append([{ type: "session_start", data: { sessionId } }], [{ id: randomUUID(), role: "user", content: options.content }]);
      await updateSession(this.o.db, sessionId, { status: "active", touch: true });
      const turn: RunningTurn = { done: Promise.resolve(), interrupted: false, timedOut: false, live };
      let released = false;
      // Called before `done` is written: a client that reads `done` may send the next message at once.
      const release = () => {
        if (released) return;
        released = true;
        if (this.turns.get(sessionId) === turn) this.turns.delete(sessionId);
        live.busy = false;
        live.lastUsedAt = Date.now();
        options.onTurnEnd?.();
      };
      this.turns.set(sessionId, turn);
      turn.done = this.runner
        .run(turn, log, options, release)
        .catch((error) => this.o.log.error(`session ${sessionId}: the turn failed:`, error))
        .finally(release);
      return { log, after };
    } catch (error) {
      const live = this.live.get(sessionId);
      if (live && !this.turns.has(sessionId)) live.busy = false;
      throw error;
    } finally {
      this.claimed.delete(sessionId);
    }
  }

  /** Stops the running turn; false when none runs. */
  async interrupt(sessionId: string): Promise<boolean> {
    await this.requireSession(sessionId);
    const turn = this.turns.get(sessionId);
    if (!turn) return false;
    turn.interrupted = true;
    await turn.live.agent.interrupt();
    // A CLI that does not stop is ended; the turn then reports `interrupted`.
    const timer = setTimeout(() => void turn.live.agent.close(0), KILL_GRACE_MS);
    await turn.done.finally(() => clearTimeout(timer));
    return true;
  }

  async pause(sessionId: string): Promise<SessionRecord> {
    const session = await this.requireSession(sessionId);
    if (session.status === "ended") throw gone("This session has ended; it cannot be paused.");
    if (this.turns.has(sessionId) || this.claimed.has(sessionId)) throw conflict("A turn is running on this session; interrupt it before pausing.");
    await this.deactivate(sessionId, "paused", "paused");
    await updateSession(this.o.db, sessionId, { status: "paused", sandboxId: null, touch: true });
    this.o.observability.telemetry.emit({ type: "session_paused", sessionId, agent: session.agentName });
    return (await getSession(this.o.db, sessionId))!;
  }

  async stop(sessionId: string): Promise<SessionRecord> {
    const session = await this.requireSession(sessionId);
    if (session.status === "ended") throw gone("This session has ended; it cannot be stopped.");
    await this.killTurn(sessionId);
    await this.deactivate(sessionId, "stopped", "stopped");
    await updateSession(this.o.db, sessionId, { status: "stopped", sandboxId: null, touch: true });
    this.o.observability.telemetry.emit({ type: "session_stopped", sessionId, agent: session.agentName });
    return (await getSession(this.o.db, sessionId))!;
  }

  async resume(sessionId: string): Promise<SessionRecord> {
    const session = await this.requireSession(sessionId);
    if (session.status === "ended") throw gone("This session has ended; it cannot be resumed.");
    if (this.live.get(sessionId)?.agent.alive && !this.live.get(sessionId)?.closing) this.o.observability.metrics.resumedWarm();
    await this.activate(session);
    await updateSession(this.o.db, sessionId, { status: "active", touch: true });
    return (await getSession(this.o.db, sessionId))!;
  }

  async end(sessionId: string): Promise<SessionRecord> {
    const session = await this.requireSession(sessionId);
    if (session.status !== "ended") {
      await this.killTurn(sessionId);
      // Answered once the session is marked ended and its agent process is told to stop; the save of
      // files changed since the last turn and the sandbox teardown go on in the background. The
      // sandbox keeps its pool slot until its processes are gone, and shutdown awaits it (live.closing).
      this.deactivate(sessionId, "ended", "ended").catch((error) => this.o.log.error(`session ${sessionId}: ending its sandbox failed:`, error));
      await updateSession(this.o.db, sessionId, { status: "ended", sandboxId: null, touch: true });
      this.o.observability.telemetry.emit({ type: "session_ended", sessionId, agent: session.agentName });
    }
    this.forgetLog(sessionId, true);
    return (await getSession(this.o.db, sessionId))!;
  }

  /**
   * A new session with a copy of the history, the conversation and the
   * workspace: as they are now, or as they were after `checkpoint`. The files
   * are the same stored version (no copy); history rows are copied.
   */
  async fork(sessionId: string, checkpoint?: number): Promise<SessionRecord> {
    let parent = await this.requireSession(sessionId);
    if (this.turns.has(sessionId) || this.claimed.has(sessionId)) throw conflict("A turn is running on this session; fork it when the turn is done.");
    let at: CheckpointRecord | undefined;
    if (checkpoint !== undefined) {
      at = await getCheckpoint(this.o.db, sessionId, checkpoint);
      if (!at) throw notFound(`Session ${sessionId} has no checkpoint ${checkpoint}.${await this.checkpointHint(sessionId)}`);
    } else {
      const live = this.live.get(sessionId);
      // Saved first: the fork gets the files as they are this moment (an ending session's save is under way).
      if (live?.closing) await live.closing;
      else if (live) await this.snapshot(live);
      else if (!parent.workspaceVersion && (await this.workspaces.has(parent))) await this.snapshot(await this.activate(parent));
      parent = await this.requireSession(sessionId);
    }
    const live = this.live.get(sessionId);
    const id = randomUUID();
    const settings: SessionSettings & ForkState = { ...parent.settings };
    delete settings.forkOf;
    delete settings.forkAt;
    const parentSdk = at ? at.sdkSessionId : (live?.agent.sdkSessionId ?? parent.sdkSessionId ?? (parent.settings as ForkState).forkOf);
    if (parentSdk) {
      settings.forkOf = parentSdk;
      if (at) settings.forkAt = { uuid: at.transcriptUuid, idx: at.transcriptIdx };
      else if (!parent.sdkSessionId && (parent.settings as ForkState).forkAt) settings.forkAt = (parent.settings as ForkState).forkAt;
    }
    const version = at ? at.version : parent.workspaceVersion;
    await this.o.db.transaction(async (tx) => {
      await insertSession(tx, {
        id,
        agentId: parent.agentId,
        agentName: parent.agentName,
        agentVersion: parent.agentVersion,
        status: "paused",
        sandboxId: null,
        sdkSessionId: null,
        model: parent.model,
        settings,
        parentSessionId: parent.id,
        tenantId: parent.tenantId,
        apiKeyId: parent.apiKeyId,
      });
      if (version) await this.workspaces.adopt(tx, id, version);
      await copyTranscript(tx, parent.id, id);
      await copyEvents(tx, parent.id, id, at?.eventSeq);
      await copyMessages(tx, parent.id, id, randomUUID, at ? { sequence: at.messageSeq, time: at.createdAt } : undefined);
      if (at) await copyCheckpoints(tx, parent.id, id, at);
      else {
        const head = await headCheckpoint(tx, parent.id);
        if (head) await copyCheckpoints(tx, parent.id, id, head);
      }
    });
    return (await getSession(this.o.db, id))!;
  }

  /** Checkpoints of a session, oldest first. */
  async checkpoints(sessionId: string): Promise<CheckpointRecord[]> {
    await this.requireSession(sessionId);
    return listCheckpoints(this.o.db, sessionId);
  }

  /**
   * Moves a session back to a checkpoint: its files and its conversation as
   * they were after that turn. What came later stays in the history, marked
   * rewound; the present files are saved first, so nothing is lost.
   */
  async rewind(sessionId: string, checkpoint: number): Promise<SessionRecord> {
    const session = await this.requireSession(sessionId);
    if (session.status === "ended") throw gone("This session has ended; fork it at a checkpoint instead.");
    if (this.turns.has(sessionId) || this.claimed.has(sessionId)) throw conflict("A turn is running on this session; interrupt it before rewinding.");
    const at = await getCheckpoint(this.o.db, sessionId, checkpoint);
    if (!at) throw notFound(`Session ${sessionId} has no checkpoint ${checkpoint}.${await this.checkpointHint(sessionId)}`);
    if (at.rewoundAt !== null) throw conflict(`Checkpoint ${checkpoint} was itself rewound away; fork the session at it instead.`);
    // Put to sleep (saving the files), so the next message starts from the checkpoint.
    await this.deactivate(sessionId, "paused", "paused");
    // Files changed since the last turn (exec, uploads) become a checkpoint of their own.
    const saved = await this.workspaces.statsOfSaved(sessionId);
    if (this.turns.has(sessionId) || this.claimed.has(sessionId) || this.activating.has(sessionId)) throw conflict("The session was woken while rewinding; try again.");
    const now = Date.now();
    const settings: SessionSettings & ForkState = { ...session.settings };
    delete settings.forkOf;
    delete settings.forkAt;
    if (at.sdkSessionId) {
      settings.forkOf = at.sdkSessionId;
      settings.forkAt = { uuid: at.transcriptUuid, idx: at.transcriptIdx };
    }
    const log = await this.logFor(sessionId);
    await this.o.db.transaction(async (tx) => {
      await this.workspaces.checkpointSaved(tx, sessionId, saved);
      await this.workspaces.adopt(tx, sessionId, at.version);
      await rewindCheckpoints(tx, sessionId, at.number, now);
      await rewindMessages(tx, sessionId, at.messageSeq, now);
      await updateSessionSettings(tx, sessionId, settings);
      await updateSession(tx, sessionId, { sdkSessionId: null, sandboxId: null, status: "paused", touch: true });
    });
    await log.append([
      { type: "rewound", data: { sessionId, checkpoint: at.number, turn: at.turn } },
      { type: "done", data: { sessionId } },
    ]);
    return (await getSession(this.o.db, sessionId))!;
  }

  private async checkpointHint(sessionId: string): Promise<string> {
    const all = await listCheckpoints(this.o.db, sessionId);
    return all.length ? ` Its checkpoints are ${all[0]!.number} to ${all[all.length - 1]!.number} (GET /api/sessions/${sessionId}/checkpoints).` : " It has none yet: one is made after each completed turn.";
  }

  /** The live sandbox of a session, woken up if it was asleep (exec, files). */
  async sandboxOf(sessionId: string): Promise<SandboxHandle> {
    const session = await this.requireSession(sessionId);
    if (session.status === "ended") throw gone("This session has ended.");
    // An idle session's files and sandbox are there: exec and file access need no agent process.
    const idle = this.live.get(sessionId);
    const live = idle?.parked && !idle.closing ? idle : await this.activate(session);
    live.lastUsedAt = Date.now();
    if (session.status !== "active") await updateSession(this.o.db, sessionId, { status: "active", touch: true });
    return live.sandbox;
  }

  /** The sandbox when it is live, without waking it. */
  liveSandbox(sessionId: string): SandboxHandle | undefined {
    return this.live.get(sessionId)?.sandbox;
  }

  async logFor(sessionId: string): Promise<EventLog> {
    const existing = this.logs.get(sessionId);
    if (existing && !existing.broken) return existing;
    const { telemetry } = this.o.observability;
    const log = await EventLog.open(this.o.db, sessionId, (events) => {
      const agent = this.live.get(sessionId)?.session.agentName;
      for (const e of events) telemetry.emit({ type: e.type, sessionId, agent, seq: e.seq, at: new Date(e.createdAt), data: e.data });
    });
    this.logs.set(sessionId, log);
    return log;
  }

  async requireSession(sessionId: string): Promise<SessionRecord> {
    const session = await getSession(this.o.db, sessionId);
    if (!session) throw notFound(`No session with id "${sessionId}".`);
    return session;
  }

  /** Ends running turns cleanly, puts every live session to sleep, closes streams. */
  async shutdown(timeoutMs = 10_000): Promise<void> {
    this.shuttingDown = true;
    if (this.sweeper) clearInterval(this.sweeper);
    if (this.keeper) clearInterval(this.keeper);
    const spares = this.warm.shutdown();
    const collector = this.workspaces.stop();
    const deadline = Date.now() + timeoutMs;
    const running = [...this.turns.values()];
    await Promise.race([Promise.all(running.map((t) => t.done)), sleep(Math.max(0, deadline - Date.now() - 3000))]);
    for (const [id] of this.turns) await this.killTurn(id, "server_shutdown");
    await Promise.all([...this.live.keys()].map((id) => this.deactivate(id, "evicted", "server_shutdown").catch(() => undefined)));
    await spares.catch(() => undefined);
    await collector;
    for (const log of this.logs.values()) log.close();
  }

  /** Sets (or, with null, clears) a session's token budget; applies at once to a live session. */
  async setMaxTokens(sessionId: string, maxTokens: number | null): Promise<SessionRecord> {
    const session = await this.requireSession(sessionId);
    const settings: SessionSettings = { ...session.settings };
    if (maxTokens === null) delete settings.maxTokens;
    else settings.maxTokens = maxTokens;
    await updateSessionSettings(this.o.db, sessionId, settings);
    const live = this.live.get(sessionId);
    if (live) {
      live.session.settings = settings;
      const agentVersion = await getAgentVersion(this.o.db, session.agentId, session.agentVersion);
      const fresh = this.accounting.budgetLimit(settings, agentVersion?.settings.maxTokens);
      live.budget.limit = fresh.limit;
      live.budget.which = fresh.which;
    }
    return (await getSession(this.o.db, sessionId))!;
  }

  // ---------------------------------------------------------------------------

  /** A session's stored credential, opened; a clear error when it is gone or the server cannot open it. */
  private async openCredential(tenantId: string, id: string): Promise<OpenedCredential> {
    if (!this.o.vault) throw unavailable("This session names a stored credential, but the server has no ASH_CREDENTIAL_KEY to open it.", 3600);
    let opened: OpenedCredential | undefined;
    try {
      opened = await openCredential(this.o.db, this.o.vault, tenantId, id);
    } catch (error) {
      throw unavailable(`The session's credential ${id} cannot be opened: ${error instanceof Error ? error.message : String(error)}.`, 3600);
    }
    if (!opened) throw unprocessable(`The session's credential ${id} no longer exists; start a new session with another credentialId.`);
    return opened;
  }

  private async unknownAgent(tenantId: string, name: string) {
    const names = (await listAgents(this.o.db, tenantId)).map((a) => a.name);
    return notFound(`No agent named "${name}".${names.length ? ` Deployed agents: ${names.join(", ")}.` : " No agents are deployed yet."}`);
  }

  /** Brings a session's sandbox and CLI up, once, however many callers ask at the same time. */
  private activate(session: SessionRecord, reserved?: () => void): Promise<LiveSession> {
    const live = this.live.get(session.id);
    if (live?.closing) {
      return live.closing.then(() => this.activate(session, reserved));
    }
    if (live && live.agent.alive) {
      reserved?.();
      return Promise.resolve(live);
    }
    const pending = this.activating.get(session.id);
    if (pending) {
      reserved?.();
      return pending;
    }
    if (live?.parked) {
      // Idle: the sandbox and its folder are as they were; only the agent process starts again.
      reserved?.();
      const waking = this.wake(live).finally(() => this.activating.delete(session.id));
      this.activating.set(session.id, waking);
      return waking;
    }
    const promise = (async () => {
      if (live) await this.deactivate(session.id, "evicted", "process_exited", false);
      const release = reserved ?? (await this.pool.reserve());
      try {
        return await this.bringUp(session);
      } finally {
        release();
      }
    })().finally(() => this.activating.delete(session.id));
    this.activating.set(session.id, promise);
    return promise;
  }

  /** A spawned agent process, its start-up held back while ASH_TEST_START_HOLD_FILE is missing (tests only). */
  private held(child: SpawnedProcess): SpawnedProcess {
    const file = this.o.config.testStartHoldFile;
    return file ? holdOutputUntil(file, child) : child;
  }

  /** Starts the agent process of an idle session again, resuming its conversation from the transcript in its sandbox. */
  private async wake(live: LiveSession): Promise<LiveSession> {
    await live.parking;
    const resume = live.agent.sdkSessionId ?? live.session.sdkSessionId ?? undefined;
    live.agent = live.respawn(resume);
    live.agent.start();
    live.parked = false;
    live.lastUsedAt = Date.now();
    this.o.observability.metrics.woken();
    this.o.log.debug(`session ${live.session.id}: agent process started again in sandbox ${live.sandbox.id}`);
    return live;
  }

  /**
   * Stops the agent process of every session without a turn for
   * ASH_KEEPALIVE_MS. Its sandbox (folder, resource groups) stays until the
   * idle timeout, so the next message only starts the process again.
   */
  private parkIdle(now = Date.now()): void {
    for (const [id, live] of this.live) {
      if (live.parked || live.closing || live.busy || this.turns.has(id) || this.claimed.has(id) || this.activating.has(id)) continue;
      if (!live.agent.alive || now - live.lastUsedAt < this.o.config.keepaliveMs) continue;
      live.parked = true;
      this.o.log.debug(`session ${id}: agent process stopped after ${this.o.config.keepaliveMs} ms without a turn`);
      live.parking = live.agent.close(2000).catch(() => undefined);
    }
  }

  /** hot: the agent process runs (or starts); idle: only the sandbox is there; asleep: neither. */
  stateOf(sessionId: string): SessionState {
    const live = this.live.get(sessionId);
    if (live && !live.closing) return live.parked ? "idle" : "hot";
    return this.activating.has(sessionId) ? "hot" : "asleep";
  }

  /** Live sessions by state, for ash_session_states (asleep ones are counted in the database). */
  liveStateCounts(): { hot: number; idle: number } {
    let idle = 0;
    for (const live of this.live.values()) if (live.parked) idle++;
    return { hot: this.live.size - idle, idle };
  }

  /** Makes a warm spare this new session's live sandbox: its transcripts, its model, its DB rows. */
  private adopt(session: SessionRecord, agentRecord: AgentRecord, spare: WarmSpare): Promise<LiveSession> {
    // Registered before any await: the spare's pool slot passes to the session without a gap.
    spare.grant.sessionId = session.id;
    const live: LiveSession = {
      session: { ...session, sandboxId: spare.sandbox.id },
      sandbox: spare.sandbox,
      agent: spare.agent,
      respawn: (resume) => spare.respawn(session.id, resume, session.model ?? undefined),
      busy: false,
      lastUsedAt: Date.now(),
      grant: spare.grant,
      budget: { used: 0 },
    };
    this.live.set(session.id, live);
    return this.o.observability.tracing.withSpan("sandbox.spawn", { "ash.session_id": session.id, "ash.sandbox_id": spare.sandbox.id, "ash.warm": true }, async () => {
      const startedAt = performance.now();
      const { db } = this.o;
      try {
        await spare.transcripts.bind(session.id);
        live.budget = await this.accounting.budgetFor(session, agentRecord.settings.maxTokens);
        if (session.model) spare.agent.useModel(session.model);
        await insertSandbox(db, { id: spare.sandbox.id, sessionId: session.id, serverId: this.o.serverId });
        await updateSession(db, session.id, { sandboxId: spare.sandbox.id, status: "active" });
      } catch (error) {
        await this.deactivate(session.id, "destroyed", "ended", false).catch(() => undefined);
        throw error;
      }
      this.o.observability.metrics.sandboxStarted({ durationMs: performance.now() - startedAt });
      this.o.log.debug(`session ${session.id}: took warm sandbox ${spare.sandbox.id} of ${agentRecord.name} v${agentRecord.version}`);
      return live;
    });
  }

  private bringUp(session: SessionRecord): Promise<LiveSession> {
    return this.o.observability.tracing.withSpan("sandbox.spawn", { "ash.session_id": session.id }, async (span) => {
      const startedAt = performance.now();
      const { live, restored } = await this.bringUpNow(session, (sandboxId) => span.setAttribute("ash.sandbox_id", sandboxId));
      const { metrics, telemetry } = this.o.observability;
      metrics.sandboxStarted({ durationMs: performance.now() - startedAt });
      // A session that existed before (paused, stopped, evicted, forked) is coming back.
      if (session.status !== "starting") {
        const from = restored ? "snapshot" : "fresh";
        metrics.resumed(from);
        telemetry.emit({ type: "session_resumed", sessionId: session.id, agent: session.agentName, data: { from } });
      }
      return live;
    });
  }

  private async bringUpNow(session: SessionRecord, named: (sandboxId: string) => void): Promise<{ live: LiveSession; restored: boolean }> {
    const { db, config } = this.o;
    const { tracing } = this.o.observability;
    const agentVersion = await getAgentVersion(db, session.agentId, session.agentVersion);
    const sandboxId = randomUUID();
    named(sandboxId);
    // TRACEPARENT (and, with ASH_SANDBOX_OTEL, the CLI's export settings) join the agent's spans to this trace.
    const agentEnv = agentVersion?.env ?? {};
    const credentialId = session.settings.credentialId ?? agentVersion?.settings.credentialId;
    const credential = credentialId ? await this.openCredential(session.tenantId, credentialId) : undefined;
    // A custom credential is a variable the session asked for; a model key never enters the sandbox.
    const extraEnv = { ...(session.settings.extraEnv ?? {}), ...(credential?.type === "custom" && credential.variable ? { [credential.variable]: credential.value } : {}) };
    const env = { ...buildAgentEnv({ config, agentEnv, extraEnv }), ...tracing.traceparentEnv() };
    const budget = await this.accounting.budgetFor(session, agentVersion?.settings.maxTokens);
    const access = prepareSandboxAccess(this.access, {
      credential: credential?.type === "anthropic" ? credential : undefined,
      sandboxId,
      agentName: session.agentName,
      sessionId: session.id,
      agentEnv,
      extraEnv,
      egress: agentVersion?.settings.egress ?? [],
      env,
    });
    const settings = session.settings as SessionSettings & ForkState;
    const forking = !session.sdkSessionId && settings.forkOf ? settings.forkOf : undefined;
    const resume = session.sdkSessionId ?? forking;
    let restored = false;
    const hasSnapshot = await this.workspaces.has(session);
    const sandbox = await this.o.sandboxes
      .create({
        id: sandboxId,
        sessionId: session.id,
        env,
        network: access.network,
        // Runs before any process of the sandbox exists, so nothing races these writes.
        populate: async (workspaceDir) => {
          if (!hasSnapshot) await writeFiles(workspaceDir, await getAgentFiles(db, session.agentId, session.agentVersion));
          if (resume) await materializeTranscript(db, session.id, resume, join(dirname(workspaceDir), "home", ".claude"), forking ? settings.forkAt : undefined);
        },
      })
      .catch((error) => {
        this.gateway.revoke(access.grant);
        throw error;
      });
    try {
      // Extracted by a process of the sandbox's own user, never by the server.
      // The span is there either way, so a trace shows whether the workspace came from a snapshot.
      restored = await tracing.withSpan("sandbox.restore", { "ash.session_id": session.id }, async (restoreSpan) => {
        const done = hasSnapshot ? await this.workspaces.restore(session, sandbox) : false;
        restoreSpan.setAttribute("ash.restored", done);
        return done;
      });
      // Also what wakes an idle session: the same process in the same sandbox, resuming its conversation.
      const respawn = (again: string | undefined) =>
        sandboxAgent(this.launch, sandbox, {
          env,
          cliEnv: access.cliEnv,
          model: session.model ?? undefined,
          systemPrompt: [agentVersion?.systemPrompt, settings.systemPrompt].filter(Boolean).join("\n\n") || undefined,
          mcpServers: settings.mcpServers,
          permissionMode: settings.permissionMode,
          allowedTools: settings.allowedTools,
          disallowedTools: settings.disallowedTools,
          resume: again ?? resume,
          fork: again === undefined && forking !== undefined,
          transcriptStore: createTranscriptStore(db, session.id),
          spawn: (box, options) => this.held(box.spawnClaudeCode(options)),
          stderr: (text) => this.o.log.debug(`[${session.id}] ${text.trimEnd()}`),
          startQueue: this.starts,
        });
      const agent = respawn(undefined);
      agent.start();
      await insertSandbox(db, { id: sandboxId, sessionId: session.id, serverId: this.o.serverId });
      await updateSession(db, session.id, { sandboxId, status: session.status === "starting" ? "active" : session.status });
      const live: LiveSession = { session: { ...session, sandboxId }, sandbox, agent, respawn, busy: false, lastUsedAt: Date.now(), grant: access.grant, budget };
      this.live.set(session.id, live);
      this.o.log.debug(`session ${session.id}: sandbox ${sandboxId} up${restored ? " (restored)" : ""}`);
      return { live, restored };
    } catch (error) {
      this.gateway.revoke(access.grant);
      await sandbox.destroy().catch(() => undefined);
      throw error;
    }
  }

  /** Ends a running turn at once (stop, end, shutdown). */
  private async killTurn(sessionId: string, why: "interrupted" | "server_shutdown" = "interrupted"): Promise<void> {
    const turn = this.turns.get(sessionId);
    if (!turn) return;
    if (why === "interrupted") turn.interrupted = true;
    await turn.live.agent.close(0);
    await turn.done;
  }

  /** Saves the live workspace; after a turn, as that turn's checkpoint. */
  private async snapshot(live: Pick<LiveSession, "session" | "sandbox">, checkpoint?: CheckpointInput): Promise<void> {
    const { tracing, metrics } = this.o.observability;
    try {
      await tracing.withSpan("sandbox.snapshot", { "ash.session_id": live.session.id }, async (span) => {
        const startedAt = performance.now();
        const { version } = await this.workspaces.save(live.session.id, live.sandbox, checkpoint);
        live.session.workspaceVersion = version.id;
        span.setAttribute("ash.snapshot.bytes", version.bytes);
        span.setAttribute("ash.snapshot.changed_bytes", version.changedBytes);
        metrics.snapshotTaken({ bytes: version.bytes, durationMs: performance.now() - startedAt });
      });
    } catch (error) {
      this.o.log.error(`session ${live.session.id}: saving the workspace failed:`, error);
      try {
        live.sandbox.note(`saving the workspace failed: ${error instanceof Error ? error.message : String(error)}`);
      } catch {
        // the sandbox is gone
      }
      throw error;
    }
  }

  private async evict(sessionId: string, reason: "capacity" | "idle"): Promise<void> {
    await this.deactivate(sessionId, "evicted", reason === "idle" ? "idle_timeout" : "capacity");
    await updateSession(this.o.db, sessionId, { sandboxId: null }).catch(() => undefined);
    this.o.observability.telemetry.emit({ type: "session_evicted", sessionId, data: { reason } });
    this.o.log.debug(`session ${sessionId}: evicted (${reason})`);
  }

  /**
   * Saves the workspace (unless told not to), ends the CLI, destroys the
   * sandbox. The session leaves the pool only when its processes are gone,
   * so live processes never outnumber ASH_MAX_SANDBOXES.
   */
  private deactivate(sessionId: string, status: "evicted" | "destroyed" | "paused" | "stopped" | "ended", reason: string, save = true): Promise<void> {
    const live = this.live.get(sessionId);
    if (!live) return Promise.resolve();
    if (live.closing) return live.closing;
    const { tracing, metrics } = this.o.observability;
    metrics.evicted(EVICTION_REASON[reason] ?? ("other" as EvictionReason));
    live.closing = tracing.withSpan("sandbox.evict", { "ash.session_id": sessionId, "ash.sandbox_id": live.sandbox.id, "ash.reason": reason }, async () => {
      try {
        // An ended session's process is told to stop at once; its last files are saved meanwhile.
        const stopping = status === "ended" ? live.agent.close(2000) : undefined;
        if (save) await this.snapshot(live).catch(() => undefined);
        await (stopping ?? live.agent.close(status === "stopped" ? 0 : 2000));
      } finally {
        if (this.o.config.testTeardownHoldFile) await untilFileExists(this.o.config.testTeardownHoldFile);
        // A sleeping or ended session's token is dead at once; a woken one gets a new token.
        this.gateway.revoke(live.grant);
        await live.sandbox.destroy().catch((error) => this.o.log.error(`sandbox ${live.sandbox.id}: destroy failed:`, error));
        await endSandbox(this.o.db, live.sandbox.id, status === "evicted" ? "evicted" : "destroyed", reason).catch(() => undefined);
        if (this.live.get(sessionId) === live) this.live.delete(sessionId);
        this.forgetLog(sessionId);
      }
    });
    return live.closing;
  }

  /**
   * A session that went to sleep or ended lets go of its event log's memory;
   * the log itself is dropped when no turn, write or open stream still uses
   * it (the next one is opened from the database). Ending also closes it, so
   * its streams finish.
   */
  private forgetLog(sessionId: string, ended = false): void {
    const log = this.logs.get(sessionId);
    if (!log) return;
    log.dropCache();
    const drop = () => {
      if (this.logs.get(sessionId) === log && !this.turns.has(sessionId) && !this.claimed.has(sessionId)) this.logs.delete(sessionId);
    };
    if (ended) {
      // Its streams finish; new readers of an ended session read the database.
      log.close();
      void log.settled().then(drop);
    } else if (log.idle && log.readers === 0) drop();
  }


  /** Turns a crash left without `done` get an error and `done`, so replaying clients finish. */
  private async closeInterruptedTurns(): Promise<void> {
    const sessionIds = await unfinishedTurnSessions(this.o.db, this.o.serverId);
    for (const session_id of sessionIds) {
      const log = await this.logFor(session_id);
      await log.append([
        { type: "error", data: { error: "The server restarted while this turn was running.", code: "server_restart" } },
        { type: "done", data: { sessionId: session_id } },
      ]);
      await updateSession(this.o.db, session_id, { sandboxId: null });
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
