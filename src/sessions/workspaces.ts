import { randomUUID } from "node:crypto";
import type { ConsolaInstance } from "consola";
import type { AshDatabase, Queryable } from "../db/types";
import { getSession, updateSession, type SessionRecord } from "../db/queries/sessions";
import { headCheckpoint, insertCheckpoint, nextCheckpointNumber, pruneCheckpoints, sessionsToPrune, type CheckpointRecord } from "../db/queries/checkpoints";
import {
  beginSave,
  commitVersion,
  endSave,
  heartbeatSave,
  oldestRunningSave,
  forgetObjects,
  forgetUnusedVersions,
  markGarbage,
  ObjectCollectedError,
  touchObjects,
  versionObjects,
} from "../db/queries/workspace-objects";
import { conflict, unavailable } from "../errors";
import type { SandboxHandle, SavedVersion, SnapshotFile, WorkspaceStore } from "./types";
import type { Readable } from "node:stream";

export interface RetentionSettings {
  /** Checkpoints kept per session (the newest; the newest one is always kept). */
  keep: number;
  /** Checkpoints older than this go (except a session's newest). */
  maxAgeMs: number;
  /** How often the collector runs. */
  gcIntervalMs: number;
  /** Objects written or touched more recently than this are never collected (a save may still be using them). */
  gcGraceMs: number;
}

/** What a turn's save records besides the version: where the conversation stands. */
export interface CheckpointInput {
  sdkSessionId: string | null;
  transcriptUuid: string | null;
  transcriptIdx: number | null;
  messageSeq: number;
  eventSeq: number;
  prompt: string | null;
}

const SAVE_ATTEMPTS = 3;
const GC_BATCH = 1000;
/** A running save refreshes its row this often; one silent for SAVE_STALE_MS died with its server. */
const SAVE_HEARTBEAT_MS = 10_000;
const SAVE_STALE_MS = 120_000;

/**
 * A session's files over time: saves into the shared version store, the
 * catalog rows that say which session and checkpoint needs which version and
 * object, retention of checkpoints, and the garbage collector.
 *
 * The session's `workspace_version` and its checkpoints always change in the
 * same transaction that records (and touches) the version's objects, and the
 * collector only removes objects no version row needs and nobody touched
 * within the grace period: a save, fork or rewind on any server either
 * commits its reference first or is refused, never left pointing at nothing.
 */
export class Workspaces {
  private timer?: NodeJS.Timeout;
  private collecting?: Promise<void>;

  constructor(
    private readonly o: { db: AshDatabase; store: WorkspaceStore; retention: RetentionSettings; log: ConsolaInstance },
  ) {}

  /** Saves the live workspace; with `checkpoint`, records it as the session's next checkpoint. */
  async save(sessionId: string, sandbox: SandboxHandle, checkpoint?: CheckpointInput): Promise<{ version: SavedVersion; checkpoint?: CheckpointRecord }> {
    const { db } = this.o;
    const lease = randomUUID();
    await beginSave(db, lease, Date.now());
    const heartbeat = setInterval(() => void heartbeatSave(db, lease, Date.now()).catch(() => undefined), SAVE_HEARTBEAT_MS);
    heartbeat.unref();
    try {
      return await this.saveNow(sessionId, sandbox, checkpoint);
    } finally {
      clearInterval(heartbeat);
      await endSave(db, lease).catch((error) => this.o.log.warn(`session ${sessionId}: clearing its save lease failed:`, error));
    }
  }

  private async saveNow(sessionId: string, sandbox: SandboxHandle, checkpoint?: CheckpointInput): Promise<{ version: SavedVersion; checkpoint?: CheckpointRecord }> {
    const { db, store } = this.o;
    for (let attempt = 1; ; attempt++) {
      const base = (await getSession(db, sessionId))?.workspaceVersion ?? null;
      try {
        const version = await store.save(sandbox, { base, onWrite: (keys) => touchObjects(db, keys, Date.now()) });
        const recorded = await db.transaction(async (tx) => {
          await commitVersion(tx, version.id, version.objects);
          await updateSession(tx, sessionId, { workspaceVersion: version.id });
          return checkpoint ? await this.addCheckpoint(tx, sessionId, version, checkpoint) : undefined;
        });
        // A snapshot from before versions is replaced by this one.
        if (!base) await store.legacy.delete(sessionId).catch((error) => this.o.log.warn(`session ${sessionId}: removing its old-format snapshot failed:`, error));
        return { version, checkpoint: recorded };
      } catch (error) {
        // The collector was removing an object with the same content at that moment; it is gone in a moment.
        if (!(error instanceof ObjectCollectedError) || attempt >= SAVE_ATTEMPTS) throw error;
        await new Promise((resolve) => setTimeout(resolve, 100 * attempt));
      }
    }
  }

  private async addCheckpoint(tx: Queryable, sessionId: string, version: SavedVersion, input: CheckpointInput): Promise<CheckpointRecord> {
    const parent = await headCheckpoint(tx, sessionId);
    const record: CheckpointRecord = {
      sessionId,
      number: await nextCheckpointNumber(tx, sessionId),
      turn: (parent?.turn ?? 0) + 1,
      parent: parent?.number ?? null,
      version: version.id,
      ...input,
      fileCount: version.fileCount,
      bytes: version.bytes,
      filesChanged: version.changedFiles,
      bytesChanged: version.changedBytes,
      rewoundAt: null,
      createdAt: Date.now(),
    };
    await insertCheckpoint(tx, record);
    return record;
  }

