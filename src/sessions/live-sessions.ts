import { randomUUID } from "node:crypto";
import { dirname, join } from "node:path";
import type { SpawnedProcess } from "@anthropic-ai/claude-agent-sdk";
import type { ConsolaInstance } from "consola";
import type { ServerConfig } from "../config";
import type { AshDatabase } from "../db/types";
import { getAgentFiles, getAgentVersion, type AgentRecord } from "../db/queries/agents";
import { updateSession, type SessionRecord, type SessionSettings } from "../db/queries/sessions";
import { endSandbox, insertSandbox } from "../db/queries/sandboxes";
import type { GatewayGrant, ModelGateway } from "../gateway/gateway";
import type { StartQueue } from "../runtime/start-queue";
import type { ToolConfirmationRequest, ToolDecision } from "../runtime/agent-session";
import { holdOutputUntil, untilFileExists } from "../runtime/hold-start";
import { createTranscriptStore, hasTranscript, materializeTranscript } from "../runtime/transcript-store";
import { writeFiles } from "../agents/agent-files";
import { shuttingDown, unavailable, unprocessable } from "../errors";
import { openCredential, type OpenedCredential } from "../vault/credentials";
import type { Vault } from "../vault/vault";
import type { EvictionReason, Observability } from "../observability";
import type { SessionState } from "../contract";
import type { PoolMember } from "../sandbox/pool";
import { prepareSandboxAccess, type SandboxAccessDeps } from "./sandbox-access";
import { buildAgentEnv } from "./agent-env";
import { sandboxAgent, type AgentLauncher, type AgentProcess } from "./agent-process";
import type { BudgetState, GatewayAccounting, TurnUsage } from "./gateway-accounting";
import { isBusy, moveLive, type LivePhase, type SessionActivity, type SessionTurns } from "./session-state";
import type { SandboxFactory, SandboxHandle } from "./types";
import type { CheckpointInput, Workspaces } from "./workspaces";
import type { WarmSpare } from "./warm-pool";
import type { ClaimResult } from "../cluster/leases";

/** A session whose sandbox is on this server (its agent process running, or parked). */
export interface LiveSession {
  session: SessionRecord;
  sandbox: SandboxHandle;
  agent: AgentProcess;
  /** A new agent process for the same sandbox, resuming `resume` (what waking an idle session starts). */
  respawn: (resume: string | undefined) => AgentProcess;
  /** hot, parked (agent process stopped after ASH_KEEPALIVE_MS, the sandbox stays) or closing; moved only by moveLive. */
  phase: LivePhase;
  /** The stopping of its parked agent process, awaited before a new one resumes the transcript. */
  parking?: Promise<void>;
  lastUsedAt: number;
  /** Set with phase closing: it still holds its pool slot until its processes are gone. */
  closing?: Promise<void>;
  /** Its model gateway token's grant, revoked when the sandbox goes. */
  grant: GatewayGrant;
  budget: BudgetState;
  /** Tokens of the running turn, as the gateway read them. */
  turnUsage?: TurnUsage;
}

/**
 * Kept in a session's settings until its CLI first starts: continue the
 * conversation of Claude Code session `forkOf` under a new id (a fork or a
 * rewind), cut at `forkAt` (a checkpoint's position) when set.
 */
export interface ForkState {
  forkOf?: string;
  forkAt?: { uuid: string | null; idx: number | null };
}

/** Why a sandbox goes, and what its row in `sandboxes` says. */
export type SandboxEnd = "evicted" | "destroyed" | "paused" | "stopped" | "ended";

/** deactivate()'s reasons as ash_evictions_total labels them. */
const EVICTION_REASON: Record<string, EvictionReason> = {
  idle_timeout: "idle",
  capacity: "capacity",
  paused: "pause",
  stopped: "stop",
  ended: "end",
  server_shutdown: "shutdown",
  process_exited: "crash",
  lease_lost: "lease_lost",
};

