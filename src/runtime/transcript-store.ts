import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { SessionStore } from "@anthropic-ai/claude-agent-sdk";
import type { AshDatabase } from "../db/types";
import { appendTranscript, lastTranscriptIdx, loadTranscript, transcriptPosition } from "../db/queries/transcripts";

/** The CLI's project folder name inside CLAUDE_CONFIG_DIR/projects (fixed, so restores know where to write). */
export const PROJECT_DIR_NAME = "ash-session";

/**
 * The Agent SDK's SessionStore hook, backed by our database and scoped to one
 * Ash session: every transcript line the CLI writes is mirrored here, so a
 * session's memory survives eviction, restarts and moving to another server.
 *
 * `load` answers null on purpose. The SDK would otherwise write the transcript
 * to the server's own temp folder, which a sandboxed CLI can neither see nor
 * read; `materializeTranscript` writes it into the sandbox's config folder
 * before the CLI starts instead.
 */
export function createTranscriptStore(db: AshDatabase, sessionId: string): SessionStore {
  return {
    async append(key, entries) {
      await appendTranscript(db, { sessionId, sdkSessionId: key.sessionId, subpath: key.subpath ?? "" }, entries);
    },
    async load() {
      return null;
    },
  };
}

/** A transcript store made before its session exists: a warm spare's, bound when a session claims it. */
export interface BindableTranscriptStore extends SessionStore {
  /** Gives the store its session; lines the CLI wrote before (if any) are stored under it now. */
  bind(sessionId: string): Promise<void>;
}

export function createBindableTranscriptStore(db: AshDatabase): BindableTranscriptStore {
  let bound: SessionStore | undefined;
  // Held until bound, so no line is ever stored under no session or the wrong one.
  const early: Array<Parameters<SessionStore["append"]>> = [];
  return {
    async append(key, entries) {
      if (bound) await bound.append(key, entries);
      else early.push([key, entries]);
    },
    async load() {
      return null;
    },
    async bind(sessionId) {
      if (bound) throw new Error("this transcript store already belongs to a session");
      const store = createTranscriptStore(db, sessionId);
      for (const [key, entries] of early.splice(0)) await store.append(key, entries);
      bound = store;
    },
  };
}

/**
 * Whether any line of a conversation is stored. An agent stopped just after it named its conversation
 * may have stored none: resuming that id fails every turn ("No conversation found"), so it is not resumed.
 */
export async function hasTranscript(db: AshDatabase, sessionId: string, sdkSessionId: string): Promise<boolean> {
  return (await lastTranscriptIdx(db, { sessionId, sdkSessionId, subpath: "" })) >= 0;
}

/** Writes a stored transcript where a CLI with CLAUDE_CONFIG_DIR=`configDir` finds it for `resume`. */
export async function materializeTranscript(
  db: AshDatabase,
  sessionId: string,
  sdkSessionId: string,
  configDir: string,
  /** A rewind or a fork at a checkpoint: the conversation as it stood then (its last line, or the line holding `uuid`). */
  at?: { uuid: string | null; idx: number | null },
): Promise<boolean> {
  const key = { sessionId, sdkSessionId, subpath: "" };
  const upTo = at ? await transcriptPosition(db, key, at.uuid, at.idx) : undefined;
  const entries = await loadTranscript(db, key, upTo);
  if (!entries) return false;
  const dir = join(configDir, "projects", PROJECT_DIR_NAME);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, `${sdkSessionId}.jsonl`), entries.map((e) => JSON.stringify(e)).join("\n") + "\n", { mode: 0o600 });
  return true;
}
