import { isIP } from "node:net";
import { cpus, totalmem } from "node:os";
import { resolve } from "node:path";
import { ConfigError } from "./config-error";
import { boolean, integer, isHttpUrl, text, type Env } from "./env-values";
import { AGENT_NAME, AGENT_NAME_RULE } from "./contract";

/**
 * How long a server may take to stop after SIGTERM (finish or cut running turns,
 * save every live session) before it exits anyway. Deployments size their grace
 * period from it (`ash kube generate`).
 */
export const SHUTDOWN_LIMIT_MS = 30_000;

/** `ASH_SNAPSHOT_STORE` naming a bucket: `s3://<bucket>[/<prefix>]`. */
export const S3_STORE_URL = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:\/(.*))?$/;

/** Shorter credential master keys are refused (the vault checks the same). */
const MIN_MASTER_KEY_LENGTH = 32;

/**
 * Everything the server reads from its environment, parsed once at start-up.
 * A bad value stops start-up with one line that names the variable
 * (see docs/configuration.md for the reference).
 */
export interface ServerConfig {
  port: number;
  /** Several servers on one database (docs/decisions/cluster-leases.md). */
  cluster: {
    /** ASH_CLUSTER_SECRET: signs requests forwarded between servers; unset, a server neither forwards nor accepts them. */
    secret?: string;
    /** ASH_ADVERTISE_URL: where other servers reach this one; unset, its first non-internal IPv4 address and port. */
    advertiseUrl?: string;
    /** ASH_LEASE_TTL_MS: a live session's lease lasts this long past its owner's last heartbeat. */
    leaseTtlMs: number;
  };
  host: string;
  dataDir: string;
  /** Unset: SQLite at `<dataDir>/ash.db`. */
  databaseUrl?: string;
  apiKey?: string;
  maxSandboxes: number;
  idleTimeoutMs: number;
  /** How long a session's agent process outlives its last turn (ASH_KEEPALIVE_MS); then only its sandbox stays. */
  keepaliveMs: number;
  /** Agent processes starting at once (ASH_START_CONCURRENCY); more wait in order. */
  startConcurrency: number;
  anthropicApiKey?: string;
  anthropicBaseUrl?: string;
  /** Largest JSON body accepted, in bytes (agent uploads included). */
  maxBodyBytes: number;
  /** ASH_CONSOLE: serve the web console at /console (off: no route at all). */
  console: boolean;
  /** A turn whose model stays silent this long ends with an `error` event (the agent process's start-up is not counted). */
  turnIdleTimeoutMs: number;
  /** An agent process that has not finished starting this long after it was spawned is stopped (waiting for a start slot is not counted). */
  agentStartTimeoutMs: number;
  /** How often the CLI retries a failed model call before the turn fails. */
  modelMaxRetries: number;
  /** How long start-up keeps retrying an unreachable database. */
  databaseConnectTimeoutMs: number;
  sandbox: {
    memoryMb: number;
    cpuPercent: number;
    maxProcesses: number;
    diskMb: number;
    /**
     * Run sessions without isolation when bwrap is unusable (ASH_SANDBOX_ALLOW_UNISOLATED).
     * Off, the server refuses to start instead.
     */
    allowUnisolated: boolean;
  };
  /** Where workspace snapshots go: files under `<dataDir>/sessions`, or an S3-compatible bucket. */
  snapshots: SnapshotConfig;
  /** How long checkpoints are kept and how the snapshot garbage collector runs. */
  checkpoints: CheckpointConfig;
  logFormat: "human" | "json";
  /** Ready sandboxes kept per agent name (ASH_WARM_POOL); empty: no warm pool. */
  warmPool: Record<string, number>;
  /** Agents with a session created this recently get a spare (ASH_WARM_DEMAND_MS); 0: only ASH_WARM_POOL's. */
  warmDemandMs: number;
  /** Memory the demand spares may hold in all, in MB (ASH_WARM_MEMORY_MB). */
  warmMemoryMb: number;
  /** ASH_WARM_PRIME: a spare runs its agent process's first-turn path once (answered by the gateway) before it is ready. */
  warmPrime: boolean;
  /** Token budget of a session when neither the session nor its agent sets one (ASH_DEFAULT_MAX_TOKENS). */
  defaultMaxTokens?: number;
  /** What sandboxes may reach through the egress proxies. */
  egress: EgressConfig;
  /** ASH_LIMIT_*: every key's limits where the key sets none (the server's own key has none). */
  keyLimits: { requestsPerMinute?: number; liveSessions?: number; runningTurns?: number; tokensPerDay?: number };
  /** ASH_CREDENTIAL_KEY: the master key stored credentials are sealed with; unset: no credentials. */
  credentialKey?: string;
  /** ASH_CREDENTIAL_KEY_PREVIOUS: the master key before a rotation; what it sealed is sealed again at start-up. */
  credentialKeyPrevious?: string;
  /** ASH_TEST_START_HOLD_FILE, for tests only: agent processes' start-up does not end before this file exists. */
  testStartHoldFile?: string;
  /** Absolute folders (besides the data directory) that `{name, path}` deploys may read (ASH_AGENT_ROOTS). */
  agentRoots: string[];
  /** Largest workspace upload (tar.gz, unpacked size) or file batch, in bytes (ASH_MAX_UPLOAD_BYTES). */
  maxUploadBytes: number;
  /** Largest file `GET /api/sessions/:id/files/*` serves, in bytes (ASH_MAX_FILE_BYTES). */
  maxFileBytes: number;
  /** Largest attachment (`POST /api/sessions/:id/attachments`), in bytes (ASH_MAX_ATTACHMENT_BYTES). */
  maxAttachmentBytes: number;
  /** ASH_TEST_TEARDOWN_HOLD_FILE, for tests only: a sandbox's teardown waits before destroying it until this file exists. */
  testTeardownHoldFile?: string;
  /** How this server takes part in running the queue. */
  queue: QueueConfig;
  /** How evaluation runs use this server. */
  evals: EvalConfig;
}