export interface LiveSessionsOptions {
  config: ServerConfig;
  db: AshDatabase;
  serverId: string;
  sandboxes: SandboxFactory;
  workspaces: Workspaces;
  gateway: ModelGateway;
  access: SandboxAccessDeps;
  starts: StartQueue;
  accounting: GatewayAccounting;
  turns: SessionTurns<unknown>;
  vault?: Vault;
  log: ConsolaInstance;
  observability: Observability;
  launch: AgentLauncher;
  /** A pool slot for a new sandbox (evicting an idle one when full). */
  reserve: () => Promise<() => void>;
  /** A tool use held by the session's confirmation policy: resolves with a person's decision. */
  confirm: (sessionId: string, request: ToolConfirmationRequest, signal: AbortSignal) => Promise<ToolDecision>;
  /** The session's sandbox is gone: its event log may let go of memory. */
  gone: (sessionId: string) => void;
  /** Wins the session's lease for this server (docs/decisions/cluster-leases.md); false when another server runs it. */
  claim: (sessionId: string) => Promise<ClaimResult>;
  /** Lets go of one hold on the session's lease. */
  release: (sessionId: string) => Promise<void>;
  /** Renews the lease of a session this server holds; false when another server took it meanwhile. */
  stillOwned: (sessionId: string) => Promise<boolean>;
}

/**
 * The sessions whose sandbox is on this server: bringing one up (fresh,
 * restored, or from a warm spare), waking a parked one, parking idle ones,
 * saving and tearing down. Every sandbox comes up once however many callers
 * ask at the same time.
 */
export class LiveSessions {
  private readonly live = new Map<string, LiveSession>();
  private readonly activating = new Map<string, Promise<LiveSession>>();
  /** Set at shutdown: no agent process starts from then on, not even for a start already under way. */
  private closed = false;

  constructor(private readonly o: LiveSessionsOptions) {}

  /**
   * No agent process starts here any more (shutdown). A start under way fails
   * with 503 before its process would run: once shutdown has put the live
   * sessions to sleep and let go of their leases, a process started after
   * would run a session another server may be running too.
   */
  close(): void {
    this.closed = true;
  }

  /** Resolves once every sandbox coming up here is up or has failed (starts that begin meanwhile included). */
  async startsSettled(): Promise<void> {
    while (this.activating.size > 0) await Promise.all([...this.activating.values()].map((start) => start.catch(() => undefined)));
  }

  private refuseWhenClosed(): void {
    if (this.closed) throw shuttingDown();
  }

  get size(): number {
    return this.live.size;
  }

  get(sessionId: string): LiveSession | undefined {
    return this.live.get(sessionId);
  }

  ids(): string[] {
    return [...this.live.keys()];
  }

  /** The one state of a session on this server (see session-state.ts). */
  activity(sessionId: string): SessionActivity {
    const turn = this.o.turns.phase(sessionId);
    if (this.activating.has(sessionId)) return { sandbox: "starting", turn };
    const live = this.live.get(sessionId);
    return { sandbox: live ? live.phase : "asleep", turn };
  }

  /** What the pool sees of each live session, to choose whom to evict. */
  poolMembers(): PoolMember[] {
    return [...this.live.values()].map((l) => ({ key: l.session.id, busy: isBusy(this.activity(l.session.id)), lastUsedAt: l.lastUsedAt }));
  }

  /** hot: the agent process runs (or starts); idle: only the sandbox is there; asleep: neither. */
  stateOf(sessionId: string): SessionState {
    const { sandbox } = this.activity(sessionId);
    if (sandbox === "parked") return "idle";
    return sandbox === "hot" || sandbox === "starting" ? "hot" : "asleep";
  }

  /** Live sessions by state, for ash_session_states (asleep ones are counted in the database). */
  stateCounts(): { hot: number; idle: number } {
    let idle = 0;
    for (const live of this.live.values()) if (live.phase === "parked") idle++;
    return { hot: this.live.size - idle, idle };
  }

