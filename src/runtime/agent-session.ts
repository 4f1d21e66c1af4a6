import { query, type CanUseTool, type HookCallbackMatcher, type Query, type SDKMessage, type SessionStore, type SpawnedProcess, type SpawnOptions } from "@anthropic-ai/claude-agent-sdk";
import { InputQueue } from "./input-queue";
import type { StartPriority, StartQueue, StartTicket } from "./start-queue";

export interface AgentSessionOptions {
  /** The Claude Code CLI's working directory: the session's workspace. */
  cwd: string;
  /** The whole environment of the CLI process (the SDK replaces, not merges). */
  env: Record<string, string>;
  model?: string;
  /** Appended to Claude Code's own system prompt; CLAUDE.md is read from cwd. */
  systemPrompt?: string;
  mcpServers?: Record<string, unknown>;
  permissionMode?: string;
  allowedTools?: string[];
  disallowedTools?: string[];
  /** Continue this SDK session's transcript (from the store). */
  resume?: string;
  /** With `resume`: continue under a new SDK session id (a fork). */
  fork?: boolean;
  transcriptStore: SessionStore;
  /** Spawns the CLI inside the session's sandbox. */
  spawn?: (options: SpawnOptions) => SpawnedProcess;
  stderr?: (text: string) => void;
  /**
   * Tools that wait for a person's decision before they run ("all", or tool
   * names); with it the CLI asks `confirm` (see ToolConfirmation).
   */
  confirmTools?: "all" | string[];
  confirm?: (request: ToolConfirmationRequest, signal: AbortSignal) => Promise<ToolDecision>;
  /** Where the process waits for a start slot (with this priority) before it is spawned; none: at once. */
  startQueue?: StartQueue;
  startPriority?: StartPriority;
  /**
   * The start-up's bound, from the spawn (waiting for a slot is not counted:
   * every start ahead is bounded the same way). Past it the process is
   * stopped, and a turn or `started()` ends with AgentStartTimeoutError.
   * None: unbounded.
   */
  startTimeoutMs?: number;
}

/** The process did not finish its start-up within its bound and was stopped. */
export class AgentStartTimeoutError extends Error {
  constructor(readonly timeoutMs: number) {
    super(`the agent process did not start within ${timeoutMs} ms`);
    this.name = "AgentStartTimeoutError";
  }
}

/** A tool use the policy holds until someone decides. */
export interface ToolConfirmationRequest {
  toolUseId: string;
  name: string;
  input: Record<string, unknown>;
}

export type ToolDecision = { allow: true } | { allow: false; message: string; interrupt?: boolean };

/** Whether a confirmation policy covers a tool. */
export function confirmationCovers(policy: "all" | string[] | undefined, tool: string): boolean {
  if (!policy) return false;
  if (policy === "all") return true;
  // `mcp__<server>` names every tool of that server (as Claude Code's permission rules do).
  return policy.some((p) => p === tool || (p.startsWith("mcp__") && !p.slice(5).includes("__") && tool.startsWith(`${p}__`)));
}

export interface TurnOptions {
  model?: string;
  /** Stop the turn after this many model calls. */
  maxTurns?: number;
  onMessage: (message: SDKMessage) => void;
}

export type TurnOutcome =
  | { kind: "result"; result: any }
  | { kind: "max_turns"; result?: any }
  | { kind: "process_exit"; error: Error };

interface RunningTurn {
  options: TurnOptions;
  modelCalls: Set<string>;
  resolve: (outcome: TurnOutcome) => void;
  limitHit: boolean;
}

/**
 * One live Claude Code CLI process for one session, fed turn after turn as
 * streaming input. Keeping the process alive is what makes a later turn start
 * in tens of milliseconds instead of paying the CLI's ~1 s start-up again.
 */
export class AgentSession {
  private readonly input = new InputQueue();
  private readonly abort = new AbortController();
  private q?: Query;
  private turn?: RunningTurn;
  /** Set by start(): the process is spawned once it has a start slot. */
  private launch?: Promise<void>;
  private ticket?: StartTicket;
  /** Set by close(): a start still waiting for its slot never spawns. */
  private closed = false;
  /** The CLI answered the SDK's initialize request: its start-up is over. */
  private handshaken = false;
  private exited = false;
  private exitError?: Error;
  /** Set when the start-up ran past its bound: why the process was stopped. */
  private startFailure?: AgentStartTimeoutError;
  private startTimer?: NodeJS.Timeout;
  /** The SDK's own session id, known after the CLI's `system/init`. */
  sdkSessionId?: string;
  private readonly initialized: Promise<void>;
  private markInitialized!: () => void;
  /** A model chosen after start (a warm spare claimed by a session with `model`), applied with the next turn. */
  private pendingModel?: string;

  constructor(private readonly options: AgentSessionOptions) {
    this.initialized = new Promise((resolve) => (this.markInitialized = resolve));
  }