export interface QueueConfig {
  /** ASH_QUEUE_CONCURRENCY: queued prompts this server runs at once (0: it runs none). */
  concurrency: number;
  /** ASH_QUEUE_LEASE_MS: how long a claim holds without renewal; a dead server's item runs again after it. */
  leaseMs: number;
  /** ASH_QUEUE_POLL_MS: how often the server looks for queued work. */
  pollMs: number;
  /** ASH_QUEUE_RETRY_BASE_MS: the wait before the first retry, doubled for each later one. */
  retryBaseMs: number;
}

export interface EvalConfig {
  /** ASH_EVAL_CONCURRENCY: cases of one run that run at once. */
  concurrency: number;
  /** ASH_EVAL_GRADER_MODEL: the model that grades answers. */
  graderModel: string;
}

export interface EgressConfig {
  /** ASH_EGRESS_ALLOW: host names every agent may reach (exact, `*.suffix`, optional `:port`). */
  allow: string[];
  /** ASH_EGRESS_ALLOW_PRIVATE: allowlisted names may resolve to private (RFC 1918, ULA, CGNAT) addresses. */
  allowPrivate: boolean;
  /** ASH_EGRESS_TEST_HOSTS: for tests only, fixed name=address answers used instead of DNS. */
  testHosts: Record<string, string>;
}

export interface CheckpointConfig {
  /** ASH_CHECKPOINTS_KEEP: checkpoints kept per session, newest first (its newest is always kept). */
  keep: number;
  /** ASH_CHECKPOINTS_MAX_AGE_MS: older checkpoints go (except a session's newest). */
  maxAgeMs: number;
  /** ASH_SNAPSHOT_GC_INTERVAL_MS: how often unused snapshot data is collected. */
  gcIntervalMs: number;
  /** ASH_SNAPSHOT_GC_GRACE_MS: data written or used more recently than this is never collected. */
  gcGraceMs: number;
}

