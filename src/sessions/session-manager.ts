import { randomUUID } from "node:crypto";
import type { ConsolaInstance } from "consola";
import type { ServerConfig } from "../config";
import type { AshDatabase } from "../db/types";
import { getAgent, getAgentVersion, listAgents } from "../db/queries/agents";
import { getSession, insertSession, updateSession, updateSessionSettings, type SessionRecord, type SessionSettings } from "../db/queries/sessions";
import { endOrphanedSandboxes } from "../db/queries/sandboxes";
import { copyEvents, lastEventSeq, lastEventType, unfinishedTurnSessions } from "../db/queries/events";
import { endSandboxesOf } from "../db/queries/leases";
import { Leases, type ClaimResult, type LeaseRecord } from "../cluster/leases";
import { copyMessages, rewindMessages } from "../db/queries/messages";
import { copyTranscript } from "../db/queries/transcripts";
import { copyCheckpoints, getCheckpoint, headCheckpoint, listCheckpoints, rewindCheckpoints, type CheckpointRecord } from "../db/queries/checkpoints";
import { ModelGateway } from "../gateway/gateway";
import { StartQueue } from "../runtime/start-queue";
import { SandboxPool } from "../sandbox/pool";
import { conflict, gone, notFound } from "../errors";
import type { Vault } from "../vault/vault";
import type { Observability } from "../observability";
import type { SessionState } from "../contract";
import type { SandboxAccessDeps } from "./sandbox-access";
import { EventLog } from "./event-log";
import type { SandboxFactory, SandboxHandle, WorkspaceStore } from "./types";
import { Workspaces } from "./workspaces";
import { poolKey, spareCanServe, WarmPool } from "./warm-pool";
import { launchAgentSession, type AgentLauncher } from "./agent-process";
import { GatewayAccounting } from "./gateway-accounting";
import { Lifecycle } from "./lifecycle";
import { LiveSessions, type ForkState } from "./live-sessions";
import { SessionTurns } from "./session-state";
import { KILL_GRACE_MS, TurnRunner, type RunningTurn } from "./turn-runner";
import { ToolConfirmations } from "./tool-confirmations";
import type { ToolConfirmationRequest, ToolDecision } from "../runtime/agent-session";

export { modelFailure } from "./turn-runner";

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
  /** True once the server drains (SIGTERM): its heartbeat says so, and new sessions are placed elsewhere. */
  draining?: () => boolean;
}

