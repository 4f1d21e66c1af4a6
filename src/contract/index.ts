/**
 * The words of the HTTP contract that every layer uses: the server validates
 * with them, the database stores them, the client and the CLI show them. One
 * definition each, with no imports, so any layer (the browser-safe client
 * included) can depend on this module.
 */

/** What a session can be (API.md, "Sessions"). */
export const SESSION_STATUSES = ["starting", "active", "paused", "stopped", "ended", "error"] as const;
export type SessionStatus = (typeof SESSION_STATUSES)[number];

/** Statuses of a session that holds (or is about to hold) a sandbox: what limits on live sessions count. */
export const LIVE_SESSION_STATUSES: readonly SessionStatus[] = SESSION_STATUSES.slice(0, 2);

export function isSessionStatus(value: unknown): value is SessionStatus {
  return typeof value === "string" && (SESSION_STATUSES as readonly string[]).includes(value);
}

/**
 * Where a session's processes are (the `state` beside `status`): `hot`, its
 * agent process runs; `idle`, only its sandbox and folder are kept (the next
 * message starts the process again); `asleep`, its workspace is saved and
 * nothing runs.
 */
export const SESSION_STATES = ["hot", "idle", "asleep"] as const;
export type SessionState = (typeof SESSION_STATES)[number];

/** An agent's name: letters, digits, `-` and `_`, 1 to 64 characters. */
export const AGENT_NAME = /^[a-zA-Z0-9_-]{1,64}$/;
export const AGENT_NAME_RULE = "letters, digits, - and _ (1 to 64)";

/** Why a sandbox limit stopped a process: the `code` of the `error` event. */
export const LIMIT_REASONS = ["sandbox_oom", "sandbox_pids", "sandbox_disk"] as const;
export type LimitReason = (typeof LIMIT_REASONS)[number];

/** One file of an agent upload (`POST /api/agents` `files[]`). */
export interface UploadedFile {
  /** Relative to the agent folder, `/`-separated. */
  path: string;
  /** Base64. */
  content: string;
  /** Permission bits; only "executable or not" is kept by the server. */
  mode?: number;
}

/** What a queued prompt can be (`GET /api/queue?status=`). */
export const QUEUE_STATUSES = ["pending", "running", "completed", "failed", "cancelled"] as const;
export type QueueStatus = (typeof QUEUE_STATUSES)[number];

export function isQueueStatus(value: unknown): value is QueueStatus {
  return typeof value === "string" && (QUEUE_STATUSES as readonly string[]).includes(value);
}

/** What an evaluation run, and each of its cases, can be. */
export const EVAL_RUN_STATUSES = ["running", "completed", "failed"] as const;
export type EvalRunStatus = (typeof EVAL_RUN_STATUSES)[number];
export const EVAL_RESULT_STATUSES = ["pending", "running", "completed", "failed"] as const;
export type EvalResultStatus = (typeof EVAL_RESULT_STATUSES)[number];

/** An evaluation run's totals, as the server computes them and the client reads them. */
export interface EvalRunSummary {
  cases: number;
  completed: number;
  failed: number;
  /** Cases whose automatic checks all passed. */
  passed: number;
  /** Mean case score over finished cases (failed ones count 0); null before any finished. */
  score: number | null;
  autoScore: number | null;
  gradeScore: number | null;
  humanScored: number;
}

/** What a stored credential is for: a model key the gateway uses (anthropic, bedrock, vertex), or a variable a session gets (custom). */
export const CREDENTIAL_TYPES = ["anthropic", "bedrock", "vertex", "custom"] as const;
export type CredentialType = (typeof CREDENTIAL_TYPES)[number];