export type SnapshotConfig =
  | { kind: "fs" }
  | { kind: "s3"; bucket: string; prefix: string; endpoint: string; region: string; accessKeyId: string; secretAccessKey: string };

export { ConfigError };

export function loadConfig(env: Env = process.env): ServerConfig {
  const dataDir = resolve(text(env, "ASH_DATA_DIR") ?? "./data");
  const databaseUrl = text(env, "ASH_DATABASE_URL");
  if (databaseUrl && !/^(postgres(ql)?|sqlite|file):/i.test(databaseUrl)) {
    throw new ConfigError("ASH_DATABASE_URL must be a postgres://, postgresql:// or sqlite: URL");
  }
  const baseUrl = text(env, "ANTHROPIC_BASE_URL");
  if (baseUrl && !isHttpUrl(baseUrl)) {
    throw new ConfigError("ANTHROPIC_BASE_URL must be an http:// or https:// URL");
  }
  const apiKey = text(env, "ASH_API_KEY");
  if (apiKey !== undefined && apiKey.length < 8) {
    throw new ConfigError("ASH_API_KEY must be at least 8 characters long");
  }
  const credentialKey = text(env, "ASH_CREDENTIAL_KEY");
  const credentialKeyPrevious = text(env, "ASH_CREDENTIAL_KEY_PREVIOUS");
  for (const [name, value] of [["ASH_CREDENTIAL_KEY", credentialKey], ["ASH_CREDENTIAL_KEY_PREVIOUS", credentialKeyPrevious]] as const) {
    if (value !== undefined && value.length < MIN_MASTER_KEY_LENGTH) throw new ConfigError(`${name} must be at least ${MIN_MASTER_KEY_LENGTH} characters long (it guards every stored model key)`);
  }
  if (credentialKeyPrevious !== undefined && credentialKey === undefined) throw new ConfigError("ASH_CREDENTIAL_KEY_PREVIOUS needs ASH_CREDENTIAL_KEY: the new master key to seal credentials with");
  const logFormat = text(env, "ASH_LOG_FORMAT") ?? "human";
  if (logFormat !== "human" && logFormat !== "json") {
    throw new ConfigError('ASH_LOG_FORMAT must be "human" or "json"');
  }
  return {
    port: integer(env, "ASH_PORT", 4100, 0, 65535),
    host: text(env, "ASH_HOST") ?? "0.0.0.0",
    dataDir,
    databaseUrl,
    apiKey,
    maxSandboxes: integer(env, "ASH_MAX_SANDBOXES", 50, 1, 100_000),
    idleTimeoutMs: integer(env, "ASH_IDLE_TIMEOUT_MS", 30 * 60_000, 1000, 7 * 24 * 3600_000),
    keepaliveMs: integer(env, "ASH_KEEPALIVE_MS", DEFAULT_KEEPALIVE_MS, 0, 7 * 24 * 3600_000),
    startConcurrency: integer(env, "ASH_START_CONCURRENCY", Math.max(1, cpus().length), 1, 1024),
    anthropicApiKey: text(env, "ANTHROPIC_API_KEY"),
    anthropicBaseUrl: baseUrl,
    console: boolean(env, "ASH_CONSOLE", true),
    maxBodyBytes: integer(env, "ASH_MAX_BODY_BYTES", 1024 * 1024, 1024, 1024 * 1024 * 1024),
    turnIdleTimeoutMs: integer(env, "ASH_TURN_IDLE_TIMEOUT_MS", 120_000, 500, 3600_000),
    agentStartTimeoutMs: integer(env, "ASH_AGENT_START_TIMEOUT_MS", 60_000, 500, 3600_000),
    modelMaxRetries: integer(env, "ASH_MODEL_MAX_RETRIES", 1, 0, 10),
    databaseConnectTimeoutMs: integer(env, "ASH_DATABASE_CONNECT_TIMEOUT_MS", 120_000, 0, 3600_000),
    sandbox: {
      memoryMb: integer(env, "ASH_SANDBOX_MEMORY_MB", 2048, 16, 1024 * 1024),
      cpuPercent: integer(env, "ASH_SANDBOX_CPU_PERCENT", 100, 1, 100_000),
      maxProcesses: integer(env, "ASH_SANDBOX_MAX_PROCESSES", 256, 8, 1_000_000),
      diskMb: integer(env, "ASH_SANDBOX_DISK_MB", 1024, 1, 1024 * 1024),
      allowUnisolated: allowUnisolated(env),
    },
    snapshots: snapshotConfig(env),
    checkpoints: {
      keep: integer(env, "ASH_CHECKPOINTS_KEEP", 100, 1, 1_000_000),
      maxAgeMs: integer(env, "ASH_CHECKPOINTS_MAX_AGE_MS", 30 * 24 * 3600_000, 60_000, 100 * 365 * 24 * 3600_000),
      gcIntervalMs: integer(env, "ASH_SNAPSHOT_GC_INTERVAL_MS", 10 * 60_000, 100, 7 * 24 * 3600_000),
      gcGraceMs: integer(env, "ASH_SNAPSHOT_GC_GRACE_MS", 3600_000, 0, 7 * 24 * 3600_000),
    },
    logFormat,
    warmPool: warmPoolConfig(env),
    warmDemandMs: integer(env, "ASH_WARM_DEMAND_MS", 3600_000, 0, 7 * 24 * 3600_000),
    warmMemoryMb: integer(env, "ASH_WARM_MEMORY_MB", Math.min(2048, Math.floor(totalmem() / 2 ** 20 / 16)), 0, 1024 * 1024),
    agentRoots: agentRootsConfig(env),
    maxUploadBytes: integer(env, "ASH_MAX_UPLOAD_BYTES", 100 * 1024 * 1024, 1024, 64 * 1024 * 1024 * 1024),
    maxAttachmentBytes: integer(env, "ASH_MAX_ATTACHMENT_BYTES", 10 * 1024 * 1024, 1, 256 * 1024 * 1024),
    maxFileBytes: integer(env, "ASH_MAX_FILE_BYTES", 100 * 1024 * 1024, 1024, 64 * 1024 * 1024 * 1024),
    warmPrime: boolean(env, "ASH_WARM_PRIME", true),
    defaultMaxTokens: text(env, "ASH_DEFAULT_MAX_TOKENS") === undefined ? undefined : integer(env, "ASH_DEFAULT_MAX_TOKENS", 0, 1, Number.MAX_SAFE_INTEGER),
    credentialKey,
    credentialKeyPrevious,
    keyLimits: {
      requestsPerMinute: optionalInteger(env, "ASH_LIMIT_REQUESTS_PER_MINUTE", 1, 1_000_000_000),
      liveSessions: optionalInteger(env, "ASH_LIMIT_LIVE_SESSIONS", 1, 1_000_000_000),
      runningTurns: optionalInteger(env, "ASH_LIMIT_RUNNING_TURNS", 1, 1_000_000_000),
      tokensPerDay: optionalInteger(env, "ASH_LIMIT_TOKENS_PER_DAY", 1, Number.MAX_SAFE_INTEGER),
    },
    egress: {
      allow: egressAllowConfig(env),
      allowPrivate: boolean(env, "ASH_EGRESS_ALLOW_PRIVATE", false),
      testHosts: egressTestHosts(env),
    },
    testStartHoldFile: text(env, "ASH_TEST_START_HOLD_FILE"),
    queue: {
      concurrency: integer(env, "ASH_QUEUE_CONCURRENCY", 2, 0, 1000),
      leaseMs: integer(env, "ASH_QUEUE_LEASE_MS", 60_000, 500, 3600_000),
      pollMs: integer(env, "ASH_QUEUE_POLL_MS", 1000, 20, 600_000),
      retryBaseMs: integer(env, "ASH_QUEUE_RETRY_BASE_MS", 5000, 0, 3600_000),
    },
    evals: {
      concurrency: integer(env, "ASH_EVAL_CONCURRENCY", 2, 1, 100),
      graderModel: text(env, "ASH_EVAL_GRADER_MODEL") ?? "claude-sonnet-4-5",
    },
    testTeardownHoldFile: text(env, "ASH_TEST_TEARDOWN_HOLD_FILE"),
    cluster: clusterConfig(env),
  };
}

