import type { ConsolaInstance } from "consola";
import type { ServerConfig } from "../config";
import type { AshDatabase } from "../db/types";
import type { SessionManager } from "../sessions/session-manager";
import type { QueueWorker } from "../queue/worker";
import type { Evals } from "../evals/evals";
import type { SandboxFactory } from "../sessions/types";
import type { Keys } from "./auth";
import type { UsageLimiter } from "./limits";
import type { Vault } from "../vault/vault";
import type { Observability } from "../observability";
import type { Drain } from "./drain";

/** What every route handler can reach. */
export interface AppContext {
  config: ServerConfig;
  db: AshDatabase;
  keys: Keys;
  /** Per-key and per-tenant limits on live sessions, running turns and tokens a day. */
  limits: UsageLimiter;
  /** Seals and opens stored credentials; undefined without ASH_CREDENTIAL_KEY. */
  vault?: Vault;
  sessions: SessionManager;
  /** Runs queued prompts on this server. */
  queue: QueueWorker;
  /** Evaluation runs started on this server. */
  evals: Evals;
  sandboxes: SandboxFactory;
  log: ConsolaInstance;
  version: string;
  startedAt: number;
  observability: Observability;
  /** Set once the server is shutting down: it starts nothing new and reports not ready. */
  drain: Drain;
}