  /** Started (or waiting to start) and neither exited nor closed. */
  get alive(): boolean {
    return this.launch !== undefined && !this.exited && !this.closed;
  }

  /** Started but not yet done with its start-up (waiting for a slot, or spawned and loading). */
  get starting(): boolean {
    return this.launch !== undefined && !this.handshaken && !this.exited && !this.closed;
  }

  get busy(): boolean {
    return this.turn !== undefined;
  }

  start(): void {
    if (this.launch) return;
    const queue = this.options.startQueue;
    if (!queue) {
      this.spawn(() => undefined);
      this.launch = Promise.resolve();
      return;
    }
    const ticket = (this.ticket = queue.enqueue(this.options.startPriority ?? "session"));
    this.launch = ticket.ready.then((release) => {
      if (this.closed) return release();
      this.spawn(release);
    });
  }

  /** Spawns the CLI; `release` frees its start slot once the start-up is over (or failed). */
  private spawn(release: () => void): void {
    const o = this.options;
    const asking = o.confirmTools !== undefined && o.confirm !== undefined && (o.confirmTools === "all" || o.confirmTools.length > 0);
    const permissionMode = o.permissionMode ?? (asking ? "default" : "bypassPermissions");
    this.q = query({
      prompt: this.input,
      options: {
        cwd: o.cwd,
        env: o.env,
        model: o.model,
        systemPrompt: o.systemPrompt ? { type: "preset", preset: "claude_code", append: o.systemPrompt } : undefined,
        mcpServers: o.mcpServers as any,
        permissionMode: permissionMode as any,
        allowDangerouslySkipPermissions: permissionMode === "bypassPermissions",
        ...(asking ? { canUseTool: this.canUseTool(o.confirmTools!, o.confirm!), hooks: askHooks(o.confirmTools!) } : {}),
        allowedTools: o.allowedTools,
        disallowedTools: o.disallowedTools,
        // Only the agent's own project settings; never the host's ~/.claude.
        settingSources: ["project"],
        includePartialMessages: true,
        resume: o.resume,
        forkSession: o.fork,
        sessionStore: o.transcriptStore,
        sessionStoreFlush: "eager",
        abortController: this.abort,
        spawnClaudeCodeProcess: o.spawn,
        stderr: o.stderr,
      },
    });
    void this.pump(this.q);
    const q = this.q;
    const bound = o.startTimeoutMs;
    if (bound !== undefined) {
      this.startTimer = setTimeout(() => {
        if (this.handshaken || this.exited || this.closed) return;
        this.startFailure = new AgentStartTimeoutError(bound);
        void this.close(0);
      }, bound);
    }
    void q.initializationResult().then(
      () => {
        clearTimeout(this.startTimer);
        this.handshaken = true;
        release();
      },
      () => {
        clearTimeout(this.startTimer);
        release();
      },
    );
    // A process that dies during start-up gives its slot back too (pump's finish()).
    this.releaseStart = release;
  }

  private releaseStart?: () => void;

  /**
   * The CLI's permission question: a covered tool waits for `confirm`, any
   * other goes on at once (the policy, not the CLI's own rules, decides).
   */
  private canUseTool(policy: "all" | string[], confirm: NonNullable<AgentSessionOptions["confirm"]>): CanUseTool {
    return async (name, input, options) => {
      if (!confirmationCovers(policy, name)) return { behavior: "allow", updatedInput: input };
      const toolUseId = options.toolUseID;
      const decision = await confirm({ toolUseId, name, input }, options.signal);
      if (decision.allow) return { behavior: "allow", updatedInput: input };
      return { behavior: "deny", message: decision.message, ...(decision.interrupt ? { interrupt: true } : {}) };
    };
  }

