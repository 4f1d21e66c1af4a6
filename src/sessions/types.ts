import type { Readable } from "node:stream";
import type { SpawnedProcess, SpawnOptions } from "@anthropic-ai/claude-agent-sdk";
import type { SandboxNetwork, SandboxService } from "../sandbox/egress-net";
import type { WorkspaceIo } from "../sandbox/workspace-io";
import type { LimitReason } from "../contract";

export interface SandboxNetworkOptions {
  services: SandboxService[];
  /** Variables every process in the sandbox gets, from where the services are reached. */
  env: (addresses: SandboxNetwork["addresses"]) => Record<string, string>;
}

/** Which limit stopped a process of the sandbox. */
export type LimitKillReason = LimitReason;

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
  /** Reads and writes the workspace as the sandbox's own user: the server never opens paths in it. */
  readonly io: WorkspaceIo;
  /** Adds a line to logs(). */
  note(line: string): void;
  destroy(): Promise<void>;
}

export interface SandboxFactory {
  /**
   * Makes a sandbox whose folders `populate` has filled first (the agent's
   * files, transcripts) before any process of it ran; the files then go to
   * the sandbox user. A snapshot is restored afterwards, through `io`.
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
  /** At shutdown, after every sandbox is gone: removes what this server made for all of them (its cgroup folders). */
  close(): Promise<void>;
}

export interface SnapshotFile {
  path: string;
  size: number;
  mode?: number;
}

/** Workspace snapshots, kept outside the sandbox (src/sandbox/snapshot). */
export interface SnapshotStore {
  /**
   * Saves the live workspace (read through the sandbox's io); resolves with
   * the snapshot's size in bytes. Refuses a workspace over the disk limit
   * (the previous snapshot is kept).
   */
  save(sessionId: string, sandbox: SandboxHandle, metadata: Record<string, unknown>): Promise<{ bytes: number }>;
  /** True when the session has a snapshot to restore. */
  has(sessionId: string): Promise<boolean>;
  /** Restores into the sandbox's (empty) workspace through its io; false when there is no snapshot. */
  restore(sessionId: string, sandbox: SandboxHandle): Promise<boolean>;
  copy(fromSessionId: string, toSessionId: string): Promise<boolean>;
  list(sessionId: string): Promise<SnapshotFile[] | null>;
  read(sessionId: string, path: string): Promise<Buffer | null>;
  /** The snapshot as a tar archive, or null when there is none. */
  archive(sessionId: string): Promise<Readable | null>;
}
