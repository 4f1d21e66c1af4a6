import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import type { ConsolaInstance } from "consola";
import type { ServerConfig } from "../config";
import type { AshDatabase } from "../db/types";
import { getAgent, listAgentWarmSpares, getAgentFiles, type AgentRecord } from "../db/queries/agents";
import type { SessionSettings } from "../db/queries/sessions";
import { writeFiles } from "../agents/agent-files";
import { createBindableTranscriptStore, createTranscriptStore, type BindableTranscriptStore } from "../runtime/transcript-store";
import type { StartQueue } from "../runtime/start-queue";
import type { SandboxFactory, SandboxHandle } from "./types";
import { buildAgentEnv } from "./agent-env";
import type { GatewayGrant } from "../gateway/gateway";
import { prepareSandboxAccess, type SandboxAccessDeps } from "./sandbox-access";
import { launchAgentSession, sandboxAgent, type AgentLauncher, type AgentProcess } from "./agent-process";

/** A sandbox with an agent's files in place and its CLI already started, waiting for a session. */
export interface WarmSpare {
  agentId: string;
  agentName: string;
  version: number;
  sandbox: SandboxHandle;
  agent: AgentProcess;
  transcripts: BindableTranscriptStore;
  /** Its gateway token's grant: bound to the session that takes the spare. */
  grant: GatewayGrant;
  /** A new agent process in this sandbox for the session that took it (waking it when idle). */
  respawn(sessionId: string, resume: string | undefined, model: string | undefined): AgentProcess;
}

export interface WarmPoolOptions {
  config: ServerConfig;
  db: AshDatabase;
  sandboxes: SandboxFactory;
  log: ConsolaInstance;
  /** A pool slot only when one is free: a spare never pushes a session out. */
  tryReserve: () => (() => void) | undefined;
  access: SandboxAccessDeps;
  /** Spares start through the same queue as sessions, after every waiting session start. */
  starts: StartQueue;
  /** Makes agent processes (default: the Claude Code CLI). */
  launch?: AgentLauncher;
  now?: () => number;
  /** Sessions with a message accepted or a turn running on this server: spares are made between turns. */
  turnsActive?: () => number;
  /** How long the server must be without turns before a spare's next step, and how long a spare waits for that at most. */
  quietMs?: number;
  maxQuietWaitMs?: number;
}

/** A spare being made: dropped when done, or stopped at once. */
interface Pending {
  drop: boolean;
  done: Promise<void>;
  stop?: () => void;
}

/** How often the pool checks for deploys and refills (also right after a spare is taken or dropped). */
const CHECK_EVERY_MS = 1000;

/**
 * What one spare holds, for the ASH_WARM_MEMORY_MB budget: a started agent
 * process and its sandbox measured 192 MB RSS (docs/benchmarks.md).
 */
export const SPARE_MEMORY_MB = 200;

/**
 * Niceness of a spare's processes until a session takes it: its start-up gets
 * the CPU only when turns leave some (docs/decisions/sessions-warm-pool.md).
 */
export const SPARE_NICE = 10;

/**
 * Sessions of one agent created within this long of each other count as one
 * burst; the largest burst in the last ASH_WARM_DEMAND_MS is how many spares
 * the agent keeps (within ASH_WARM_MEMORY_MB), so a burst that comes again is
 * served by spares instead of as many CLI start-ups at once.
 */
export const BURST_WINDOW_MS = 1000;
/** No agent's demand asks for more spares than this (the memory budget and sandbox cap bound it further). */
const MAX_DEMAND_SPARES = 32;

/**
 * A spare's steps that load the server (its sandbox and files, its priming
 * exchange) wait until no turn has run for QUIET_MS: a spare taken by a new
 * session is refilled while that session's first message is on its way, and
 * the refill would share the CPU with that very turn. Turns that never stop
 * (a busy server, a slow model) hold a spare back for MAX_QUIET_WAIT_MS at most.
 */
const QUIET_MS = 300;
const MAX_QUIET_WAIT_MS = 5000;
/**
 * A spare just taken counts as a turn about to start, until one does or this
 * long has passed: on a loaded server the new session's first message may come
 * later than QUIET_MS after its create.
 */
