import type { SessionStore } from "@anthropic-ai/claude-agent-sdk";
import type { AshDatabase } from "../db/types";
import { appendTranscript, listTranscriptSubpaths, loadTranscript } from "../db/queries/transcripts";

/**
 * The Agent SDK's SessionStore hook, backed by our database and scoped to one
 * Ash session. The SDK's projectKey (derived from the working directory) is
 * ignored: a session's sandbox directory changes every time it is restored.
 */
export function createTranscriptStore(db: AshDatabase, sessionId: string): SessionStore {
  return {
    async append(key, entries) {
      await appendTranscript(db, { sessionId, sdkSessionId: key.sessionId, subpath: key.subpath ?? "" }, entries);
    },
    async load(key) {
      return loadTranscript(db, { sessionId, sdkSessionId: key.sessionId, subpath: key.subpath ?? "" }) as any;
    },
    async listSubkeys(key) {
      return listTranscriptSubpaths(db, sessionId, key.sessionId);
    },
  };
}