  /**
   * Runs the process's model-call path once before any session uses it: one
   * side question (the SDK's `askSideQuestion`, which never enters the
   * conversation), answered by whatever the caller set up (the gateway's
   * priming reply). What the CLI does only the first time (building its system
   * prompt and tool list, loading the code of a model call, its first
   * connection) is then done before a session's first turn. False when this
   * SDK has no side questions (nothing was done); rejects when it failed.
   */
  async prime(timeoutMs: number): Promise<boolean> {
    if (!this.q || this.exited || this.closed || this.turn) throw new Error("only a started agent process without a turn can be primed");
    const q = this.q as Query & { askSideQuestion?: (question: string) => Promise<unknown> };
    if (typeof q.askSideQuestion !== "function") return false;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        q.askSideQuestion("ok"),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`priming the agent process took longer than ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
    return true;
  }

  /** Makes `model` this session's model from the next turn on (a turn's own model still wins for that turn). */
  useModel(model: string): void {
    this.pendingModel = model;
  }

  /** Sends one user message and resolves when its turn has ended. */
  runTurn(content: string | unknown[], options: TurnOptions): Promise<TurnOutcome> {
    if (!this.launch) this.start();
    if (this.exited || this.closed) return Promise.resolve({ kind: "process_exit", error: this.exitError ?? new Error("the agent process has exited") });
    if (this.turn) throw new Error("a turn is already running");
    return new Promise<TurnOutcome>((resolve) => {
      this.turn = { options, modelCalls: new Set(), resolve, limitHit: false };
      const model = options.model ?? this.pendingModel;
      this.pendingModel = undefined;
      // A process still waiting for its start slot gets the message once it is spawned.
      void this.launch!.then(async () => {
        if (!this.q || this.exited) return;
        if (model) await this.q.setModel(model).catch(() => undefined);
        if (this.exited || this.closed) return;
        this.input.push({
          type: "user",
          message: { role: "user", content: content as any },
          parent_tool_use_id: null,
          session_id: this.sdkSessionId ?? "",
        });
      });
    });
  }

  /** Asks the CLI to stop the running turn; its `result` still arrives. */
  async interrupt(): Promise<void> {
    if (!this.q || this.exited || !this.turn) return;
    await this.q.interrupt().catch(() => undefined);
  }

  /**
   * Resolves once the CLI process has answered the SDK's initialize request
   * (loaded, settings and tools read), before any message; rejects when it
   * exits first, or with AgentStartTimeoutError when it ran past `startTimeoutMs`.
   */
  async started(): Promise<void> {
    if (!this.launch) throw new Error("the agent process was not started");
    await this.launch;
    const q = this.q;
    if (!q) throw new Error("the agent process was stopped before it started");
    // The process's end resolves `initialized` too (finish()).
    await Promise.race([q.initializationResult(), this.initialized]).catch(() => undefined);
    if (this.startFailure) throw this.startFailure;
    if (this.exited) throw this.exitError ?? new Error("the agent process has exited");
    if (!this.handshaken && this.closed) throw new Error("the agent process was stopped before it started");
  }

  /** Ends the CLI process: closes its input, then aborts after a grace period. */
  async close(graceMs = 2000): Promise<void> {
    if (this.closed || this.exited) return;
    this.closed = true;
    if (!this.q) {
      // Still waiting for a start slot: it never spawns.
      this.ticket?.cancel();
      this.finish(new Error("the agent process was stopped before it started"));
      return;
    }
    // A process still starting up has no turn or transcript to finish: end it at once.
    if (!this.handshaken) graceMs = 0;
    this.input.close();
    const exited = new Promise<void>((resolve) => {
      const check = setInterval(() => {
        if (this.exited) {
          clearInterval(check);
          resolve();
        }
      }, 20);
      setTimeout(() => {
        clearInterval(check);
        resolve();
      }, graceMs).unref();
    });
    await exited;
    if (!this.exited) {
      this.abort.abort();
      this.q.close();
    }
  }

  private async pump(q: Query): Promise<void> {
    try {
      for await (const message of q) {
        const m = message as any;
        if (m.type === "system" && m.subtype === "init") {
          this.sdkSessionId = m.session_id;
          this.markInitialized();
        }
        const turn = this.turn;
        if (!turn) continue;
        turn.options.onMessage(message);
        if (m.type === "assistant" && m.message?.id) {
          turn.modelCalls.add(m.message.id);
          if (turn.options.maxTurns && turn.modelCalls.size >= turn.options.maxTurns && !turn.limitHit) {
            // The limit counts model calls; let this call's tools finish, then stop.
            turn.limitHit = true;
            void q.interrupt().catch(() => undefined);
          }
        }
        if (m.type === "result") {
          this.turn = undefined;
          turn.resolve(turn.limitHit ? { kind: "max_turns", result: m } : { kind: "result", result: m });
        }
      }
      this.finish(new Error("the agent process ended"));
    } catch (error) {
      this.finish(error instanceof Error ? error : new Error(String(error)));
    }
  }

  private finish(ended: Error): void {
    // A process stopped for its start-up's bound ended for that reason, whatever the SDK saw.
    const error = this.startFailure ?? ended;
    clearTimeout(this.startTimer);
    this.exited = true;
    this.releaseStart?.();
    this.exitError = error;
    this.markInitialized();
    const turn = this.turn;
    this.turn = undefined;
    turn?.resolve({ kind: "process_exit", error });
  }
}

/**
 * A covered tool is always put to the permission question, even one the
 * CLI would run without asking (reads, the workspace's own allow rules).
 */
function askHooks(policy: "all" | string[]): Partial<Record<"PreToolUse", HookCallbackMatcher[]>> {
  return {
    PreToolUse: [
      {
        hooks: [
          async (input) => {
            const name = (input as { tool_name?: string }).tool_name ?? "";
            if (!confirmationCovers(policy, name)) return { continue: true };
            return { hookSpecificOutput: { hookEventName: "PreToolUse", permissionDecision: "ask", permissionDecisionReason: "This tool needs a person's confirmation." } };
          },
        ],
      },
    ],
  };
}