const TAKEN_GRACE_MS = 2000;
const QUIET_POLL_MS = 50;

/** A spare given up while it waited for a moment between turns. */
class SpareDropped extends Error {
  override name = "SpareDropped";
}

/** A spare whose first (priming) model call takes longer than this is given up (and tried again on the next check). */
const SPARE_PRIME_TIMEOUT_MS = 60_000;

/**
 * ASH_WARM_POOL: up to N spares per named agent, made the way a plain session
 * of that agent's current version would be (same files, env, system prompt),
 * so creating such a session skips the sandbox and CLI start-up. Spares hold
 * pool slots, give them back first when a session needs room, and are
 * replaced when their agent is redeployed.
 */
export class WarmPool {
  private readonly ready = new Map<string, WarmSpare[]>();
  /** Spares being made, per agent, each with the way to drop it when it is done. */
  private readonly making = new Map<string, Set<Pending>>();
  /** When a session of each agent was last created: demand for a spare. */
  private readonly lastDemand = new Map<string, number>();
  /** Per agent: creation times within the last BURST_WINDOW_MS, and its largest burst (with when it was seen). */
  private readonly recentCreates = new Map<string, number[]>();
  private readonly peakBurst = new Map<string, { count: number; at: number }>();
  /** Spares agents ask for themselves (PATCH /api/agents/:name/config warmSpares), read at each check. */
  private configured: Record<string, number> = {};
  private timer?: NodeJS.Timeout;
  private checking?: Promise<void>;
  private stopped = false;
  /** When spares were taken whose session has not been seen running a turn yet (see TAKEN_GRACE_MS). */
  private takenAt: number[] = [];
  /** Set when a spare could not be primed (no side questions in this SDK, or one failed): spares are no longer primed. */
  private primingFailed = false;

  constructor(private readonly o: WarmPoolOptions) {}

  /** Whether `agent` has a warm pool at all. */
  serves(agent: string): boolean {
    return (this.wanted()[agent] ?? 0) > 0;
  }

  /** A session of `agent` was just created: it gets spares (as many as its largest recent burst) for ASH_WARM_DEMAND_MS. */
  demand(agent: string): void {
    if (this.o.config.warmDemandMs === 0) return;
    const now = this.now();
    this.lastDemand.set(agent, now);
    const burst = (this.recentCreates.get(agent) ?? []).filter((at) => at > now - BURST_WINDOW_MS);
    burst.push(now);
    this.recentCreates.set(agent, burst.slice(-MAX_DEMAND_SPARES));
    const peak = this.peakBurst.get(agent);
    if (!peak || burst.length >= peak.count || peak.at < now - this.o.config.warmDemandMs) this.peakBurst.set(agent, { count: Math.min(burst.length, MAX_DEMAND_SPARES), at: now });
    this.check();
  }

  /**
   * Spares wanted per agent: ASH_WARM_POOL's counts, and for every other agent
   * with a session created in the last ASH_WARM_DEMAND_MS first one (most
   * recent first), then up to its largest recent burst, as many as
   * ASH_WARM_MEMORY_MB holds.
   */
  wanted(): Record<string, number> {
    // An agent's own warmSpares wins over ASH_WARM_POOL's count for it; 0 turns its spares off.
    const wanted: Record<string, number> = { ...this.o.config.warmPool, ...this.configured };
    for (const [name, n] of Object.entries(wanted)) if (n <= 0) delete wanted[name];
    let room = Math.floor(this.o.config.warmMemoryMb / SPARE_MEMORY_MB);
    const since = this.now() - this.o.config.warmDemandMs;
    const recent = [...this.lastDemand].filter(([, at]) => at >= since).sort((a, b) => b[1] - a[1]);
    for (const [name] of this.lastDemand) {
      if (recent.some(([n]) => n === name)) continue;
      this.lastDemand.delete(name);
      this.recentCreates.delete(name);
      this.peakBurst.delete(name);
    }
    const byDemand = recent.map(([name]) => name).filter((name) => !Object.hasOwn(wanted, name) && this.configured[name] !== 0);
    for (const name of byDemand) {
      if (room <= 0) break;
      wanted[name] = 1;
      room--;
    }
    // Then more for agents whose sessions came in bursts, the most recently used first.
    for (const name of byDemand) {
      if (room <= 0) break;
      const peak = this.peakBurst.get(name);
      if (!wanted[name] || !peak || peak.at < since) continue;
      const more = Math.min(peak.count - 1, room);
      if (more <= 0) continue;
      wanted[name] += more;
      room -= more;
    }
    return wanted;
  }

