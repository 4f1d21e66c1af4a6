/** The resources of the Ash HTTP API, as the server sends them. */
import type { CredentialType, EvalResultStatus, EvalRunStatus, EvalRunSummary, QueueStatus, SessionState, SessionStatus, UploadedFile as AgentFile } from "../contract";

export type { AgentFile, CredentialType, EvalResultStatus, EvalRunStatus, EvalRunSummary, QueueStatus, SessionState, SessionStatus };

export interface AshClientOptions {
  /** Server address, e.g. `http://localhost:4100` (a trailing slash is fine). */
  url: string;
  /** The API key sent as `Authorization: Bearer <key>` on `/api/*`. */
  apiKey?: string;
  /** A `fetch` to use instead of the global one (for proxies, tests, instrumentation). */
  fetch?: typeof globalThis.fetch;
  /** How streams pick up again after a dropped connection. */
  reconnect?: ReconnectOptions;
}

export interface ReconnectOptions {
  /** Attempts in a row without receiving a new event before giving up (default 5; 0 turns reconnecting off). */
  retries?: number;
  /** First wait before reconnecting, doubled after each failed attempt (default 250 ms). */
  initialDelayMs?: number;
  /** Longest wait between attempts (default 5000 ms). */
  maxDelayMs?: number;
}

export interface HealthStatus {
  status: "ok" | "degraded";
  version: string;
  /** Seconds since the server started. */
  uptime: number;
  activeSessions: number;
  activeSandboxes: number;
  pool: Record<string, unknown>;
  /** `mode: "none"` only when the server was started with ASH_SANDBOX_ALLOW_UNISOLATED=true. */
  isolation: { mode: "bwrap" | "none"; seccomp: boolean; unisolatedAllowed: boolean };
  limits: { mode: "cgroup2" | "cgroup1" | "rlimit"; [key: string]: unknown };
  database: "sqlite" | "postgres";
  /** Which server answered, and where other servers reach it (several servers behind one address). */
  server: { id: string; address: string };
  [key: string]: unknown;
}

export interface Agent {
  id: string;
  name: string;
  version: number;
  createdAt: string;
  updatedAt: string;
  /** Environment variable names; values are shown as `"***"`. */
  env: Record<string, string>;
  [key: string]: unknown;
}

/** One file of an agent folder; `content` is base64. */

interface DeployAgentCommon {
  /** Letters, digits, `-` and `_`, 1 to 64 (`AGENT_NAME` in the contract). */
  name: string;
  /** Environment variables for the agent's sandboxes. */
  env?: Record<string, string>;
  /** Replaces the system prompt taken from `CLAUDE.md`. */
  systemPrompt?: string;
  /** Tools its sessions hold for a person's allow or deny (`tool_confirmation` events). */
  confirmTools?: ConfirmTools;
}

/** Tools held for a person's allow or deny before they run: every one, or these names (`mcp__<server>`: all of that server's). */
export type ConfirmTools = "all" | string[];

/** A person's answer to a `tool_confirmation` event. */
export interface ToolDecisionInput {
  toolUseId: string;
  decision: "allow" | "deny";
  /** With deny: what the model is told instead of the tool's result. */
  message?: string;
}

/** Upload the folder's files, or name a folder already inside the server's data directory. */
export type DeployAgentInput =
  | (DeployAgentCommon & { files: AgentFile[]; path?: never })
  | (DeployAgentCommon & { path: string; files?: never })
  /** An agent from a prompt alone: the server makes its CLAUDE.md from `systemPrompt`. */
  | (DeployAgentCommon & { systemPrompt: string; files?: never; path?: never });

/** What a new agent version changes (`PATCH /api/agents/:name`, `POST /api/agents/:name/versions`). */
export interface AgentChange {
  /** A new prompt (for an agent deployed from a prompt alone: its CLAUDE.md); null removes an added prompt. */
  systemPrompt?: string | null;
  /** Variables to set; a null value removes one. */
  env?: Record<string, string | null>;
  /** Files to add or replace; `content` is base64. */
  files?: AgentFile[];
  /** Paths to take out. */
  removeFiles?: string[];
  egress?: string[];
  maxTokens?: number | null;
  /** null: no tool waits for confirmation any more. */
  confirmTools?: ConfirmTools | null;
}

export interface CreateAgentVersionInput extends AgentChange {
  /** A label for the version (default `v<n>`). */
  name?: string;
  releaseNotes?: string;
  /** Start from this version rather than the active one. */
  cloneFrom?: number;
  /** Make it the version new sessions get. */
  activate?: boolean;
}

