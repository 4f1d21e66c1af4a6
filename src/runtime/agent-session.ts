import { query, type Query, type SDKMessage, type SessionStore, type SpawnedProcess, type SpawnOptions } from "@anthropic-ai/claude-agent-sdk";
import { InputQueue } from "./input-queue";

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
  private exited = false;
  private exitError?: Error;
  /** The SDK's own session id, known after the CLI's `system/init`. */
  sdkSessionId?: string;
  private readonly initialized: Promise<void>;
  private markInitialized!: () => void;
  /** A model chosen after start (a warm spare claimed by a session with `model`), applied with the next turn. */
  private pendingModel?: string;

  constructor(private readonly options: AgentSessionOptions) {
    this.initialized = new Promise((resolve) => (this.markInitialized = resolve));
  }

  get alive(): boolean {
    return this.q !== undefined && !this.exited;
  }

  get busy(): boolean {
    return this.turn !== undefined;
  }

  start(): void {
    const o = this.options;
    this.q = query({
      prompt: this.input,
      options: {
        cwd: o.cwd,
        env: o.env,
        model: o.model,
        systemPrompt: o.systemPrompt ? { type: "preset", preset: "claude_code", append: o.systemPrompt } : undefined,
        mcpServers: o.mcpServers as any,
        permissionMode: (o.permissionMode as any) ?? "bypassPermissions",
        allowDangerouslySkipPermissions: (o.permissionMode ?? "bypassPermissions") === "bypassPermissions",
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
  }

  /** Makes `model` this session's model from the next turn on (a turn's own model still wins for that turn). */
  useModel(model: string): void {
    this.pendingModel = model;
  }

  /** Sends one user message and resolves when its turn has ended. */
  runTurn(content: string | unknown[], options: TurnOptions): Promise<TurnOutcome> {
    if (!this.q) this.start();
    if (this.exited) return Promise.resolve({ kind: "process_exit", error: this.exitError ?? new Error("the agent process has exited") });
    if (this.turn) throw new Error("a turn is already running");
    return new Promise<TurnOutcome>((resolve) => {
      this.turn = { options, modelCalls: new Set(), resolve, limitHit: false };
      const model = options.model ?? this.pendingModel;
      this.pendingModel = undefined;
      const apply = model ? this.q!.setModel(model).catch(() => undefined) : Promise.resolve();
      void apply.then(() => {
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
   * exits first or takes longer than `timeoutMs`.
   */
  async started(timeoutMs: number): Promise<void> {
    if (!this.q) throw new Error("the agent process was not started");
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`the agent process did not start within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      await Promise.race([this.q.initializationResult(), timeout]);
    } finally {
      clearTimeout(timer);
    }
    if (this.exited) throw this.exitError ?? new Error("the agent process has exited");
  }

  /** Waits until the CLI has started (or failed to start). */
  async ready(timeoutMs: number): Promise<void> {
    await Promise.race([this.initialized, new Promise((resolve) => setTimeout(resolve, timeoutMs).unref())]);
  }

  /** Ends the CLI process: closes its input, then aborts after a grace period. */
  async close(graceMs = 2000): Promise<void> {
    if (!this.q || this.exited) return;
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

  private finish(error: Error): void {
    this.exited = true;
    this.exitError = error;
    this.markInitialized();
    const turn = this.turn;
    this.turn = undefined;
    turn?.resolve({ kind: "process_exit", error });
  }
}