  private now(): number {
    return this.o.now?.() ?? Date.now();
  }

  /** Ready spares in all. */
  get readyCount(): number {
    let n = 0;
    for (const list of this.ready.values()) n += list.length;
    return n;
  }

  /** Ready spares per configured agent, for /health. */
  counts(): Record<string, number> {
    return Object.fromEntries(Object.keys(this.wanted()).map((name) => [name, this.ready.get(name)?.length ?? 0]));
  }

  start(): void {
    if (Object.keys(this.o.config.warmPool).length === 0 && this.o.config.warmDemandMs === 0) return;
    this.timer = setInterval(() => this.check(), CHECK_EVERY_MS);
    this.timer.unref();
    this.check();
  }

  /**
   * A ready spare of this agent version, now the caller's (synchronously, so
   * its slot passes from the pool's spares to the caller's live sessions at once).
   */
  take(agent: AgentRecord): WarmSpare | undefined {
    const list = this.ready.get(poolKey(agent));
    if (!list) return undefined;
    const index = list.findIndex((s) => s.version === agent.version && s.agent.alive);
    if (index < 0) return undefined;
    const [spare] = list.splice(index, 1);
    // From now on it runs turns: the priority of every other session's processes.
    spare!.sandbox.renice?.(0);
    this.takenAt.push(performance.now());
    this.check();
    return spare;
  }

  /** Ends one spare to free its slot for a session: a ready one, else one being made. */
  async yieldOne(): Promise<boolean> {
    for (const [name, list] of this.ready) {
      const spare = list.shift();
      if (!spare) continue;
      this.o.log.debug(`warm pool ${name}: spare ${spare.sandbox.id} gives way to a session`);
      await this.destroy(spare);
      return true;
    }
    for (const set of this.making.values()) {
      for (const pending of set) {
        if (pending.drop) continue;
        pending.drop = true;
        // Its agent process stops at once, even mid-start: a session must not wait for a spare's start-up.
        pending.stop?.();
        await pending.done;
        return true;
      }
    }
    return false;
  }

  async shutdown(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    for (const set of this.making.values()) for (const pending of set) (pending.drop = true), pending.stop?.();
    await this.checking?.catch(() => undefined);
    const all = [...this.ready.values()].flat();
    this.ready.clear();
    await Promise.all([...[...this.making.values()].flatMap((set) => [...set].map((p) => p.done)), ...all.map((s) => this.destroy(s))]);
  }

  // ---------------------------------------------------------------------------

  /** One pass at a time: drop spares of old versions, make the missing ones (also after an agent's config changed). */
  check(): void {
    if (this.stopped || this.checking) return;
    this.checking = this.checkNow()
      .catch((error) => this.o.log.error("warm pool check failed:", error))
      .finally(() => (this.checking = undefined));
  }