/**
 * The life of every session, as routes, the queue and evaluations see it:
 * creating, sending, interrupting, pausing, stopping, ending, forking and
 * rewinding. The work is done by its parts: LiveSessions (sandboxes and agent
 * processes), TurnRunner (one turn into the event log), Lifecycle (the moves
 * to sleep and to the end), GatewayAccounting (budgets and usage), with each
 * session's state in one place (session-state.ts).
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
  /** This server's leases on the sessions it runs, and its heartbeat (docs/decisions/cluster-leases.md). */
  readonly leases: Leases;
  private readonly turns = new SessionTurns<RunningTurn>();
  /** Sessions taken over by another server while a message of theirs was being accepted here (claimed, its turn not yet running). */
  private readonly lostWhileClaimed = new Set<string>();
  private readonly live: LiveSessions;
  private readonly accounting: GatewayAccounting;
  private readonly lifecycle: Lifecycle;
  private readonly runner: TurnRunner;
  private readonly logs = new Map<string, EventLog>();
  /** Logs being opened: callers at the same moment share one, so no reader waits on a copy nobody writes to. */
  private readonly openingLogs = new Map<string, Promise<EventLog>>();
  /** Tool uses held by a confirmation policy until someone decides. */
  private readonly confirmations = new ToolConfirmations();
  private sweeper?: NodeJS.Timeout;
  private follower?: NodeJS.Timeout;
  private keeper?: NodeJS.Timeout;
  private shuttingDown = false;

  constructor(private readonly o: SessionManagerOptions) {
    const { metrics, telemetry } = o.observability;
    const launch = o.launchAgent ?? launchAgentSession;
    this.accounting = new GatewayAccounting({
      config: o.config,
      db: o.db,
      log: o.log,
      metrics,
      liveOf: (id) => this.live.get(id),
      egressDenied: async (sessionId, data) => void (await (await this.logFor(sessionId)).append([{ type: "egress_denied", data }])),
    });
    this.pool = new SandboxPool(
      o.config.maxSandboxes,
      () => this.live.poolMembers(),
      (key, reason) => this.evict(key, reason),
      { count: () => this.warm.readyCount, yieldOne: () => this.warm.yieldOne() },
    );
    this.gateway = new ModelGateway({
      admit: (grant) => this.accounting.admit(grant),
      usage: (grant, usage) => this.accounting.recordUsage(grant, usage),
      rejected: (reason) => metrics.gatewayRejected(reason),
    });
    this.access = { config: o.config, gateway: this.gateway, onEgress: (grant, attempt, allowed) => this.accounting.egressSeen(grant, attempt, allowed) };
    this.workspaces = new Workspaces({ db: o.db, store: o.workspaceStore, retention: o.config.checkpoints, log: o.log });
    this.starts = new StartQueue(o.config.startConcurrency, (phase, ms, priority) => metrics.agentStart(phase, ms, priority));
    this.warm = new WarmPool({ config: o.config, db: o.db, sandboxes: o.sandboxes, log: o.log, tryReserve: () => this.pool.tryReserve(), access: this.access, starts: this.starts, launch, turnsActive: () => this.turns.activeCount });
    this.live = new LiveSessions({
      config: o.config,
      db: o.db,
      serverId: o.serverId,
      sandboxes: o.sandboxes,
      workspaces: this.workspaces,
      gateway: this.gateway,
      access: this.access,
      starts: this.starts,
      accounting: this.accounting,
      turns: this.turns,
      vault: o.vault,
      log: o.log,
      observability: o.observability,
      launch,
      reserve: () => this.pool.reserve(),
      confirm: (sessionId, request, signal) => this.holdTool(sessionId, request, signal),
      gone: (sessionId) => this.forgetLog(sessionId),
      claim: (sessionId) => this.claimLease(sessionId),
      release: (sessionId) => this.leases.release(sessionId),
      stillOwned: (sessionId) => this.leases.confirm(sessionId),
    });
    this.leases = new Leases({
      db: o.db,
      serverId: o.serverId,
      ttlMs: o.config.cluster.leaseTtlMs,
      log: o.log,
      load: () => ({ liveSessions: this.live.size, capacity: o.config.maxSandboxes, draining: this.shuttingDown || (o.draining?.() ?? false) }),
      lost: (ids) => this.leasesLost(ids),
      lapsed: () => this.fence(),
      orphaned: (lease) => this.recoverOrphan(lease),
    });
    this.lifecycle = new Lifecycle({ db: o.db, live: this.live, turns: this.turns, telemetry, log: o.log });
    this.runner = new TurnRunner({
      config: o.config,
      db: o.db,
      log: o.log,
      observability: o.observability,
      shuttingDown: () => this.shuttingDown,
      snapshot: (live, checkpoint) => this.live.snapshot(live, checkpoint),
      exited: (sessionId, status) => this.lifecycle.transition({ id: sessionId }, { to: "exited", status }),
    });
  }

  get liveCount(): number {
    return this.live.size;
  }

  get busyCount(): number {
    return this.turns.runningCount;
  }

  /** Live sandboxes running a turn and waiting, for ash_sandboxes. */
  sandboxCounts(): { busy: number; idle: number } {
    const busy = this.live.ids().filter((id) => this.turns.phase(id) === "running").length;
    return { busy, idle: this.live.size - busy };
  }

  /** Cleans up after a previous run of this server, then starts the idle sweeper. */
  async start(): Promise<void> {
    await this.leases.forgetPrevious();
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
    this.keeper = setInterval(() => this.live.parkIdle(), Math.max(100, Math.min(keepalive / 4, 5000)));
    this.keeper.unref();
    this.warm.start();
    this.workspaces.start();
    // With other servers about, a stream read here may be of a session another server runs now.
    this.follower = setInterval(() => void this.followOthers(), FOLLOW_EVERY_MS);
    this.follower.unref();
  }

  /**
   * Streams open here on sessions that run elsewhere (opened while the
   * session slept, before another server woke it) get what that server
   * writes, from the database, instead of waiting for events that never come
   * to this server's memory.
   */
  private async followOthers(): Promise<void> {
    if (this.leases.peers === 0) return;
    for (const [id, log] of this.logs) {
      if (log.readers === 0 || this.leases.isHeld(id) || this.live.get(id) || this.turns.phase(id) !== "free") continue;
      await log.catchUp().catch(() => undefined);
    }
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
    if (!agent.settings.credentialId && !agent.settings.confirmTools) this.warm.demand(pooled);
    const version = input.agentVersion ?? agent.version;
    if (version !== agent.version && !(await getAgentVersion(this.o.db, agent.id, version))) {
      throw notFound(`Agent "${agent.name}" has no version ${version}; its latest is ${agent.version}.`);
    }
    // Spares are made from the latest version only.
    const warm = version === agent.version && !agent.settings.credentialId && !agent.settings.confirmTools && this.warm.serves(pooled) && spareCanServe(input);
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
      if (spare) await this.live.adopt(record, agent, spare);
      else {
        release ??= await this.pool.reserve();
        await this.live.activate(record, release);
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
    if (!this.turns.claim(sessionId)) throw conflict("A turn is already running on this session.");
    try {
      const live = await this.live.activate(session);
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
        this.turns.finish(sessionId, turn);
        live.lastUsedAt = Date.now();
        options.onTurnEnd?.();
      };
      // Taken over meanwhile: its sandbox is going, and the turn ends as the lost lease's (server_lost).
      if (this.lostWhileClaimed.delete(sessionId)) turn.lost = true;
      this.turns.run(sessionId, turn);
      turn.done = this.runner
        .run(turn, log, options, release)
        .catch((error) => this.o.log.error(`session ${sessionId}: the turn failed:`, error))
        .finally(release);
      return { log, after };
    } finally {
      // Not taken after all (the sandbox did not come up, the log failed): the session is free again.
      this.turns.unclaim(sessionId);
      this.lostWhileClaimed.delete(sessionId);
    }
  }

  /** Stops the running turn; false when none runs. */
  async interrupt(sessionId: string): Promise<boolean> {
    await this.requireSession(sessionId);
    const turn = this.turns.running(sessionId);
    if (!turn) return false;
    turn.interrupted = true;
    // A tool use waiting for a person is denied, and the CLI told to stop there.
    this.confirmations.cancel(sessionId, "The turn was interrupted.");
    await turn.live.agent.interrupt();
    // A CLI that does not stop is ended; the turn then reports `interrupted`.
    const timer = setTimeout(() => void turn.live.agent.close(0), KILL_GRACE_MS);
    await turn.done.finally(() => clearTimeout(timer));
    return true;
  }

  async pause(sessionId: string): Promise<SessionRecord> {
    const session = await this.requireSession(sessionId);
    if (session.status === "ended") throw gone("This session has ended; it cannot be paused.");
    if (this.turns.phase(sessionId) !== "free") throw conflict("A turn is running on this session; interrupt it before pausing.");
    await this.lifecycle.transition(session, { to: "paused" });
    return (await getSession(this.o.db, sessionId))!;
  }

  async stop(sessionId: string): Promise<SessionRecord> {
    const session = await this.requireSession(sessionId);
    if (session.status === "ended") throw gone("This session has ended; it cannot be stopped.");
    this.confirmations.cancel(sessionId, "The session was stopped.");
    await this.lifecycle.transition(session, { to: "stopped" });
    return (await getSession(this.o.db, sessionId))!;
  }

  async resume(sessionId: string): Promise<SessionRecord> {
    const session = await this.requireSession(sessionId);
    if (session.status === "ended") throw gone("This session has ended; it cannot be resumed.");
    if (this.live.get(sessionId)?.agent.alive && !this.live.get(sessionId)?.closing) this.o.observability.metrics.resumedWarm();
    await this.live.activate(session);
    await updateSession(this.o.db, sessionId, { status: "active", touch: true });
    return (await getSession(this.o.db, sessionId))!;
  }

  async end(sessionId: string): Promise<SessionRecord> {
    const session = await this.requireSession(sessionId);
    this.confirmations.cancel(sessionId, "The session has ended.");
    if (session.status !== "ended") await this.lifecycle.transition(session, { to: "ended" });
    this.confirmations.forget(sessionId);
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
    if (this.turns.phase(sessionId) !== "free") throw conflict("A turn is running on this session; fork it when the turn is done.");
    let at: CheckpointRecord | undefined;
    if (checkpoint !== undefined) {
      at = await getCheckpoint(this.o.db, sessionId, checkpoint);
      if (!at) throw notFound(`Session ${sessionId} has no checkpoint ${checkpoint}.${await this.checkpointHint(sessionId)}`);
    } else {
      const live = this.live.get(sessionId);
      // Saved first: the fork gets the files as they are this moment (an ending session's save is under way).
      if (live?.closing) await live.closing;
      else if (live) await this.live.snapshot(live);
      else if (!parent.workspaceVersion && (await this.workspaces.has(parent))) await this.live.snapshot(await this.live.activate(parent));
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
    if (this.turns.phase(sessionId) !== "free") throw conflict("A turn is running on this session; interrupt it before rewinding.");
    const at = await getCheckpoint(this.o.db, sessionId, checkpoint);
    if (!at) throw notFound(`Session ${sessionId} has no checkpoint ${checkpoint}.${await this.checkpointHint(sessionId)}`);
    if (at.rewoundAt !== null) throw conflict(`Checkpoint ${checkpoint} was itself rewound away; fork the session at it instead.`);
    // Put to sleep (saving the files), so the next message starts from the checkpoint.
    await this.lifecycle.transition(session, { to: "rewinding" });
    // Files changed since the last turn (exec, uploads) become a checkpoint of their own.
    const saved = await this.workspaces.statsOfSaved(sessionId);
    const activity = this.live.activity(sessionId);
    if (activity.turn !== "free" || activity.sandbox === "starting") throw conflict("The session was woken while rewinding; try again.");
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
    const live = idle?.phase === "parked" ? idle : await this.live.activate(session);
    live.lastUsedAt = Date.now();
    if (session.status !== "active") await updateSession(this.o.db, sessionId, { status: "active", touch: true });
    return live.sandbox;
  }

  /** The sandbox when it is live, without waking it. */
  liveSandbox(sessionId: string): SandboxHandle | undefined {
    return this.live.get(sessionId)?.sandbox;
  }

  /**
   * A session's log for a reader (a stream). A copy kept here from an earlier stay may be behind what
   * another server wrote since: when no turn of the session runs here, it catches up with the database
   * first. (While other servers are about, the follower keeps it up to date after that; with none left,
   * nothing else would, and the reader would wait for events that were already written.)
   */
  async logForReader(sessionId: string): Promise<EventLog> {
    const log = await this.logFor(sessionId);
    if (!this.leases.isHeld(sessionId) && !this.live.get(sessionId) && this.turns.phase(sessionId) === "free") await log.catchUp().catch(() => undefined);
    return log;
  }

  async logFor(sessionId: string): Promise<EventLog> {
    const existing = this.logs.get(sessionId);
    if (existing && !existing.broken) return existing;
    const opening = this.openingLogs.get(sessionId);
    if (opening) return opening;
    const { telemetry } = this.o.observability;
    const opened = EventLog.open(this.o.db, sessionId, (events) => {
      const agent = this.live.get(sessionId)?.session.agentName;
      for (const e of events) telemetry.emit({ type: e.type, sessionId, agent, seq: e.seq, at: new Date(e.createdAt), data: e.data });
    })
      .then((log) => {
        this.logs.set(sessionId, log);
        return log;
      })
      .finally(() => this.openingLogs.delete(sessionId));
    this.openingLogs.set(sessionId, opened);
    return opened;
  }

  async requireSession(sessionId: string): Promise<SessionRecord> {
    const session = await getSession(this.o.db, sessionId);
    if (!session) throw notFound(`No session with id "${sessionId}".`);
    return session;
  }

  /** Ends running turns cleanly, puts every live session to sleep, closes streams. */
  async shutdown(timeoutMs = 10_000): Promise<void> {
    this.shuttingDown = true;
    // Heard at once by the other servers: nothing new is placed here.
    void this.leases.heartbeat();
    if (this.sweeper) clearInterval(this.sweeper);
    if (this.keeper) clearInterval(this.keeper);
    if (this.follower) clearInterval(this.follower);
    const spares = this.warm.shutdown();
    const collector = this.workspaces.stop();
    const deadline = Date.now() + timeoutMs;
    // A sandbox still coming up is not live yet: put to sleep below only once its start has settled.
    this.live.close();
    await Promise.race([this.live.startsSettled(), sleep(Math.max(0, deadline - Date.now() - 3000))]);
    for (const id of this.confirmations.sessions()) this.confirmations.cancel(id, "The server is shutting down.");
    const running = this.turns.allRunning().map(([, turn]) => turn);
    await Promise.race([Promise.all(running.map((t) => t.done)), sleep(Math.max(0, deadline - Date.now() - 3000))]);
    // All at once: each waits for its process to end and its sandbox to go.
    await Promise.all(this.turns.allRunning().map(([id]) => this.lifecycle.killTurn(id, "server_shutdown")));
    const sleeping = this.live.ids();
    const saving = Date.now();
    await Promise.all(sleeping.map((id) => this.live.deactivate(id, "evicted", "server_shutdown").catch(() => undefined)));
    if (sleeping.length) this.o.log.info(`put ${sleeping.length} live session(s) to sleep in ${Date.now() - saving} ms`);
    await spares.catch(() => undefined);
    // Every lease went with its sandbox: the other servers take these sessions on their next request.
    await this.leases.stop();
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

  /**
   * Answers a tool use held by the session's confirmation policy: allow runs
   * it, deny gives the model `message` instead of its result. Not found when
   * no such tool use waits; conflict when it was decided already.
   */
  async decideTool(sessionId: string, toolUseId: string, decision: "allow" | "deny", message?: string): Promise<ToolConfirmationRequest> {
    const session = await this.requireSession(sessionId);
    if (session.status === "ended") throw gone("This session has ended; no tool use waits on it.");
    const held = this.confirmations.take(sessionId, toolUseId);
    const denial = message || "The user denied this tool use.";
    try {
      // Written before the tool runs: every reader sees the decision, then what came of it.
      const log = await this.logFor(sessionId);
      await log.append([{ type: "tool_decision", data: { toolUseId, decision, ...(decision === "deny" ? { message: denial } : {}) } }]);
    } finally {
      held.finish(decision === "allow" ? { allow: true } : { allow: false, message: denial });
    }
    return held.request;
  }

  /** Tool uses of a session waiting for a decision. */
  waitingTools(sessionId: string): ToolConfirmationRequest[] {
    return this.confirmations.waiting(sessionId);
  }

  /**
   * The CLI asks before a covered tool runs: the question goes into the
   * session's event log (streams and reconnecting readers see it) and the
   * turn waits, its idle watchdog held, until someone decides.
   */
  private async holdTool(sessionId: string, request: ToolConfirmationRequest, signal: AbortSignal): Promise<ToolDecision> {
    const turn = this.turns.running(sessionId);
    if (!turn) return { allow: false, message: "No turn is running to confirm this tool use in." };
    const release = turn.holdWatchdog?.();
    try {
      // Registered before the event is written: a client may answer as soon as it reads it.
      const decision = this.confirmations.ask(sessionId, request, signal);
      try {
        const log = await this.logFor(sessionId);
        await log.append([{ type: "tool_confirmation", data: { toolUseId: request.toolUseId, name: request.name, input: request.input } }]);
      } catch (error) {
        // Nobody can see the question: the tool does not run.
        this.o.log.error(`session ${sessionId}: storing a tool confirmation failed:`, error);
        try {
          this.confirmations.take(sessionId, request.toolUseId).finish({ allow: false, message: "The confirmation could not be recorded." });
        } catch {
          // Answered or ended meanwhile: that answer stands.
        }
      }
      return await decision;
    } finally {
      release?.();
    }
  }

  /** hot: the agent process runs (or starts); idle: only the sandbox is there; asleep: neither. */
  stateOf(sessionId: string): SessionState {
    return this.live.stateOf(sessionId);
  }

  /** Live sessions by state, for ash_session_states (asleep ones are counted in the database). */
  liveStateCounts(): { hot: number; idle: number } {
    return this.live.stateCounts();
  }

  // ---------------------------------------------------------------------------

  private async unknownAgent(tenantId: string, name: string) {
    const names = (await listAgents(this.o.db, tenantId)).map((a) => a.name);
    return notFound(`No agent named "${name}".${names.length ? ` Deployed agents: ${names.join(", ")}.` : " No agents are deployed yet."}`);
  }

  private evict(sessionId: string, reason: "capacity" | "idle"): Promise<void> {
    return this.lifecycle.transition({ id: sessionId }, { to: "evicted", reason });
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
      if (this.logs.get(sessionId) === log && this.turns.phase(sessionId) === "free") this.logs.delete(sessionId);
    };
    if (ended) {
      // Its streams finish; new readers of an ended session read the database.
      log.close();
      void log.settled().then(drop);
    } else if (log.idle && log.readers === 0) drop();
  }

  /**
   * Wins the session's lease for this server. Taken over from a server that
   * died, the turn it was running gets an error and `done` first (a client
   * told nothing else knows it ended), and that server's sandbox row ends.
   * An event log kept here from an earlier stay is brought up to date first.
   */
  private async claimLease(sessionId: string): Promise<ClaimResult> {
    const claim = await this.leases.claim(sessionId, (from) => this.closeLostTurn(sessionId, from));
    if (claim.won) await this.syncCachedLog(sessionId);
    return claim;
  }

  /**
   * A log kept here from an earlier stay is behind what other servers wrote
   * since: it catches up with the database, or, when it cannot (writes of its
   * own pending, or broken), it is dropped and the next one opens fresh.
   */
  private async syncCachedLog(sessionId: string): Promise<void> {
    const cached = this.logs.get(sessionId);
    if (!cached || this.turns.running(sessionId)) return;
    if ((await cached.catchUp()) || cached.lastSeq === (await lastEventSeq(this.o.db, sessionId))) return;
    this.logs.delete(sessionId);
    cached.close();
  }

  private async closeLostTurn(sessionId: string, from: LeaseRecord): Promise<void> {
    this.o.log.info(`session ${sessionId}: taken over from server ${from.serverId}, whose lease ran out`);
    await this.syncCachedLog(sessionId);
    const last = await lastEventType(this.o.db, sessionId);
    if (last !== undefined && last !== "done") {
      const log = await this.logFor(sessionId);
      await log.append([
        { type: "error", data: { error: "The server running this turn stopped answering; the session continues on another server from its last saved state. Send the message again.", code: "server_lost" } },
        { type: "done", data: { sessionId } },
      ]);
    }
    await endSandboxesOf(this.o.db, sessionId, from.serverId, "server_lost");
    await updateSession(this.o.db, sessionId, { sandboxId: null });
  }

  /** A dead server's session nobody asked for yet: its cut turn is closed now, so its readers finish. */
  private async recoverOrphan(lease: LeaseRecord): Promise<void> {
    if (this.live.get(lease.sessionId) || this.live.activity(lease.sessionId).sandbox === "starting") return;
    const claim = await this.claimLease(lease.sessionId);
    if (claim.won) await this.leases.release(lease.sessionId);
  }

  /** Sessions another server took over while this one could not renew their leases: their sandboxes go unsaved. */
  private leasesLost(ids: string[]): void {
    for (const id of ids) {
      const turn = this.turns.running(id);
      if (turn) turn.lost = true;
      else if (this.turns.phase(id) === "claimed") this.lostWhileClaimed.add(id);
      void this.live.deactivate(id, "evicted", "lease_lost", false).catch((error) => this.o.log.error(`session ${id}: removing its sandbox failed:`, error));
    }
  }

  /**
   * The leases may run out unrenewed: no agent process of this server may run
   * on past them. A running turn is stopped and its sandbox goes unsaved
   * (another server may own the session by the time it could be saved); idle
   * sessions keep their sandboxes, parked, and go on once the leases are renewed.
   */
  private fence(): void {
    for (const [id, turn] of this.turns.allRunning()) {
      if (turn.lost) continue;
      turn.lost = true;
      void this.live.deactivate(id, "evicted", "lease_lost", false).catch((error) => this.o.log.error(`session ${id}: removing its sandbox failed:`, error));
    }
    this.live.parkIdle(Number.POSITIVE_INFINITY);
  }

  /** Turns a crash left without `done` get an error and `done`, so replaying clients finish. */
  private async closeInterruptedTurns(): Promise<void> {
    for (const sessionId of await unfinishedTurnSessions(this.o.db, this.o.serverId)) {
      // Running on another server right now (between its sandbox going and its `done`): not this server's to close.
      if (await this.leases.ownerElsewhere(sessionId)) continue;
      const log = await this.logFor(sessionId);
      await log.append([
        { type: "error", data: { error: "The server restarted while this turn was running.", code: "server_restart" } },
        { type: "done", data: { sessionId } },
      ]);
      await updateSession(this.o.db, sessionId, { sandboxId: null });
    }
  }
}

/** How often streams of sessions another server runs look for new events in the database. */
const FOLLOW_EVERY_MS = 500;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