/** Shorter cluster secrets are refused: anyone who has it can act as any key on any server. */
const MIN_CLUSTER_SECRET_LENGTH = 32;

function clusterConfig(env: Env): ServerConfig["cluster"] {
  const secret = text(env, "ASH_CLUSTER_SECRET");
  if (secret !== undefined && secret.length < MIN_CLUSTER_SECRET_LENGTH) {
    throw new ConfigError(`ASH_CLUSTER_SECRET must be at least ${MIN_CLUSTER_SECRET_LENGTH} characters long (it lets one server act for any caller on another)`);
  }
  const advertiseUrl = text(env, "ASH_ADVERTISE_URL");
  if (advertiseUrl !== undefined && !isHttpUrl(advertiseUrl)) throw new ConfigError("ASH_ADVERTISE_URL must be an http:// or https:// URL");
  return {
    secret,
    advertiseUrl: advertiseUrl?.replace(/\/+$/, ""),
    leaseTtlMs: integer(env, "ASH_LEASE_TTL_MS", 15_000, 3000, 600_000),
  };
}

/** See docs/decisions/sessions-hot-window.md for why two minutes. */
const DEFAULT_KEEPALIVE_MS = 120_000;

/** An integer setting that is off when unset. */
function optionalInteger(env: Env, name: string, min: number, max: number): number | undefined {
  return text(env, name) === undefined ? undefined : integer(env, name, min, min, max);
}