  private async checkNow(): Promise<void> {
    this.configured = Object.fromEntries((await listAgentWarmSpares(this.o.db)).map((a) => [poolKey(a), a.warmSpares]));
    const all = this.wanted();
    // Agents no longer wanted (their demand stopped): their spares go, ready or being made.
    for (const [name, list] of this.ready) {
      if (all[name] || list.length === 0) continue;
      this.ready.delete(name);
      this.o.log.debug(`warm pool ${name}: no recent sessions; dropping ${list.length} spare(s)`);
      await Promise.all(list.map((s) => this.destroy(s)));
    }
    for (const [name, set] of this.making) if (!all[name]) for (const pending of set) pending.drop = true;
    for (const [name, wanted] of Object.entries(all)) {
      if (this.stopped) return;
      const agent = await getAgent(this.o.db, ...agentOfKey(name));
      const list = this.ready.get(name) ?? [];
      // Spares of an older version (or of a deleted agent, or whose CLI died) hold stale files: replace them.
      const stale = list.filter((s) => !agent || s.version !== agent.version || !s.agent.alive);
      if (stale.length > 0) {
        this.ready.set(name, list.filter((s) => !stale.includes(s)));
        this.o.log.debug(`warm pool ${name}: dropping ${stale.length} spare(s) of an old version`);
        await Promise.all(stale.map((s) => this.destroy(s)));
      }
      if (!agent) continue;
      const making = this.making.get(name) ?? new Set();
      this.making.set(name, making);
      while ((this.ready.get(name)?.length ?? 0) + making.size < wanted) {
        const release = this.o.tryReserve();
        if (!release) return;
        const pending: Pending = { drop: false, done: Promise.resolve() };
        making.add(pending);
        pending.done = this.make(agent, pending)
          .then(async (spare) => {
            // Dropped while it was made (a session needed the slot, a redeploy, shutdown): end it at once.
            const current = this.stopped ? undefined : await getAgent(this.o.db, ...agentOfKey(name)).catch(() => undefined);
            if (pending.drop || !current || current.version !== spare.version || !this.wanted()[name]) {
              await this.destroy(spare);
            } else {
              const now = this.ready.get(name) ?? [];
              now.push(spare);
              this.ready.set(name, now);
            }
          })
          .catch((error) =>
            error instanceof SpareDropped ? this.o.log.debug(`warm pool ${name}: a spare was dropped before it was made`) : this.o.log.warn(`warm pool ${name}: making a spare failed:`, error),
          )
          .finally(() => {
            making.delete(pending);
            release();
          });
      }
    }
  }

  /** The same sandbox and CLI a plain session of this agent version gets (see LiveSessions.bringUpNow). */
  private async make(agent: AgentRecord, pending: Pending): Promise<WarmSpare> {
    const { db, config } = this.o;
    await this.betweenTurns(pending);
    const id = randomUUID();
    const env = buildAgentEnv({ config, agentEnv: agent.env, extraEnv: {} });
    const access = prepareSandboxAccess(this.o.access, { sandboxId: id, agentName: agent.name, agentEnv: agent.env, extraEnv: {}, egress: agent.settings.egress ?? [] });
    const created = await this.o.sandboxes
      .create({
        id,
        sessionId: `warm:${agent.name}`,
        env,
        network: access.network,
        populate: async (workspaceDir) => writeFiles(workspaceDir, await getAgentFiles(db, agent.id, agent.version)),
      })
      .catch((error) => {
        this.o.access.gateway.revoke(access.grant);
        throw error;
      });
    // A spare that is dropped takes its token along.
    const sandbox = { ...created, destroy: () => (this.o.access.gateway.revoke(access.grant), created.destroy()) };
    try {
      const transcripts = createBindableTranscriptStore(db);
      const build = (store: BindableTranscriptStore | ReturnType<typeof createTranscriptStore>, more: { resume?: string; model?: string; priority: "session" | "spare" }) =>
        sandboxAgent(this.o.launch ?? launchAgentSession, sandbox, {
          env,
          cliEnv: access.cliEnv,
          systemPrompt: agent.systemPrompt ?? undefined,
          transcriptStore: store,
          // A spare's start-up runs below turns (nice); it gets their priority when a session takes it.
          // Only a root server can give the priority back, so only a root server lowers it.
          spawn: (box, options) => box.spawnClaudeCode(options, more.priority === "spare" && process.getuid?.() === 0 ? { nice: SPARE_NICE } : {}),
          stderr: (text) => this.o.log.debug(`[warm ${id}] ${text.trimEnd()}`),
          resume: more.resume,
          model: more.model,
          startQueue: this.o.starts,
          startPriority: more.priority,
          startTimeoutMs: config.agentStartTimeoutMs,
        });
      const session = build(transcripts, { priority: "spare" });
      pending.stop = () => void session.close(0);
      session.start();
      // Ready means the CLI has done its start-up, so a claim skips all of it.
      try {
        await session.started();
        if (config.warmPrime && !this.primingFailed) {
          await this.betweenTurns(pending);
          // The CLI's first model call, done now and not in a session's first turn; the gateway answers it.
          access.grant.priming = true;
          try {
            if (!(await session.prime(SPARE_PRIME_TIMEOUT_MS))) this.primingFailed = true;
          } catch (error) {
            // Later spares are not primed: the spare is still good, only its first turn is slower.
            this.primingFailed = true;
            this.o.log.warn(`warm pool ${agent.name}: priming a spare failed, so spares are no longer primed:`, error);
          } finally {
            access.grant.priming = false;
          }
        }
      } catch (error) {
        await session.close(0);
        throw error;
      }
      this.o.log.debug(`warm pool ${agent.name}: spare ${id} ready (version ${agent.version})`);
      return {
        agentId: agent.id,
        agentName: agent.name,
        version: agent.version,
        sandbox,
        agent: session,
        transcripts,
        grant: access.grant,
        respawn: (sessionId, resume, model) => build(createTranscriptStore(db, sessionId), { resume, model, priority: "session" }),
      };
    } catch (error) {
      await sandbox.destroy().catch(() => undefined);
      throw error;
    }
  }