export interface AgentVersion {
  agentName: string;
  version: number;
  versionNumber: number;
  name: string;
  isActive: boolean;
  systemPrompt: string | null;
  releaseNotes: string | null;
  env: Record<string, string>;
  fileCount: number;
  createdAt: string;
  [key: string]: unknown;
}

export interface AgentFileEntry {
  path: string;
  size: number;
  mode: number;
  modifiedAt: string;
}

export interface AgentConfig {
  /** Ready sandboxes kept for the agent's new sessions. */
  warmSpares: number;
  maxTokens: number | null;
  egress: string[];
  /** The active version. */
  version: number;
}

/** One file to write into a session's workspace (`POST /api/sessions/:id/files`). */
export interface WorkspaceUpload {
  path: string;
  /** The bytes as base64 (default) or as text with `encoding: "utf8"`. */
  content: string;
  encoding?: "base64" | "utf8";
  /** Permission bits; only "executable or not" is kept. */
  mode?: number;
}


export interface Session {
  id: string;
  agentName: string;
  sandboxId: string | null;
  status: SessionStatus;
  /** Where its processes are: hot (agent process running), idle (only the sandbox), asleep (nothing running); servers before it omit it. */
  state?: SessionState;
  createdAt: string;
  lastActiveAt: string;
  model?: string | null;
  parentSessionId?: string | null;
  /** In a listing (`listSessions`): completed turns and tokens used so far. */
  turns?: number;
  tokens?: number;
  [key: string]: unknown;
}

export interface CreateSessionInput {
  /** Name of a deployed agent. */
  agent: string;
  model?: string;
  systemPrompt?: string;
  extraEnv?: Record<string, string>;
  mcpServers?: Record<string, unknown>;
  permissionMode?: string;
  allowedTools?: string[];
  disallowedTools?: string[];
  /** Tools this session holds for a person's allow or deny (unset: the agent's; `[]`: none). */
  confirmTools?: ConfirmTools;
}

export interface ListSessionsQuery {
  agent?: string;
  status?: SessionStatus;
  limit?: number;
  /** The `nextCursor` of the previous page. */
  cursor?: string;
}

export interface SessionPage {
  sessions: Session[];
  /** Pass as `cursor` for the next page; `null` on the last page. */
  nextCursor: string | null;
}

export interface StoredMessage {
  id: string;
  sessionId: string;
  /** As the original API has it: tool results count as user rows, turn results as assistant rows. */
  role: "user" | "assistant";
  /** The Agent SDK message as a JSON string, as the original API answers it. */
  content: string;
  sequence: number;
  createdAt: string;
  /** What the row is. */
  kind: "user" | "assistant" | "tool" | "result";
  /** Its content, parsed: what was sent (a string or content blocks), the agent's blocks, tool results, or a turn's result. */
  data: unknown;
  /** Present (true) when a rewind took the message off the session's line; it stays in the history. */
  rewound?: true;
}

/** A completed turn's saved state: the workspace and the conversation as they were after it. */
export interface Checkpoint {
  /** 1, 2, 3… in the order they were made; what rewind and fork take. */
  checkpoint: number;
  /** User turns in the conversation at this point. */
  turn: number;
  /** The checkpoint this one followed; null for the first. */
  parent: number | null;
  createdAt: string;
  /** The start of the user message that began the turn; null for files saved between turns. */
  prompt: string | null;
  fileCount: number;
  bytes: number;
  /** Files whose bytes differ from what their name held at the checkpoint before (new files included). */
  filesChanged: number;
  /** The size of those files. */
  bytesChanged: number;
  /** True when a rewind moved the session away from it (it can still be forked). */
  rewound: boolean;
}

export interface MessageQuery {
  /** Only messages with a higher sequence number. */
  after?: number;
  limit?: number;
}

export interface EventQuery {
  /** Only events with a higher sequence number. */
  after?: number;
  limit?: number;
  /** Only events of this type, e.g. `tool_use`. */
  type?: string;
}

/** A text or image block, or any other block the Messages API accepts. */
export type ContentBlock =
  | { type: "text"; text: string }
  | { type: "image"; source: { type: "base64"; media_type: string; data: string } | { type: "url"; url: string } }
  | { type: string; [key: string]: unknown };

export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
  /** The command ran out of time and was killed. */
  timedOut?: boolean;
}

