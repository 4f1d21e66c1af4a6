// Stand-ins for what a session needs from outside src/sessions, so the session
// layer's own logic (who may do what when, in which order) runs in unit tests
// against a real database: sandboxes without processes, a snapshot store in
// memory, an agent process without the CLI whose turns the test ends.
import { randomBytes, randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { consola } from "consola";
import type { AgentSessionOptions, TurnOptions, TurnOutcome } from "../../src/runtime/agent-session";
import type { AgentProcess } from "../../src/sessions/agent-process";
import type { SandboxFactory, SandboxHandle, SavedVersion, WorkspaceStore } from "../../src/sessions/types";
import { loadConfig, type ServerConfig } from "../../src/config";
import { openSqlite } from "../../src/db/sqlite";
import { migrate } from "../../src/db/migrate";
import { migrations } from "../../src/db/migrations";
import { deployAgent } from "../../src/db/queries/agents";
import { createObservability } from "../../src/observability";
import { SessionManager } from "../../src/sessions/session-manager";
import type { AshDatabase } from "../../src/db/types";

/** A promise the test resolves when it wants. */
export interface Gate {
  promise: Promise<void>;
  open(): void;
}

export function gate(): Gate {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

/** Waits for pending callbacks, up to `rounds` turns of the event loop, until `check` holds. */
export async function until(check: () => boolean | Promise<boolean>, rounds = 500): Promise<void> {
  for (let i = 0; i < rounds; i++) {
    if (await check()) return;
    await new Promise((resolve) => setImmediate(resolve));
  }
  throw new Error(`the condition did not hold within ${rounds} rounds of the event loop`);
}

/** An agent process whose turns end when the test says (or at once), answering "ok". */
export class FakeAgent implements AgentProcess {
  sdkSessionId?: string;
  started_ = false;
  closed = false;
  /** Held turns wait for this; unset: a turn ends at once. */
  hold?: Gate;
  turns = 0;
  model?: string;
  private running?: { resolve: (outcome: TurnOutcome) => void; options: TurnOptions };

  constructor(readonly options: AgentSessionOptions) {}

  get alive(): boolean {
    return this.started_ && !this.closed;
  }

  get turnRunning(): boolean {
    return this.running !== undefined;
  }

  start(): void {
    this.started_ = true;
  }

  async started(): Promise<void> {}

  async prime(): Promise<boolean> {
    return false;
  }

  useModel(model: string): void {
    this.model = model;
  }

  runTurn(_content: string | unknown[], options: TurnOptions): Promise<TurnOutcome> {
    if (this.closed) return Promise.resolve({ kind: "process_exit", error: new Error("the agent process has exited") });
    if (this.running) throw new Error("a turn is already running");
    this.turns++;
    return new Promise<TurnOutcome>((resolve) => {
      this.running = { resolve, options };
      const answer = async () => {
        if (this.running?.resolve !== resolve) return;
        this.sdkSessionId ??= this.options.resume ?? randomUUID();
        const uuid = randomUUID();
        // As the SDK does: the turn's transcript lines are stored before its result.
        await this.options.transcriptStore.append({ projectKey: "ash-session", sessionId: this.sdkSessionId }, [{ type: "assistant", uuid }]);
        if (this.running?.resolve !== resolve) return;
        options.onMessage({ type: "assistant", uuid, parent_tool_use_id: null, message: { content: [{ type: "text", text: "ok" }] } } as never);
        this.end({ kind: "result", result: result("success") });
      };
      if (this.hold) void this.hold.promise.then(answer);
      else queueMicrotask(() => void answer());
    });
  }

  /** As the CLI does: the turn ends with its result. */
  async interrupt(): Promise<void> {
    if (this.running) this.end({ kind: "result", result: result("error_during_execution") });
  }

  /** Set: a close waits for it (a process slow to exit). */
  closeHold?: Gate;

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.running) this.end({ kind: "process_exit", error: new Error("the agent process was stopped") });
    if (this.closeHold) await this.closeHold.promise;
  }

  private end(outcome: TurnOutcome): void {
    const running = this.running;
    this.running = undefined;
    running?.resolve(outcome);
  }
}

function result(subtype: string) {
  return { type: "result", subtype, is_error: subtype !== "success", result: subtype === "success" ? "ok" : undefined, num_turns: 1, usage: { input_tokens: 1, output_tokens: 1 } };
}

/** Sandboxes that are folders only: creation can be held, and every one is recorded. */
export class FakeSandboxes implements SandboxFactory {
  readonly made: Array<SandboxHandle & { destroyed: boolean }> = [];
  /** Set: creation waits for it (a slow bring-up). */
  hold?: Gate;
  /** Set: the next creation fails with it. */
  failNext?: Error;
  /** Creations asked for (including held ones). */
  asked = 0;

