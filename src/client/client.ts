import { AshApiError, AshConnectionError, AshError, networkErrorCode } from "./errors";
import { parseEventId, type StreamEvent } from "./events";
import { resumableEvents } from "./stream";
import type {
  Agent,
  AgentChange,
  AgentFile,
  ToolDecisionInput,
  AgentConfig,
  AgentFileEntry,
  AgentVersion,
  Attachment,
  CreateAgentVersionInput,
  WorkspaceUpload,
  AshClientOptions,
  ContentBlock,
  CreateSessionInput,
  DeployAgentInput,
  EventQuery,
  ExecResult,
  HealthStatus,
  ListSessionsQuery,
  MessageQuery,
  ReconnectOptions,
  SandboxLogLine,
  Session,
  SessionPage,
  StoredMessage,
  UsageQuery,
  UsagePage,
  UsageStats,
  Analytics,
  TimelineEvent,
  Checkpoint,
  ApiKey,
  CreatedApiKey,
  CreateApiKeyInput,
  UsageLimits,
  Tenant,
  Credential,
  CreateCredentialInput,
  WorkspaceFile,
  WorkspaceListing,
  EnqueueInput,
  ListQueueQuery,
  QueueItem,
  QueuePage,
  QueueStats,
  EvalCase,
  EvalCaseInput,
  EvalComparison,
  EvalExport,
  EvalResult,
  EvalRun,
  EvalRunInput,
} from "./types";

type Query = Record<string, string | number | boolean | undefined | null>;

interface CallOptions {
  body?: unknown;
  /** Bytes sent as they are (with `headers["content-type"]`), instead of a JSON `body`. */
  rawBody?: Uint8Array | Blob | ReadableStream<Uint8Array>;
  query?: Query;
  signal?: AbortSignal;
  headers?: Record<string, string>;
}

export interface SendMessageOptions {
  /** Model for this turn only. */
  model?: string;
  /** Upper bound on the agent's model turns. */
  maxTurns?: number;
  /**
   * Unset: `text_delta` / `thinking_delta` events as the model writes. `false`: none.
   * `true`: those and each raw partial SDK message as a `message` event (the original API's form).
   */
  includePartialMessages?: boolean;
  /** Aborting ends the iteration with the signal's reason; the turn itself keeps running (see `interrupt`). */
  signal?: AbortSignal;
  /** Overrides the client's reconnect settings for this stream. */
  reconnect?: ReconnectOptions;
}

export interface StreamEventsOptions {
  /** Start after this event id; without it the server decides where a fresh stream starts. */
  lastEventId?: number | string;
  /** End the iteration after the next `done` event (the end of a turn). */
  untilDone?: boolean;
  signal?: AbortSignal;
  reconnect?: ReconnectOptions;
}

/**
 * A typed client for the Ash HTTP API. Every method throws `AshApiError` when the server
 * answers with an error (its `message` is the server's sentence), and `AshConnectionError`
 * when nothing answers at `url`.
 */
export class AshClient {
  /** The server address, without a trailing slash. */
  readonly url: string;
  private readonly apiKey?: string;
  private readonly fetchImpl: typeof globalThis.fetch;
  private readonly reconnect?: ReconnectOptions;