  /** Resolves once a sandbox coming up for the session is up or has failed (at once when none is). */
  async startSettled(sessionId: string): Promise<void> {
    await this.activating.get(sessionId)?.catch(() => undefined);
  }

  /** Brings a session's sandbox and CLI up, once, however many callers ask at the same time. */
  activate(session: SessionRecord, reserved?: () => void): Promise<LiveSession> {
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
    if (live?.phase === "parked") {
      // Idle: the sandbox and its folder are as they were; only the agent process starts again.
      reserved?.();
      const waking = this.wake(session, live).finally(() => this.activating.delete(session.id));
      this.activating.set(session.id, waking);
      return waking;
    }
    const promise = (async () => {
      if (live) await this.deactivate(session.id, "evicted", "process_exited", false);
      return this.bringUpWithSlot(session, reserved);
    })().finally(() => this.activating.delete(session.id));
    this.activating.set(session.id, promise);
    return promise;
  }

  private async bringUpWithSlot(session: SessionRecord, reserved?: () => void): Promise<LiveSession> {
    let release = reserved;
    try {
      // The lease first: a session another server runs takes no slot (and evicts nothing) here.
      await this.takeLease(session.id);
      try {
        release ??= await this.o.reserve();
        return await this.bringUp(session);
      } catch (error) {
        await this.o.release(session.id);
        throw error;
      }
    } finally {
      release?.();
    }
  }

  /** One hold on the session's lease, kept until its sandbox goes; a clear error when another server runs it. */
  private async takeLease(sessionId: string): Promise<void> {
    const claim = await this.o.claim(sessionId);
    if (!claim.won) {
      throw unavailable(`This session is running on another server (${claim.holder.serverId}) right now; send the request again and it is passed on there.`, 1);
    }
  }

  /** Starts the agent process of an idle session again, resuming its conversation from the transcript in its sandbox. */
  private async wake(session: SessionRecord, live: LiveSession): Promise<LiveSession> {
    await live.parking;
    // Its lease may have gone while it was idle (this server cut off from the database): no second agent.
    if (live.phase === "parked" && !(await this.o.stillOwned(session.id))) {
      throw unavailable("This session was taken over by another server; send the request again and it is passed on there.", 1);
    }
    // Looked up while still parked: once hot, nothing may come between the state and its new process.
    const resume = await this.conversationToResume(live);
    this.refuseWhenClosed();
    if (!moveLive(live, "hot")) {
      // Put to sleep while it was waking (a pause, a rewind): it comes up again from what was saved.
      await live.closing;
      return this.bringUpWithSlot(session);
    }
    // Its loopback bridges (to the model gateway and the egress proxies) were stopped with the process.
    await live.sandbox.resumeNetwork?.();
    live.agent = live.respawn(resume);
    live.agent.start();
    live.lastUsedAt = Date.now();
    this.o.observability.metrics.woken();
    this.o.log.debug(`session ${live.session.id}: agent process started again in sandbox ${live.sandbox.id}`);
    return live;
  }

  /** The conversation a woken agent goes on with: the last process's, else the stored one, if any line of it is stored. */
  private async conversationToResume(live: LiveSession): Promise<string | undefined> {
    for (const id of new Set([live.agent.sdkSessionId, live.session.sdkSessionId])) {
      if (id && (await hasTranscript(this.o.db, live.session.id, id))) return id;
    }
    if (live.session.sdkSessionId) this.noConversation(live.session.id, live.session.sdkSessionId);
    return undefined;
  }

  private noConversation(sessionId: string, sdkSessionId: string): void {
    this.o.log.warn(`session ${sessionId}: no line of its conversation ${sdkSessionId} is stored; it starts a new one`);
  }