const HOST_PATTERN = /^(\*\.)?[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?(:\d{1,5})?$|^\[[0-9a-f:.]+\](:\d{1,5})?$|^[0-9a-f:]+$/i;

/** ASH_EGRESS_ALLOW: comma- or space-separated host names. */
function egressAllowConfig(env: Env): string[] {
  const raw = text(env, "ASH_EGRESS_ALLOW");
  if (raw === undefined) return [];
  const hosts = raw.split(/[\s,]+/).filter(Boolean);
  for (const host of hosts) {
    if (!HOST_PATTERN.test(host)) throw new ConfigError(`ASH_EGRESS_ALLOW must list host names (example.com, *.example.com, host:port), got "${host}"`);
  }
  return hosts;
}

/** ASH_EGRESS_TEST_HOSTS: `name=address` pairs, comma-separated (tests only). */
function egressTestHosts(env: Env): Record<string, string> {
  const raw = text(env, "ASH_EGRESS_TEST_HOSTS");
  const hosts: Record<string, string> = {};
  if (raw === undefined) return hosts;
  for (const item of raw.split(",")) {
    const match = /^\s*([a-z0-9_.-]+)\s*=\s*([0-9a-f:.]+)\s*$/i.exec(item);
    if (!match || isIP(match[2]!) === 0) throw new ConfigError(`ASH_EGRESS_TEST_HOSTS must be name=address pairs, got "${item.trim()}"`);
    hosts[match[1]!.toLowerCase()] = match[2]!;
  }
  return hosts;
}

/**
 * ASH_SANDBOX_ALLOW_UNISOLATED (default false). The retired ASH_SANDBOX_STRICT
 * is still read: its `true` is now the default; `false` no longer turns
 * isolation off (that takes the new, explicit name).
 */
function allowUnisolated(env: Env): boolean {
  const allow = boolean(env, "ASH_SANDBOX_ALLOW_UNISOLATED", false);
  const strict = boolean(env, "ASH_SANDBOX_STRICT", true);
  if (allow && text(env, "ASH_SANDBOX_STRICT") !== undefined && strict) {
    throw new ConfigError("ASH_SANDBOX_STRICT=true contradicts ASH_SANDBOX_ALLOW_UNISOLATED=true; unset ASH_SANDBOX_STRICT (isolation is required unless unisolated sandboxes are allowed)");
  }
  return allow;
}

/** ASH_WARM_POOL: `agent=N` pairs separated by commas, e.g. `support=2,triage=1`. */
function warmPoolConfig(env: Env): Record<string, number> {
  const raw = text(env, "ASH_WARM_POOL");
  const pool: Record<string, number> = {};
  if (raw === undefined) return pool;
  for (const item of raw.split(",")) {
    const match = /^\s*([^=\s]+)\s*=\s*(\d+)\s*$/.exec(item);
    if (!match) throw new ConfigError(`ASH_WARM_POOL must be a comma-separated list of agent=count, got "${item.trim()}"`);
    const [, name, count] = match;
    if (!AGENT_NAME.test(name!)) throw new ConfigError(`ASH_WARM_POOL names "${name}", which is not an agent name (${AGENT_NAME_RULE})`);
    if (Object.hasOwn(pool, name!)) throw new ConfigError(`ASH_WARM_POOL names agent "${name}" twice`);
    const n = Number(count);
    if (n < 1 || n > 100) throw new ConfigError(`ASH_WARM_POOL count for "${name}" must be between 1 and 100, got ${n}`);
    pool[name!] = n;
  }
  return pool;
}

/** ASH_SNAPSHOT_STORE: unset or `fs`, or `s3://<bucket>[/<prefix>]` with the S3 settings beside it. */
function snapshotConfig(env: Env): SnapshotConfig {
  const store = text(env, "ASH_SNAPSHOT_STORE");
  if (!store || store === "fs") return { kind: "fs" };
  const match = S3_STORE_URL.exec(store);
  if (!match) throw new ConfigError('ASH_SNAPSHOT_STORE must be "fs" or s3://<bucket>[/<prefix>]');
  const region = text(env, "ASH_S3_REGION") ?? text(env, "AWS_REGION") ?? "us-east-1";
  const endpoint = text(env, "ASH_S3_ENDPOINT") ?? `https://s3.${region}.amazonaws.com`;
  if (!isHttpUrl(endpoint)) throw new ConfigError("ASH_S3_ENDPOINT must be an http:// or https:// URL");
  const accessKeyId = text(env, "AWS_ACCESS_KEY_ID");
  const secretAccessKey = text(env, "AWS_SECRET_ACCESS_KEY");
  if (!accessKeyId) throw new ConfigError("AWS_ACCESS_KEY_ID is required when ASH_SNAPSHOT_STORE is an s3:// bucket");
  if (!secretAccessKey) throw new ConfigError("AWS_SECRET_ACCESS_KEY is required when ASH_SNAPSHOT_STORE is an s3:// bucket");
  return { kind: "s3", bucket: match[1]!, prefix: (match[2] ?? "sessions").replace(/\/+$/, "") || "sessions", endpoint, region, accessKeyId, secretAccessKey };
}

/** ASH_AGENT_ROOTS: absolute folders, separated by ":" (like PATH) or ",". */
function agentRootsConfig(env: Env): string[] {
  const raw = text(env, "ASH_AGENT_ROOTS");
  if (!raw) return [];
  const roots: string[] = [];
  for (const item of raw.split(/[:,]/)) {
    const root = item.trim();
    if (!root) continue;
    if (!root.startsWith("/")) throw new ConfigError(`ASH_AGENT_ROOTS must list absolute folders; "${root}" is not one`);
    if (resolve(root) === "/") throw new ConfigError("ASH_AGENT_ROOTS must not list / (the whole file system)");
    roots.push(resolve(root));
  }
  return roots;
}