/** One file of a workspace listing. */
export interface WorkspaceEntry {
  /** Relative to the workspace root, `/`-separated. */
  path: string;
  size: number;
  modifiedAt?: string;
  [key: string]: unknown;
}

export interface WorkspaceListing {
  /** Every file of the workspace, folders flattened into paths. */
  files: WorkspaceEntry[];
  /** Where the answer came from: `sandbox` (live) or `snapshot` (stored). */
  source?: string;
}

export interface WorkspaceFile {
  path: string;
  /** The raw bytes. */
  content: Uint8Array;
  /** The bytes as UTF-8 text. */
  text(): string;
}

export interface SandboxLogLine {
  /** The line, without its line end. */
  text: string;
  /** `stdout` or `stderr`. */
  stream?: string;
  /** What wrote it, e.g. `claude` (the agent's process) or `exec`. */
  source?: string;
  /** When the line was complete, in epoch milliseconds. */
  at?: number;
  [key: string]: unknown;
}

/** What an API key may do; each includes the ones before (`operator` is the server's own key). */
export type KeyScope = "read" | "sessions" | "admin" | "operator";

/** Per key or per tenant; a missing field is the server's default (none). */
export interface UsageLimits {
  requestsPerMinute?: number;
  liveSessions?: number;
  runningTurns?: number;
  tokensPerDay?: number;
}

export interface ApiKey {
  id: string;
  label: string;
  tenant: string;
  scope: KeyScope;
  /** The key's first characters, to tell keys apart; never the key. */
  keyPrefix: string | null;
  createdAt: string;
  expiresAt: string | null;
  lastUsedAt: string | null;
  revoked: boolean;
  limits: UsageLimits;
}

/** The answer to creating a key: the key itself, shown this once. */
export interface CreatedApiKey extends ApiKey {
  key: string;
}

export interface CreateApiKeyInput {
  label?: string;
  /** Default: the calling key's tenant. Only the operator makes keys for other tenants. */
  tenant?: string;
  /** Default `sessions`; at most the calling key's own. */
  scope?: "read" | "sessions" | "admin";
  /** An ISO 8601 time or epoch milliseconds, in the future. */
  expiresAt?: string | number;
  limits?: UsageLimits;
}

export interface Tenant {
  id: string;
  label: string;
  limits: UsageLimits;
  createdAt: string;
}

/** A stored credential; its secret is never answered. */
export interface Credential {
  id: string;
  type: CredentialType;
  label: string;
  /** For `custom`: the environment variable a session gets it as. */
  variable?: string;
  active: boolean;
  createdAt: string;
  lastUsedAt: string | null;
}

export interface CreateCredentialInput {
  type: CredentialType;
  /** The secret: a model key, or a `custom` variable's value. */
  key: string;
  label?: string;
  variable?: string;
}

/** A prompt the servers run in the background (`/api/queue`). */
export interface QueueItem {
  id: string;
  agent: string;
  prompt: string;
  status: QueueStatus;
  /** Higher runs first; equal priorities run oldest first. */
  priority: number;
  /** Times it was started (a retry, or a rerun after its server died, is one more). */
  attempts: number;
  /** Retries after a failed attempt; up to `maxRetries + 1` attempts in all. */
  maxRetries: number;
  /** The session the latest attempt ran in. */
  sessionId: string | null;
  /** The session the prompt continues, when one was named. */
  continueSessionId: string | null;
  /** The turn's final text, once completed. */
  result: string | null;
  /** Why the latest attempt failed. */
  error: string | null;
  /** The server running it (while running). */
  claimedBy: string | null;
  leaseUntil: string | null;
  /** When a pending item may start (a retry waits). */
  nextAttemptAt: string | null;
  createdAt: string;
  startedAt: string | null;
  completedAt: string | null;
}

export interface EnqueueInput {
  agent: string;
  prompt: string;
  /** Continue this session of the agent instead of starting a new one. */
  sessionId?: string;
  /** -1000 to 1000, default 0. */
  priority?: number;
  /** 0 to 20, default 3. */
  maxRetries?: number;
}

export interface ListQueueQuery {
  status?: QueueStatus;
  agent?: string;
  limit?: number;
  cursor?: string;
}

export interface QueuePage {
  /** Newest first. */
  items: QueueItem[];
  nextCursor: string | null;
}

export interface QueueStats extends Record<QueueStatus, number> {
  total: number;
  /** Items running on the server that answered. */
  runningHere: number;
  /** That server's ASH_QUEUE_CONCURRENCY. */
  concurrency: number;
}