  /**
   * Files saved after the session's last checkpoint (an exec, an upload, then
   * a pause) are recorded as a checkpoint of their own, on the same turn, so a
   * rewind that moves away from them leaves them listed (and forkable).
   * Called with the session asleep; `stats` comes from `statsOfSaved` first.
   */
  async checkpointSaved(tx: Queryable, sessionId: string, stats: { version: string; fileCount: number; bytes: number } | null): Promise<void> {
    const session = await getSession(tx, sessionId);
    const head = await headCheckpoint(tx, sessionId);
    if (!stats || !head || session?.workspaceVersion !== stats.version || head.version === stats.version) return;
    await insertCheckpoint(tx, {
      ...head,
      number: await nextCheckpointNumber(tx, sessionId),
      parent: head.number,
      version: stats.version,
      fileCount: stats.fileCount,
      bytes: stats.bytes,
      filesChanged: 0,
      bytesChanged: 0,
      prompt: null,
      rewoundAt: null,
      createdAt: Date.now(),
    });
  }

  /** The session's saved version with its size, when it differs from its last checkpoint's. */
  async statsOfSaved(sessionId: string): Promise<{ version: string; fileCount: number; bytes: number } | null> {
    const version = (await getSession(this.o.db, sessionId))?.workspaceVersion;
    const head = await headCheckpoint(this.o.db, sessionId);
    if (!version || !head || head.version === version) return null;
    const files = await this.o.store.list(version);
    return { version, fileCount: files.length, bytes: files.reduce((sum, f) => sum + f.size, 0) };
  }

  /**
   * Makes `version` (a checkpoint's) what a session's files are, in `tx`:
   * refused when the collector already took any of it.
   */
  async adopt(tx: Queryable, sessionId: string, version: string): Promise<void> {
    const objects = await versionObjects(tx, version);
    if (objects.length === 0) throw conflict("That checkpoint's files are no longer stored.");
    try {
      await commitVersion(tx, version, objects);
    } catch (error) {
      if (error instanceof ObjectCollectedError) throw conflict("That checkpoint's files are no longer stored.");
      throw error;
    }
    await updateSession(tx, sessionId, { workspaceVersion: version });
  }

  /** True when there is something to restore. */
  async has(session: SessionRecord): Promise<boolean> {
    return session.workspaceVersion !== null || (await this.o.store.legacy.has(session.id));
  }

  /** Puts the session's saved files into the sandbox's empty workspace; false when it has none. */
  async restore(session: SessionRecord, sandbox: SandboxHandle): Promise<boolean> {
    if (session.workspaceVersion) {
      try {
        await this.o.store.restore(session.workspaceVersion, sandbox);
      } catch (error) {
        // Saved by a server whose snapshot store this one does not share (or damaged): say so, never start without the files.
        if (error instanceof Error && error.name === "SnapshotCorruptError") {
          throw unavailable(
            `This session's files cannot be read from this server's snapshot store (${error.message}). Servers that share a database must share one snapshot store (ASH_SNAPSHOT_STORE).`,
            30,
          );
        }
        throw error;
      }
      return true;
    }
    return this.o.store.legacy.restore(session.id, sandbox);
  }

  async list(sessionId: string): Promise<SnapshotFile[] | null> {
    const version = (await getSession(this.o.db, sessionId))?.workspaceVersion;
    return version ? this.o.store.list(version) : this.o.store.legacy.list(sessionId);
  }

  async read(sessionId: string, path: string): Promise<Buffer | null> {
    const version = (await getSession(this.o.db, sessionId))?.workspaceVersion;
    return version ? this.o.store.read(version, path) : this.o.store.legacy.read(sessionId, path);
  }

  async archive(sessionId: string): Promise<Readable | null> {
    const version = (await getSession(this.o.db, sessionId))?.workspaceVersion;
    return version ? this.o.store.archive(version) : this.o.store.legacy.archive(sessionId);
  }

  /** Starts the periodic collector. */
  start(): void {
    this.timer = setInterval(() => void this.collect().catch((error) => this.o.log.error("snapshot garbage collection failed:", error)), this.o.retention.gcIntervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.collecting?.catch(() => undefined);
  }

  /**
   * One collection: drops checkpoints past retention, forgets versions nobody
   * uses, then removes objects no version needs (marked first, removed from
   * the store, then forgotten; a crash in between is finished next time).
   * One at a time per server; several servers may collect at once.
   */
  collect(): Promise<void> {
    this.collecting ??= this.collectNow().finally(() => (this.collecting = undefined));
    return this.collecting;
  }

  private async collectNow(): Promise<void> {
    const { db, store, retention, log } = this.o;
    const now = Date.now();
    let pruned = 0;
    for (const sessionId of await sessionsToPrune(db, retention.keep, now - retention.maxAgeMs, 500)) {
      pruned += await db.transaction((tx) => pruneCheckpoints(tx, sessionId, retention.keep, now - retention.maxAgeMs));
    }
    await db.transaction((tx) => forgetUnusedVersions(tx));
    let removed = 0;
    for (;;) {
      // Nothing touched since the oldest running save began (on any server) is collected.
      const running = await oldestRunningSave(db, Date.now() - SAVE_STALE_MS);
      const before = Math.min(Date.now() - retention.gcGraceMs, running ?? Number.POSITIVE_INFINITY);
      const keys = await db.transaction((tx) => markGarbage(tx, before, Date.now(), GC_BATCH));
      if (keys.length === 0) break;
      await store.removeObjects(keys);
      await forgetObjects(db, keys);
      removed += keys.length;
      if (keys.length < GC_BATCH) break;
    }
    if (pruned || removed) log.info(`snapshots: ${pruned} checkpoint(s) past retention dropped, ${removed} unused object(s) removed`);
  }
}
