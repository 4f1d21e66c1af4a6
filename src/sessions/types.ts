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
  spawnClaudeCode(options: SpawnOptions, how?: { nice?: number }): SpawnedProcess;
  /** Sets the niceness of the sandbox's running processes (a claimed warm spare: back to that of turns). */
  renice?(nice: number): void;
  /** Stops its network bridges while no agent process runs (idle); resumeNetwork before the next spawn. */
  suspendNetwork?(): Promise<void>;
  resumeNetwork?(): Promise<void>;
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

/** An immutable saved state of a workspace in the shared store (src/sandbox/snapshot). */
export interface SavedVersion {
  id: string;
  fileCount: number;
  bytes: number;
  /** Against the version the save started from (everything, without one). */
  changedFiles: number;
  changedBytes: number;
  /** Every stored object the version needs, for the garbage collector. */
  objects: string[];
  /** False when only entries changed since the sandbox folder's last save were listed. */
  walked: boolean;
}

/**
 * Workspace versions, kept outside the sandbox. Reading and writing a live
 * workspace goes through the sandbox's io (its own user); versions are
 * immutable and shared by checkpoints and forks.
 */
export interface WorkspaceStore {
  /**
   * Saves the live workspace, re-reading only what changed since `base`.
   * `onWrite` hears of objects before they are written. Refuses a workspace
   * over the disk limit.
   */
  save(sandbox: SandboxHandle, options: { base: string | null; onWrite: (keys: string[]) => Promise<void> }): Promise<SavedVersion>;
  /** Extracts a version into the sandbox's (empty) workspace. */
  restore(version: string, sandbox: SandboxHandle): Promise<void>;
  /** True when the live workspace is exactly the version (types, sizes, mtimes, modes, links). */
  verify(version: string, sandbox: SandboxHandle): Promise<boolean>;
  list(version: string): Promise<SnapshotFile[]>;
  read(version: string, path: string): Promise<Buffer | null>;
  archive(version: string): Promise<Readable>;
  removeObjects(keys: string[]): Promise<void>;
  /** Snapshots made before versions, one per session under its own folder: still restored and read. */
  legacy: {
    has(sessionId: string): Promise<boolean>;
    restore(sessionId: string, sandbox: SandboxHandle): Promise<boolean>;
    list(sessionId: string): Promise<SnapshotFile[] | null>;
    read(sessionId: string, path: string): Promise<Buffer | null>;
    archive(sessionId: string): Promise<Readable | null>;
    delete(sessionId: string): Promise<boolean>;
  };
}