/** One evaluation case of an agent, as import takes it and export writes it. */
export interface EvalCaseInput {
  question: string;
  /** Topics a good answer mentions (case-insensitive). */
  expectedTopics?: string[];
  /** Topics a good answer does not mention. */
  unexpectedTopics?: string[];
  referenceAnswer?: string | null;
  category?: string | null;
  tags?: string[];
  /** The conversation before the question; its user turns are sent first, as real turns. */
  history?: Array<{ role: "user" | "assistant"; content: string }>;
}

export interface EvalCase extends Required<EvalCaseInput> {
  id: string;
  agent: string;
  createdAt: string;
}

export interface EvalExport {
  format: "ash-evals/1";
  agent: string;
  cases: EvalCaseInput[];
}

export interface EvalRunInput {
  /** Agent version to run against; default the latest. */
  version?: number;
  /** Cases at once (at most the server's ASH_EVAL_CONCURRENCY). */
  concurrency?: number;
  /** Grade answers by the model (default true). */
  grade?: boolean;
  category?: string;
  tags?: string[];
}


export interface EvalRun {
  id: string;
  agent: string;
  agentVersion: number;
  status: EvalRunStatus;
  grade: boolean;
  error: string | null;
  createdAt: string;
  completedAt: string | null;
  summary: EvalRunSummary;
}

export interface EvalResult {
  caseId: string;
  question: string;
  status: EvalResultStatus;
  sessionId: string | null;
  answer: string | null;
  error: string | null;
  /** The human score when given, else the mean of the automatic score and the grade. */
  score: number | null;
  autoScore: number | null;
  pass: boolean | null;
  checks: { expectedFound: string[]; expectedMissing: string[]; unexpectedFound: string[] } | null;
  gradeScore: number | null;
  grade: { score: number | null; reason: string | null; model: string; error?: string } | null;
  humanScore: number | null;
  humanNotes: string | null;
  startedAt: string | null;
  completedAt: string | null;
}

export interface EvalComparison {
  base: EvalRun;
  other: EvalRun;
  cases: Array<{ caseId: string; question: string; base: number | null; other: number | null; delta: number | null; change: "improved" | "regressed" | "same" | "missing" }>;
  summary: { improved: number; regressed: number; same: number; missing: number; delta: number | null };
}

/** A file attached to a session (`POST /api/sessions/:id/attachments`). */
export interface Attachment {
  id: string;
  sessionId: string;
  messageId: string | null;
  filename: string;
  mimeType: string;
  size: number;
  /** Where a live session's workspace has it. */
  path: string;
  createdAt: string;
}

/** Filters of the usage answers: time as ISO 8601 or epoch milliseconds. */
export interface UsageQuery {
  session?: string;
  agent?: string;
  from?: string;
  to?: string;
}

/** One model response's tokens, as the server's model gateway measured them. */
export interface UsageRecord {
  id: string;
  sessionId: string | null;
  agentName: string;
  turnId: string | null;
  keyId: string | null;
  model: string;
  inputTokens: number;
  outputTokens: number;
  cacheCreationTokens: number;
  cacheReadTokens: number;
  createdAt: string;
}

export interface UsagePage {
  usage: UsageRecord[];
  nextCursor: string | null;
}

/** The original API's flat usage totals. */
export interface UsageTotals {
  totalInputTokens: number;
  totalOutputTokens: number;
  totalCacheCreationTokens: number;
  totalCacheReadTokens: number;
  totalToolCalls: number;
  totalMessages: number;
  totalComputeSeconds: number;
}

export interface UsageStats {
  totals: { requests: number; inputTokens: number; outputTokens: number; cacheCreationTokens: number; cacheReadTokens: number; totalTokens: number };
  groups: Array<{ agentName: string; model: string; requests: number; inputTokens: number; outputTokens: number; cacheCreationTokens: number; cacheReadTokens: number }>;
  stats: UsageTotals;
}

export interface Analytics {
  agents: { total: number };
  sessions: { total: number; byStatus: Record<string, number> };
  usage: UsageTotals;
  evals: { totalRuns: number; byStatus: Record<string, number> };
}

/** A timeline event in the original API's shape (`data` is JSON text). */
export interface TimelineEvent {
  id: string;
  sessionId: string;
  type: "text" | "tool_start" | "tool_result" | "reasoning" | "error" | "turn_complete" | "lifecycle";
  data: string;
  sequence: number;
  createdAt: string;
}