  constructor(private readonly root: string) {}

  get live(): number {
    return this.made.filter((s) => !s.destroyed).length;
  }

  async create(options: Parameters<SandboxFactory["create"]>[0]): Promise<SandboxHandle> {
    this.asked++;
    if (this.hold) await this.hold.promise;
    if (this.failNext) {
      const error = this.failNext;
      this.failNext = undefined;
      throw error;
    }
    const dir = join(this.root, options.id);
    const workspaceDir = join(dir, "workspace");
    await options.populate(workspaceDir);
    const lines: string[] = [];
    const sandbox: SandboxHandle & { destroyed: boolean } = {
      id: options.id,
      workspaceDir,
      homeDir: join(dir, "home"),
      destroyed: false,
      spawnClaudeCode: () => {
        throw new Error("a fake sandbox runs no processes");
      },
      exec: async () => ({ exitCode: 0, stdout: "", stderr: "" }),
      logs: () => lines,
      limitCounters: () => ({ oomKills: 0, pidsMaxHits: 0, diskKills: 0 }),
      io: undefined as never,
      note: (line) => void lines.push(line),
      destroy: async () => {
        sandbox.destroyed = true;
        await rm(dir, { recursive: true, force: true });
      },
    };
    this.made.push(sandbox);
    return sandbox;
  }

  describe() {
    return { isolation: { mode: "none", seccomp: false, unisolatedAllowed: true }, limits: {} };
  }

  async removeLeftovers(): Promise<number> {
    return 0;
  }

  async close(): Promise<void> {}
}

/** Saved versions in memory: a save records which sandbox it read, a restore which version it put back. */
export class FakeStore implements WorkspaceStore {
  readonly saves: string[] = [];
  readonly restores: string[] = [];

  async save(sandbox: SandboxHandle, options: { onWrite: (keys: string[]) => Promise<void> }): Promise<SavedVersion> {
    this.saves.push(sandbox.id);
    // One object per version, announced as the real store announces what it writes (a rewind adopts it).
    const id = randomBytes(32).toString("hex");
    await options.onWrite([`trees/${id}`]);
    return { id, fileCount: 0, bytes: 0, changedFiles: 0, changedBytes: 0, objects: [`trees/${id}`], walked: true };
  }
  async restore(version: string): Promise<void> {
    this.restores.push(version);
  }
  async verify(): Promise<boolean> {
    return true;
  }
  async list() {
    return [];
  }
  async read() {
    return null;
  }
  async archive(): Promise<never> {
    throw new Error("not stored");
  }
  async removeObjects(): Promise<void> {}
  legacy = {
    has: async () => false,
    restore: async () => false,
    list: async () => null,
    read: async () => null,
    archive: async () => null,
    delete: async () => false,
  };
}

export interface Harness {
  config: ServerConfig;
  db: AshDatabase;
  sessions: SessionManager;
  sandboxes: FakeSandboxes;
  store: FakeStore;
  /** Every agent process made, in order. */
  agents: FakeAgent[];
  close(): Promise<void>;
}

/** A session manager over a fresh SQLite database with one deployed agent ("writer"), fake sandboxes, store and agent processes. */
export async function sessionHarness(env: Record<string, string> = {}): Promise<Harness> {
  const root = await mkdtemp(join(tmpdir(), "ash-sessions-"));
  const config = loadConfig({ ASH_DATA_DIR: root, ASH_WARM_DEMAND_MS: "0", ...env });
  const db = await openSqlite({ path: join(root, "ash.db") });
  await migrate(db, migrations);
  await deployAgent(db, { id: randomUUID(), tenantId: "default", name: "writer", env: {}, systemPrompt: null, files: [{ path: "CLAUDE.md", mode: 0o644, content: Buffer.from("# writer\n") }] });
  const observability = await createObservability({});
  const sandboxes = new FakeSandboxes(root);
  const store = new FakeStore();
  const agents: FakeAgent[] = [];
  const log = consola.withTag("test");
  log.level = -999;
  const sessions = new SessionManager({
    config,
    db,
    serverId: "server-1",
    sandboxes,
    workspaceStore: store,
    log,
    observability,
    launchAgent: (options) => {
      const agent = new FakeAgent(options);
      agents.push(agent);
      return agent;
    },
  });
  await sessions.start();
  return {
    config,
    db,
    sessions,
    sandboxes,
    store,
    agents,
    close: async () => {
      await sessions.shutdown(0);
      sessions.gateway.close();
      await observability.shutdown(0);
      await db.close();
      await rm(root, { recursive: true, force: true });
    },
  };
}