  constructor(options: AshClientOptions) {
    let parsed: URL;
    try {
      parsed = new URL(options.url);
    } catch {
      throw new TypeError(`"${options.url}" is not a server address; use one like http://localhost:4100.`);
    }
    if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
      throw new TypeError(`"${options.url}" is not an http(s) address; use one like http://localhost:4100.`);
    }
    this.url = options.url.replace(/\/+$/, "");
    this.apiKey = options.apiKey || undefined;
    this.fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.reconnect = options.reconnect;
  }

  // ---- Health ---------------------------------------------------------------

  /** `GET /health`. A degraded server (503) is an answer too, returned with `status: "degraded"`. */
  async health(options: { signal?: AbortSignal } = {}): Promise<HealthStatus> {
    const response = await this.call("GET", "/health", { signal: options.signal }, [503]);
    return (await response.json()) as HealthStatus;
  }

  // ---- Agents ---------------------------------------------------------------

  /** Deploys (or redeploys, as a new version) an agent from its files or a server-side path. */
  async deployAgent(input: DeployAgentInput): Promise<Agent> {
    const { agent } = await this.json<{ agent: Agent }>("POST", "/api/agents", { body: input });
    return agent;
  }

  async listAgents(): Promise<Agent[]> {
    const { agents } = await this.json<{ agents: Agent[] }>("GET", "/api/agents");
    return agents;
  }

  async getAgent(name: string): Promise<Agent> {
    const { agent } = await this.json<{ agent: Agent }>("GET", `/api/agents/${seg(name)}`);
    return agent;
  }

  async deleteAgent(name: string): Promise<void> {
    await this.call("DELETE", `/api/agents/${seg(name)}`);
  }

  /** A new active version with the changes; running sessions keep theirs. */
  async updateAgent(name: string, change: AgentChange): Promise<Agent> {
    const { agent } = await this.json<{ agent: Agent }>("PATCH", `/api/agents/${seg(name)}`, { body: change });
    return agent;
  }

  /** The files of the active version (or of `version`). */
  async listAgentFiles(name: string, options: { version?: number } = {}): Promise<AgentFileEntry[]> {
    const { files } = await this.json<{ files: AgentFileEntry[] }>("GET", `/api/agents/${seg(name)}/files`, { query: { version: options.version } });
    return files;
  }

  /** One file of the active version (or of `version`), as bytes. */
  async readAgentFile(name: string, path: string, options: { version?: number } = {}): Promise<WorkspaceFile> {
    const clean = path.replace(/^\/+/, "");
    if (!clean) throw new TypeError("readAgentFile needs a file path inside the agent folder.");
    const response = await this.call("GET", `/api/agents/${seg(name)}/files/${clean.split("/").map(seg).join("/")}`, {
      query: { format: "raw", version: options.version },
      headers: { accept: "*/*" },
    });
    const content = new Uint8Array(await response.arrayBuffer());
    return { path: clean, content, text: () => new TextDecoder().decode(content) };
  }

  /** Adds or replaces files (`content` base64): a new active version. */
  async addAgentFiles(name: string, files: AgentFile[]): Promise<Agent> {
    const { agent } = await this.json<{ agent: Agent }>("POST", `/api/agents/${seg(name)}/files`, { body: { files } });
    return agent;
  }

  async listAgentVersions(name: string): Promise<AgentVersion[]> {
    const { versions } = await this.json<{ versions: AgentVersion[] }>("GET", `/api/agents/${seg(name)}/versions`);
    return versions;
  }

  /** A new version from the active one (or `cloneFrom`); active only with `activate: true`. */
  async createAgentVersion(name: string, input: CreateAgentVersionInput = {}): Promise<AgentVersion> {
    const { version } = await this.json<{ version: AgentVersion }>("POST", `/api/agents/${seg(name)}/versions`, { body: input });
    return version;
  }

  async getAgentVersion(name: string, version: number): Promise<AgentVersion> {
    const answer = await this.json<{ version: AgentVersion }>("GET", `/api/agents/${seg(name)}/versions/${seg(String(version))}`);
    return answer.version;
  }

  /** Makes `version` the one new sessions get; answers the agent as it now is. */
  async activateAgentVersion(name: string, version: number): Promise<Agent> {
    const { agent } = await this.json<{ agent: Agent }>("POST", `/api/agents/${seg(name)}/versions/${seg(String(version))}/activate`);
    return agent;
  }

  async getAgentConfig(name: string): Promise<AgentConfig> {
    const { config } = await this.json<{ config: AgentConfig }>("GET", `/api/agents/${seg(name)}/config`);
    return config;
  }

  /** `warmSpares` (null: back to the server's default); `maxTokens` and `egress` make a new version. */
  async updateAgentConfig(name: string, change: { warmSpares?: number | null; maxTokens?: number | null; egress?: string[] }): Promise<AgentConfig> {
    const { config } = await this.json<{ config: AgentConfig }>("PATCH", `/api/agents/${seg(name)}/config`, { body: change });
    return config;
  }

  // ---- Sessions -------------------------------------------------------------

  async createSession(input: CreateSessionInput): Promise<Session> {
    const { session } = await this.json<{ session: Session }>("POST", "/api/sessions", { body: input });
    return session;
  }

  /** One page of sessions, newest first; follow `nextCursor` for more. */
  async listSessions(query: ListSessionsQuery = {}): Promise<SessionPage> {
    const page = await this.json<{ sessions: Session[]; nextCursor?: string | null }>("GET", "/api/sessions", {
      query: { ...query },
    });
    return { sessions: page.sessions, nextCursor: page.nextCursor ?? null };
  }

  /** Every session matching `query`, fetching pages as the loop goes. */
  async *allSessions(query: Omit<ListSessionsQuery, "cursor"> = {}): AsyncGenerator<Session> {
    let cursor: string | undefined;
    for (;;) {
      const page = await this.listSessions({ ...query, cursor });
      yield* page.sessions;
      if (!page.nextCursor || page.nextCursor === cursor) return;
      cursor = page.nextCursor;
    }
  }

  async getSession(id: string): Promise<Session> {
    return this.sessionCall("GET", `/api/sessions/${seg(id)}`);
  }

  /** Persists the workspace and frees the sandbox; status becomes `paused`. */
  async pauseSession(id: string): Promise<Session> {
    return this.sessionCall("POST", `/api/sessions/${seg(id)}/pause`);
  }

  /** Makes a paused, stopped or failed session `active` again. */
  async resumeSession(id: string): Promise<Session> {
    return this.sessionCall("POST", `/api/sessions/${seg(id)}/resume`);
  }

  /** Like pause, but the sandbox process is ended at once. */
  async stopSession(id: string): Promise<Session> {
    return this.sessionCall("POST", `/api/sessions/${seg(id)}/stop`);
  }

  /**
   * A new session with a copy of this one's history, conversation and workspace: as they are
   * now, or with `checkpoint` as they were after that checkpoint's turn.
   */
  async forkSession(id: string, options: { checkpoint?: number } = {}): Promise<Session> {
    const body = options.checkpoint === undefined ? undefined : { checkpoint: options.checkpoint };
    const { session } = await this.json<{ session: Session }>("POST", `/api/sessions/${seg(id)}/fork`, { body });
    return session;
  }

  /** The session's checkpoints (one per completed turn), oldest first. */
  async listCheckpoints(id: string): Promise<Checkpoint[]> {
    const { checkpoints } = await this.json<{ checkpoints: Checkpoint[] }>("GET", `/api/sessions/${seg(id)}/checkpoints`);
    return checkpoints ?? [];
  }

  /**
   * Moves the session back to a checkpoint: its files and conversation as after that turn.
   * Later messages stay in the history, marked `rewound`; the session is `paused` after.
   */
  async rewindSession(id: string, checkpoint: number): Promise<Session> {
    const { session } = await this.json<{ session: Session }>("POST", `/api/sessions/${seg(id)}/rewind`, { body: { checkpoint } });
    return session;
  }

  /** `DELETE /api/sessions/:id`: status `ended`, not resumable; the history is kept. */
  async endSession(id: string): Promise<Session> {
    return this.sessionCall("DELETE", `/api/sessions/${seg(id)}`);
  }

  /**
   * Stops the turn running on the session; its stream then ends with an `interrupted` error
   * and `done`. Answers whether a turn was running.
   */
  async interrupt(id: string): Promise<boolean> {
    const answer = await this.json<{ interrupted?: boolean }>("POST", `/api/sessions/${seg(id)}/interrupt`);
    return answer.interrupted !== false;
  }

  /**
   * Answers a `tool_confirmation` event: the held tool runs (allow) or the model is told it
   * was denied. 404 when no such tool use waits, 409 when it was decided already.
   */
  async decideTool(id: string, input: ToolDecisionInput): Promise<{ toolUseId: string; name: string; decision: "allow" | "deny" }> {
    return this.json("POST", `/api/sessions/${seg(id)}/tool-confirmations`, { body: input });
  }

  // ---- Queue ----------------------------------------------------------------

  /** Queues a prompt; a server runs it in the background (follow it with `getQueueItem`). */
  async enqueue(input: EnqueueInput): Promise<QueueItem> {
    const { item } = await this.json<{ item: QueueItem }>("POST", "/api/queue", { body: input });
    return item;
  }

  /** One page of queue items, newest first. */
  async listQueue(query: ListQueueQuery = {}): Promise<QueuePage> {
    const page = await this.json<{ items: QueueItem[]; nextCursor?: string | null }>("GET", "/api/queue", { query: { ...query } });
    return { items: page.items, nextCursor: page.nextCursor ?? null };
  }

  async getQueueItem(id: string): Promise<QueueItem> {
    const { item } = await this.json<{ item: QueueItem }>("GET", `/api/queue/${seg(id)}`);
    return item;
  }

  /** Cancels a pending or running item (a running one's turn is interrupted); 409 once it has finished. */
  async cancelQueueItem(id: string): Promise<QueueItem> {
    const { item } = await this.json<{ item: QueueItem }>("DELETE", `/api/queue/${seg(id)}`);
    return item;
  }

  async queueStats(): Promise<QueueStats> {
    return this.json<QueueStats>("GET", "/api/queue/stats");
  }

  // ---- Usage ----------------------------------------------------------------

  /** One page of usage records, oldest first. */
  async listUsage(query: UsageQuery & { limit?: number; cursor?: string } = {}): Promise<UsagePage> {
    const page = await this.json<UsagePage>("GET", "/api/usage", { query: { ...query } });
    return { usage: page.usage, nextCursor: page.nextCursor ?? null };
  }

  async usageStats(query: UsageQuery = {}): Promise<UsageStats> {
    return this.json<UsageStats>("GET", "/api/usage/stats", { query: { ...query } });
  }

  /** The tenant's agents, sessions by status, usage (narrowed by after/before) and evaluation runs. */
  async analytics(query: { after?: string; before?: string } = {}): Promise<Analytics> {
    return this.json<Analytics>("GET", "/api/analytics", { query: { ...query } });
  }

  // ---- Evaluations ----------------------------------------------------------

  async listEvalCases(agent: string): Promise<EvalCase[]> {
    const { cases } = await this.json<{ cases: EvalCase[] }>("GET", `/api/agents/${seg(agent)}/evals/cases`);
    return cases;
  }

  async addEvalCase(agent: string, input: EvalCaseInput): Promise<EvalCase> {
    const answer = await this.json<{ case: EvalCase }>("POST", `/api/agents/${seg(agent)}/evals/cases`, { body: input });
    return answer.case;
  }

  async deleteEvalCase(agent: string, caseId: string): Promise<void> {
    await this.call("DELETE", `/api/agents/${seg(agent)}/evals/cases/${seg(caseId)}`);
  }

  /** Adds cases (or, with `replace`, replaces all of the agent's cases); takes what `exportEvalCases` gives. */
  async importEvalCases(agent: string, cases: EvalCaseInput[], options: { replace?: boolean } = {}): Promise<{ imported: number; total: number; cases: EvalCase[] }> {
    return this.json("POST", `/api/agents/${seg(agent)}/evals/import`, { body: { cases, ...(options.replace ? { replace: true } : {}) } });
  }

  async exportEvalCases(agent: string): Promise<EvalExport> {
    return this.json<EvalExport>("GET", `/api/agents/${seg(agent)}/evals/export`);
  }

  /** Starts a run in the background; follow it with `getEvalRun`. */
  async startEvalRun(agent: string, input: EvalRunInput = {}): Promise<EvalRun> {
    const { run } = await this.json<{ run: EvalRun }>("POST", `/api/agents/${seg(agent)}/evals/runs`, { body: input });
    return run;
  }

  /** Newest first. */
  async listEvalRuns(agent: string, query: { limit?: number } = {}): Promise<EvalRun[]> {
    const { runs } = await this.json<{ runs: EvalRun[] }>("GET", `/api/agents/${seg(agent)}/evals/runs`, { query: { ...query } });
    return runs;
  }

  async getEvalRun(id: string): Promise<{ run: EvalRun; results: EvalResult[] }> {
    return this.json("GET", `/api/eval-runs/${seg(id)}`);
  }

  /** A person's score from 0 to 1 (null takes it back) and notes for one case of a run. */
  async scoreEvalResult(runId: string, caseId: string, humanScore: number | null, notes?: string | null): Promise<EvalResult> {
    const { result } = await this.json<{ result: EvalResult }>("PATCH", `/api/eval-runs/${seg(runId)}/results/${seg(caseId)}`, {
      body: { humanScore, ...(notes === undefined ? {} : { notes }) },
    });
    return result;
  }

  /** Case by case: `other`'s score minus `base`'s. */
  async compareEvalRuns(base: string, other: string): Promise<EvalComparison> {
    return this.json<EvalComparison>("GET", `/api/eval-runs/${seg(base)}/compare/${seg(other)}`);
  }

  // ---- History, events, workspace ------------------------------------------

  async listMessages(id: string, query: MessageQuery = {}): Promise<StoredMessage[]> {
    const { messages } = await this.json<{ messages: StoredMessage[] }>("GET", `/api/sessions/${seg(id)}/messages`, {
      query: { ...query },
    });
    return messages;
  }

  /** The stored stream events of the session, in order. */
  async listEvents(id: string, query: EventQuery = {}): Promise<StreamEvent[]> {
    const answer = await this.json<{ events: unknown[] }>("GET", `/api/sessions/${seg(id)}/events`, { query: { ...query } });
    return (answer.events ?? []).map(storedEvent).filter((e): e is StreamEvent => e !== undefined);
  }

  /** The session's timeline in the original API's shape; `after` is the last event's `sequence`. */
  async listTimeline(id: string, query: { after?: number; limit?: number; type?: TimelineEvent["type"] } = {}): Promise<TimelineEvent[]> {
    const { events } = await this.json<{ events: TimelineEvent[] }>("GET", `/api/sessions/${seg(id)}/events`, { query: { ...query, format: "timeline" } });
    return events;
  }

  /** Every file of the session's workspace (live sandbox, or the snapshot when it is not running). */
  async listFiles(id: string): Promise<WorkspaceListing> {
    const answer = await this.json<WorkspaceListing>("GET", `/api/sessions/${seg(id)}/files`);
    return { files: answer.files ?? [], source: answer.source };
  }

  /** One workspace file's bytes. */
  async readFile(id: string, path: string): Promise<WorkspaceFile> {
    const clean = path.replace(/^\/+/, "");
    if (!clean) throw new TypeError("readFile needs a file path inside the workspace.");
    const response = await this.call("GET", `/api/sessions/${seg(id)}/files/${clean.split("/").map(seg).join("/")}`, {
      headers: { accept: "application/json, */*" },
    });
    const content = await fileBytes(response);
    return { path: clean, content, text: () => new TextDecoder().decode(content) };
  }

  /**
   * Writes files into the workspace (as the sandbox's own user; a sleeping session is woken),
   * under `targetPath` when given. Answers the paths written.
   */
  async writeFiles(id: string, files: WorkspaceUpload[], options: { targetPath?: string } = {}): Promise<Array<{ path: string; size: number }>> {
    const answer = await this.json<{ files: Array<{ path: string; size: number }> }>("POST", `/api/sessions/${seg(id)}/files`, {
      body: { files, ...(options.targetPath !== undefined ? { targetPath: options.targetPath } : {}) },
    });
    return answer.files;
  }

  /** Removes a file or folder of the workspace. */
  async deleteFile(id: string, path: string): Promise<void> {
    const clean = path.replace(/^\/+/, "");
    if (!clean) throw new TypeError("deleteFile needs a path inside the workspace.");
    await this.call("DELETE", `/api/sessions/${seg(id)}/files/${clean.split("/").map(seg).join("/")}`);
  }

  /** Unpacks a tar.gz (or tar) into the workspace, or into `targetPath` inside it. */
  async uploadWorkspace(
    id: string,
    archive: Uint8Array | Blob | ReadableStream<Uint8Array>,
    options: { targetPath?: string; signal?: AbortSignal } = {},
  ): Promise<{ files: number; entries: number; targetPath: string | null }> {
    const response = await this.call("POST", `/api/sessions/${seg(id)}/workspace`, {
      rawBody: archive,
      query: { targetPath: options.targetPath },
      headers: { "content-type": "application/gzip" },
      signal: options.signal,
    });
    return (await response.json()) as { files: number; entries: number; targetPath: string | null };
  }

  /** The whole workspace as a gzipped tar archive, streamed. */
  async downloadWorkspace(id: string, options: { signal?: AbortSignal } = {}): Promise<ReadableStream<Uint8Array>> {
    const response = await this.call("GET", `/api/sessions/${seg(id)}/workspace`, {
      signal: options.signal,
      headers: { accept: "application/gzip, application/x-gzip, application/octet-stream" },
    });
    if (!response.body) throw new AshError("The server sent an empty workspace archive.");
    return response.body;
  }

  /** Runs a shell command inside the session's sandbox. */
  async exec(id: string, command: string, options: { timeout?: number } = {}): Promise<ExecResult> {
    return this.json<ExecResult>("POST", `/api/sessions/${seg(id)}/exec`, {
      body: { command, ...(options.timeout !== undefined ? { timeout: options.timeout } : {}) },
    });
  }

  /** The sandbox's recent stdout/stderr lines. */
  async logs(id: string): Promise<SandboxLogLine[]> {
    const answer = await this.json<{ logs?: unknown[] }>("GET", `/api/sessions/${seg(id)}/logs`);
    return (answer.logs ?? []).map(logLine);
  }

  // ---- Streaming ------------------------------------------------------------

  /**
   * Sends a message and yields the turn's events, ending after `done`. When the connection
   * drops mid-turn, it reconnects with `Last-Event-ID` and continues; no event is yielded twice.
   */
  sendMessage(id: string, content: string | ContentBlock[], options: SendMessageOptions = {}): AsyncGenerator<StreamEvent> {
    const body: Record<string, unknown> = { content };
    if (options.model !== undefined) body.model = options.model;
    if (options.maxTurns !== undefined) body.maxTurns = options.maxTurns;
    if (options.includePartialMessages !== undefined) body.includePartialMessages = options.includePartialMessages;
    return resumableEvents(
      {
        open: (signal) => this.eventStream("POST", `/api/sessions/${seg(id)}/messages`, { body, signal }),
        reopen: (lastEventId, signal) => this.openStream(id, lastEventId, signal),
      },
      { untilDone: true, signal: options.signal, reconnect: options.reconnect ?? this.reconnect },
    );
  }

  /**
   * Follows the session's event stream: stored events after `lastEventId`, then live ones.
   * Ends when the server closes the stream (or after the next `done` with `untilDone`).
   */
  streamEvents(id: string, options: StreamEventsOptions = {}): AsyncGenerator<StreamEvent> {
    const start = options.lastEventId === undefined ? undefined : parseEventId(options.lastEventId);
    if (options.lastEventId !== undefined && start === undefined) {
      throw new TypeError(`lastEventId must be an event id (a whole number), not "${options.lastEventId}".`);
    }
    return resumableEvents(
      {
        open: (signal) => this.openStream(id, start, signal),
        reopen: (lastEventId, signal) => this.openStream(id, lastEventId, signal),
      },
      { untilDone: options.untilDone ?? false, lastEventId: start, signal: options.signal, reconnect: options.reconnect ?? this.reconnect },
    );
  }

  private openStream(id: string, lastEventId: number | undefined, signal: AbortSignal | undefined): Promise<Response> {
    const headers: Record<string, string> = {};
    if (lastEventId !== undefined) headers["last-event-id"] = String(lastEventId);
    return this.eventStream("GET", `/api/sessions/${seg(id)}/stream`, { headers, signal });
  }

  private async eventStream(method: string, path: string, options: CallOptions): Promise<Response> {
    const response = await this.call(method, path, { ...options, headers: { accept: "text/event-stream", ...options.headers } });
    const type = response.headers.get("content-type") ?? "";
    if (!type.includes("text/event-stream")) {
      await response.body?.cancel().catch(() => {});
      throw new AshError(`${method} ${path} answered ${type || "without a content type"} instead of an event stream.`);
    }
    return response;
  }

  // ---- Attachments -----------------------------------------------------------

  /** Attaches a file to the session (kept by the server; a live session also finds it under `attachments/`). */
  async uploadAttachment(sessionId: string, input: { filename: string; content: Uint8Array | string; mimeType?: string; messageId?: string }): Promise<Attachment> {
    const bytes = typeof input.content === "string" ? new TextEncoder().encode(input.content) : input.content;
    const { attachment } = await this.json<{ attachment: Attachment }>("POST", `/api/sessions/${seg(sessionId)}/attachments`, {
      body: { filename: input.filename, mimeType: input.mimeType, messageId: input.messageId, content: base64Of(bytes) },
    });
    return attachment;
  }

  async listAttachments(sessionId: string): Promise<Attachment[]> {
    const { attachments } = await this.json<{ attachments: Attachment[] }>("GET", `/api/sessions/${seg(sessionId)}/attachments`);
    return attachments ?? [];
  }

  /** An attachment's bytes. */
  async downloadAttachment(id: string): Promise<Uint8Array> {
    const response = await this.call("GET", `/api/attachments/${seg(id)}`, { headers: { accept: "*/*" } });
    return new Uint8Array(await response.arrayBuffer());
  }

  async deleteAttachment(id: string): Promise<void> {
    await this.call("DELETE", `/api/attachments/${seg(id)}`);
  }

  // ---- Keys, tenants, credentials -------------------------------------------

  /** API keys of the calling key's tenant (the operator: all, or one tenant's). */
  async listApiKeys(query: { tenant?: string } = {}): Promise<ApiKey[]> {
    const { keys } = await this.json<{ keys: ApiKey[] }>("GET", "/api/api-keys", { query: { ...query } });
    return keys ?? [];
  }

  /** A new key; the answer's `key` is the only time the key is shown. */
  async createApiKey(input: CreateApiKeyInput = {}): Promise<CreatedApiKey> {
    return this.json<CreatedApiKey>("POST", "/api/api-keys", { body: input });
  }

  /** Revokes a key at once: its next request, on any server, is refused. */
  async revokeApiKey(id: string): Promise<void> {
    await this.call("DELETE", `/api/api-keys/${seg(id)}`);
  }

  async setApiKeyLimits(id: string, limits: UsageLimits): Promise<ApiKey> {
    const { apiKey } = await this.json<{ apiKey: ApiKey }>("PATCH", `/api/api-keys/${seg(id)}`, { body: { limits } });
    return apiKey;
  }

  async listTenants(): Promise<Tenant[]> {
    const { tenants } = await this.json<{ tenants: Tenant[] }>("GET", "/api/tenants");
    return tenants ?? [];
  }

  async createTenant(input: { id: string; label?: string; limits?: UsageLimits }): Promise<Tenant> {
    const { tenant } = await this.json<{ tenant: Tenant }>("POST", "/api/tenants", { body: input });
    return tenant;
  }

  async setTenantLimits(id: string, limits: UsageLimits): Promise<Tenant> {
    const { tenant } = await this.json<{ tenant: Tenant }>("PATCH", `/api/tenants/${seg(id)}`, { body: { limits } });
    return tenant;
  }

  async listCredentials(): Promise<Credential[]> {
    const { credentials } = await this.json<{ credentials: Credential[] }>("GET", "/api/credentials");
    return credentials ?? [];
  }

  /** Stores a secret sealed; only its id, type and label come back. */
  async addCredential(input: CreateCredentialInput): Promise<Credential> {
    const { credential } = await this.json<{ credential: Credential }>("POST", "/api/credentials", { body: input });
    return credential;
  }

  async removeCredential(id: string): Promise<void> {
    await this.call("DELETE", `/api/credentials/${seg(id)}`);
  }

  // ---- Transport ------------------------------------------------------------

  private async sessionCall(method: string, path: string): Promise<Session> {
    const { session } = await this.json<{ session: Session }>(method, path);
    return session;
  }

  private async json<T>(method: string, path: string, options: CallOptions = {}): Promise<T> {
    const response = await this.call(method, path, options);
    const text = await response.text();
    if (!text) return {} as T;
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new AshError(`${method} ${path} answered with something that is not JSON.`);
    }
  }

  /** Sends one request; any status outside 2xx (and `allowStatus`) becomes an `AshApiError`. */
  private async call(method: string, path: string, options: CallOptions = {}, allowStatus: number[] = []): Promise<Response> {
    const url = new URL(this.url + path);
    for (const [key, value] of Object.entries(options.query ?? {})) {
      if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, String(value));
    }
    const headers: Record<string, string> = { accept: "application/json", ...options.headers };
    if (this.apiKey) headers.authorization = `Bearer ${this.apiKey}`;
    let body: RequestInit["body"];
    if (options.body !== undefined) {
      headers["content-type"] = "application/json";
      body = JSON.stringify(options.body);
    } else if (options.rawBody !== undefined) body = options.rawBody as RequestInit["body"];
    const streamed = typeof ReadableStream !== "undefined" && body instanceof ReadableStream;

    let response: Response;
    try {
      response = await this.fetchImpl(url, { method, headers, body, signal: options.signal, ...(streamed ? { duplex: "half" } : {}) } as RequestInit);
    } catch (error) {
      if (options.signal?.aborted) throw options.signal.reason ?? error;
      const code = networkErrorCode(error);
      if (code !== undefined) throw new AshConnectionError(this.url, code, error);
      throw error;
    }
    if (response.ok || allowStatus.includes(response.status)) return response;
    throw await apiError(response, `${method} ${url.pathname}`);
  }
}

