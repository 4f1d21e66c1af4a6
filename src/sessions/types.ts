import type { SpawnedProcess, SpawnOptions } from "@anthropic-ai/claude-agent-sdk";
import type { SandboxNetwork, SandboxService } from "../sandbox/egress-net";

export interface SandboxNetworkOptions {
  services: SandboxService[];
  /** Variables every process in the sandbox gets, from where the services are reached. */
  env: (addresses: SandboxNetwork["addresses"]) => Record<string, string>;
}

export type LimitKillReason = "sandbox_oom" | "sandbox_pids" | "sandbox_disk";

/** A running sandbox as the session layer uses it (made by src/sandbox). */
export interface SandboxHandle {
  readonly id: string;
  readonly workspaceDir: string;
  readonly homeDir: string;
  spawnClaudeCode(options: SpawnOptions): SpawnedProcess;
  exec(command: string, options: { timeoutMs: number }): Promise<{ exitCode: number; stdout: string; stderr: string; timedOut?: boolean; limit?: LimitKillReason | null }>;
  logs(): string[];
  /** Running totals of limit hits (memory, processes, disk), for telling what a turn ran into. */
  limitCounters(): { oomKills: number; pidsMaxHits: number; diskKills: number };
  destroy(): Promise<void>;
}

export interface SandboxFactory {
  /**
   * Makes a sandbox whose workspace `populate` has filled first (from a
   * snapshot or the agent's files), so the files belong to the sandbox user.
   */
  create(options: {
    id: string;
    sessionId: string;
    env: Record<string, string>;
    populate: (workspaceDir: string) => Promise<void>;
    /** The model gateway and egress proxies, bridged into the sandbox's own network namespace. */
    network?: SandboxNetworkOptions;
  }): Promise<SandboxHandle>;
  /** What /health reports. */
  describe(): { isolation: { mode: string; seccomp: boolean; unisolatedAllowed: boolean }; limits: Record<string, unknown> };
  /**
   * At start-up, before any sandbox of this run exists: removes what earlier
   * runs left (every sandbox folder; the resource groups of `ids`). Says how
   * many folders went.
   */
  removeLeftovers(ids: string[]): Promise<number>;
}

export interface SnapshotFile {
  path: string;
  size: number;
  mode?: number;
}

/** Workspace snapshots, kept outside the sandbox (src/sandbox/snapshot). */
export interface SnapshotStore {
  /** Resolves with the snapshot's size in bytes. */
  save(sessionId: string, workspaceDir: string, metadata: Record<string, unknown>): Promise<{ bytes: number }>;
  restore(sessionId: string, targetDir: string): Promise<boolean>;
  copy(fromSessionId: string, toSessionId: string): Promise<boolean>;
  list(sessionId: string): Promise<SnapshotFile[] | null>;
  read(sessionId: string, path: string): Promise<Buffer | null>;
}