  /**
   * Resolves once no turn has been active for QUIET_MS (or after
   * MAX_QUIET_WAIT_MS); rejects when the spare was dropped or the pool stopped
   * meanwhile, so nothing more is made for it.
   */
  private async betweenTurns(pending: Pending): Promise<void> {
    const active = this.o.turnsActive;
    if (!active) return;
    const quietMs = this.o.quietMs ?? QUIET_MS;
    const started = performance.now();
    let quietSince = active() === 0 ? started : undefined;
    for (;;) {
      if (pending.drop || this.stopped) throw new SpareDropped();
      const now = performance.now();
      if (active() > 0) this.takenAt = [];
      this.takenAt = this.takenAt.filter((at) => now - at < TAKEN_GRACE_MS);
      if (active() > 0 || this.takenAt.length > 0) quietSince = undefined;
      else quietSince ??= now;
      if ((quietSince !== undefined && now - quietSince >= quietMs) || now - started >= (this.o.maxQuietWaitMs ?? MAX_QUIET_WAIT_MS)) return;
      await sleep(QUIET_POLL_MS);
    }
  }

  private async destroy(spare: WarmSpare): Promise<void> {
    await spare.agent.close(0).catch(() => undefined);
    await spare.sandbox.destroy().catch((error) => this.o.log.error(`sandbox ${spare.sandbox.id}: destroy failed:`, error));
  }
}

/** Whether a session with these settings can run on a spare: only what can be applied after the CLI started. */
export function spareCanServe(input: { model?: string; settings: SessionSettings }): boolean {
  const s = input.settings;
  const empty = (v: unknown) => v === undefined || (typeof v === "object" && v !== null && Object.keys(v).length === 0);
  return (
    empty(s.extraEnv) &&
    empty(s.mcpServers) &&
    s.allowedTools === undefined &&
    s.disallowedTools === undefined &&
    s.permissionMode === undefined &&
    // A policy's permission callback belongs to the session: it is given when the CLI starts.
    s.confirmTools === undefined &&
    !s.systemPrompt &&
    // A session's own credential changes the model key its gateway token maps to.
    !s.credentialId
  );
}

/**
 * Spares are kept per agent of a tenant: the key is the agent's name for the
 * default tenant (what ASH_WARM_POOL names) and `<tenant>/<name>` for others
 * (neither may contain a `/`).
 */
export function poolKey(agent: { tenantId: string; name: string }): string {
  return agent.tenantId === "default" ? agent.name : `${agent.tenantId}/${agent.name}`;
}

function agentOfKey(key: string): [tenantId: string, name: string] {
  const at = key.indexOf("/");
  return at < 0 ? ["default", key] : [key.slice(0, at), key.slice(at + 1)];
}