/** Builds the error from the server's `{error, statusCode}` answer, or from the status line. */
async function apiError(response: Response, request: string): Promise<AshApiError> {
  let sentence: string | undefined;
  try {
    const text = await response.text();
    const parsed = JSON.parse(text);
    if (parsed && typeof parsed.error === "string" && parsed.error.trim()) sentence = parsed.error.trim();
    else if (parsed && typeof parsed.message === "string" && parsed.message.trim()) sentence = parsed.message.trim();
  } catch {
    // Not JSON: fall back to the status line below.
  }
  sentence ??= `The server answered ${response.status}${response.statusText ? ` ${response.statusText}` : ""} to ${request}.`;
  return new AshApiError(response.status, sentence, request, retryAfterSeconds(response.headers.get("retry-after")));
}

function retryAfterSeconds(header: string | null): number | undefined {
  if (!header) return undefined;
  if (/^\d+$/.test(header.trim())) return Number(header.trim());
  const date = Date.parse(header);
  return Number.isNaN(date) ? undefined : Math.max(0, Math.ceil((date - Date.now()) / 1000));
}

/** A stored event as `GET …/events` lists it: `{id|sequence, type, data}`. */
function storedEvent(raw: unknown): StreamEvent | undefined {
  if (!raw || typeof raw !== "object") return undefined;
  const record = raw as Record<string, unknown>;
  const type = typeof record.type === "string" ? record.type : typeof record.event === "string" ? record.event : undefined;
  const id = parseEventId((record.sequence ?? record.id) as string | number | undefined);
  if (!type || id === undefined) return undefined;
  let data = record.data;
  if (typeof data === "string") {
    try {
      data = JSON.parse(data);
    } catch {
      return undefined;
    }
  }
  return { type, id, data } as StreamEvent;
}