  /**
   * Stops the agent process of every session without a turn for
   * ASH_KEEPALIVE_MS. Its sandbox (folder, resource groups) stays until the
   * idle timeout, so the next message only starts the process again.
   */
  parkIdle(now = Date.now()): void {
    for (const [id, live] of this.live) {
      const activity = this.activity(id);
      if (activity.sandbox !== "hot" || isBusy(activity)) continue;
      if (!live.agent.alive || now - live.lastUsedAt < this.o.config.keepaliveMs) continue;
      moveLive(live, "parked");
      this.o.log.debug(`session ${id}: agent process stopped after ${this.o.config.keepaliveMs} ms without a turn`);
      // With no process left to use them, the sandbox's network bridges stop too: an idle session runs nothing.
      live.parking = live.agent
        .close(2000)
        .catch(() => undefined)
        .then(() => live.sandbox.suspendNetwork?.())
        .catch((error) => this.o.log.warn(`session ${id}: stopping its network bridges failed:`, error));
    }
  }

  /** Makes a warm spare this new session's live sandbox: its transcripts, its model, its DB rows. */
  adopt(session: SessionRecord, agentRecord: AgentRecord, spare: WarmSpare): Promise<LiveSession> {
    // Registered before any await: the spare's pool slot passes to the session without a gap.
    spare.grant.sessionId = session.id;
    const live: LiveSession = {
      session: { ...session, sandboxId: spare.sandbox.id },
      sandbox: spare.sandbox,
      agent: spare.agent,
      respawn: (resume) => spare.respawn(session.id, resume, session.model ?? undefined),
      phase: "hot",
      lastUsedAt: Date.now(),
      grant: spare.grant,
      budget: { used: 0 },
    };
    this.live.set(session.id, live);
    // A start like any other: shutdown and a pause or stop wait for it to settle.
    const adopting = this.o.observability.tracing.withSpan("sandbox.spawn", { "ash.session_id": session.id, "ash.sandbox_id": spare.sandbox.id, "ash.warm": true }, async () => {
      const startedAt = performance.now();
      const { db } = this.o;
      try {
        await this.takeLease(session.id);
        this.refuseWhenClosed();
        await spare.transcripts.bind(session.id);
        live.budget = await this.o.accounting.budgetFor(session, agentRecord.settings.maxTokens);
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
    }).finally(() => this.activating.delete(session.id));
    this.activating.set(session.id, adopting);
    return adopting;
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
    const budget = await this.o.accounting.budgetFor(session, agentVersion?.settings.maxTokens);
    const access = prepareSandboxAccess(this.o.access, {
      credential: credential && credential.type !== "custom" ? credential : undefined,
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
    // Cleared when none of it is stored, so the agent starts a new conversation instead of failing to find it.
    let resume = session.sdkSessionId ?? forking;
    let restored = false;
    const hasSnapshot = await this.o.workspaces.has(session);
    const sandbox = await this.o.sandboxes
      .create({
        id: sandboxId,
        sessionId: session.id,
        env,
        network: access.network,
        // Runs before any process of the sandbox exists, so nothing races these writes.
        populate: async (workspaceDir) => {
          if (!hasSnapshot) await writeFiles(workspaceDir, await getAgentFiles(db, session.agentId, session.agentVersion));
          if (resume && !(await materializeTranscript(db, session.id, resume, join(dirname(workspaceDir), "home", ".claude"), forking ? settings.forkAt : undefined))) {
            this.noConversation(session.id, resume);
            resume = undefined;
          }
        },
      })
      .catch((error) => {
        this.o.gateway.revoke(access.grant);
        throw error;
      });
    try {
      // Extracted by a process of the sandbox's own user, never by the server.
      // The span is there either way, so a trace shows whether the workspace came from a snapshot.
      restored = await tracing.withSpan("sandbox.restore", { "ash.session_id": session.id }, async (restoreSpan) => {
        const done = hasSnapshot ? await this.o.workspaces.restore(session, sandbox) : false;
        restoreSpan.setAttribute("ash.restored", done);
        return done;
      });
      // Also what wakes an idle session: the same process in the same sandbox, resuming its conversation.
      const respawn = (again: string | undefined) =>
        sandboxAgent(this.o.launch, sandbox, {
          env,
          cliEnv: access.cliEnv,
          model: session.model ?? undefined,
          systemPrompt: [agentVersion?.systemPrompt, settings.systemPrompt].filter(Boolean).join("\n\n") || undefined,
          mcpServers: settings.mcpServers,
          permissionMode: settings.permissionMode,
          allowedTools: settings.allowedTools,
          disallowedTools: settings.disallowedTools,
          confirmTools: settings.confirmTools ?? agentVersion?.settings.confirmTools,
          confirm: (request, signal) => this.o.confirm(session.id, request, signal),
          resume: again ?? resume,
          fork: again === undefined && resume !== undefined && forking !== undefined,
          transcriptStore: createTranscriptStore(db, session.id),
          spawn: (box, options) => this.held(box.spawnClaudeCode(options)),
          stderr: (text) => this.o.log.debug(`[${session.id}] ${text.trimEnd()}`),
          startQueue: this.o.starts,
          startTimeoutMs: this.o.config.agentStartTimeoutMs,
        });
      this.refuseWhenClosed();
      const agent = respawn(undefined);
      agent.start();
      await insertSandbox(db, { id: sandboxId, sessionId: session.id, serverId: this.o.serverId });
      await updateSession(db, session.id, { sandboxId, status: session.status === "starting" ? "active" : session.status });
      const live: LiveSession = { session: { ...session, sandboxId }, sandbox, agent, respawn, phase: "hot", lastUsedAt: Date.now(), grant: access.grant, budget };
      this.live.set(session.id, live);
      this.o.log.debug(`session ${session.id}: sandbox ${sandboxId} up${restored ? " (restored)" : ""}`);
      return { live, restored };
    } catch (error) {
      this.o.gateway.revoke(access.grant);
      await sandbox.destroy().catch(() => undefined);
      throw error;
    }
  }

  /** A spawned agent process, its start-up held back while ASH_TEST_START_HOLD_FILE is missing (tests only). */
  private held(child: SpawnedProcess): SpawnedProcess {
    const file = this.o.config.testStartHoldFile;
    return file ? holdOutputUntil(file, child) : child;
  }

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

  /** Saves the live workspace; after a turn, as that turn's checkpoint. */
  async snapshot(live: Pick<LiveSession, "session" | "sandbox">, checkpoint?: CheckpointInput): Promise<void> {
    const { tracing, metrics } = this.o.observability;
    try {
      await tracing.withSpan("sandbox.snapshot", { "ash.session_id": live.session.id }, async (span) => {
        const startedAt = performance.now();
        const { version } = await this.o.workspaces.save(live.session.id, live.sandbox, checkpoint);
        live.session.workspaceVersion = version.id;
        span.setAttribute("ash.snapshot.bytes", version.bytes);
        span.setAttribute("ash.snapshot.changed_bytes", version.changedBytes);
        metrics.snapshotTaken({ bytes: version.bytes, durationMs: performance.now() - startedAt, listed: version.walked ? "everything" : "changes" });
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

  /**
   * Saves the workspace (unless told not to), ends the CLI, destroys the
   * sandbox. The session leaves the pool only when its processes are gone,
   * so live processes never outnumber ASH_MAX_SANDBOXES.
   */
  deactivate(sessionId: string, status: SandboxEnd, reason: string, save = true): Promise<void> {
    const live = this.live.get(sessionId);
    if (!live) return Promise.resolve();
    if (live.closing) return live.closing;
    moveLive(live, "closing");
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
        this.o.gateway.revoke(live.grant);
        await live.sandbox.destroy().catch((error) => this.o.log.error(`sandbox ${live.sandbox.id}: destroy failed:`, error));
        await endSandbox(this.o.db, live.sandbox.id, status === "evicted" ? "evicted" : "destroyed", reason).catch(() => undefined);
        if (this.live.get(sessionId) === live) this.live.delete(sessionId);
        // Only once its processes are gone may another server start the session.
        await this.o.release(sessionId);
        this.o.gone(sessionId);
      }
    });
    return live.closing;
  }
}