/**
 * A file answer is either the bytes themselves or JSON `{path, size, encoding, content}` with
 * `encoding` `utf8` or `base64`; both come back as bytes.
 */
async function fileBytes(response: Response): Promise<Uint8Array> {
  const bytes = new Uint8Array(await response.arrayBuffer());
  if (!(response.headers.get("content-type") ?? "").includes("application/json")) return bytes;
  let parsed: any;
  try {
    parsed = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return bytes;
  }
  const wrapped = parsed && typeof parsed === "object" && typeof parsed.content === "string" && typeof parsed.path === "string";
  if (!wrapped || (parsed.encoding !== "utf8" && parsed.encoding !== "base64")) return bytes;
  if (parsed.encoding === "utf8") return new TextEncoder().encode(parsed.content);
  // atob rather than Buffer, so the client also runs where Buffer does not exist.
  const binary = atob(parsed.content);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

function logLine(raw: unknown): SandboxLogLine {
  if (typeof raw === "string") return { text: raw };
  const record = (raw ?? {}) as Record<string, unknown>;
  const text = [record.text, record.line, record.message].find((v) => typeof v === "string") as string | undefined;
  return { ...record, text: text ?? JSON.stringify(raw) };
}

/** One path segment, escaped. */
function seg(value: string): string {
  if (typeof value !== "string" || value === "") throw new TypeError("An id or name is required.");
  return encodeURIComponent(value);
}

/** base64 without Node's Buffer (the client also runs in browsers). */
function base64Of(bytes: Uint8Array): string {
  let binary = "";
  for (let at = 0; at < bytes.length; at += 0x8000) binary += String.fromCharCode(...bytes.subarray(at, at + 0x8000));
  return btoa(binary);
}
