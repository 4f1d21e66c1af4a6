import type { SessionManager } from "../sessions/session-manager";

/** How one turn ended: the final text of its `turn_complete`, and its first `error`, if any. */
export interface TurnResult {
  text: string | null;
  error: { message: string; code: string } | null;
}

/**
 * Sends `content` to a session and follows its event log until the turn's `done`,
 * the same log a client's event stream reads.
 */
export async function runTurnToEnd(sessions: SessionManager, sessionId: string, content: string): Promise<TurnResult> {
  const { log, after } = await sessions.sendMessage(sessionId, { content, includePartialMessages: false });
  const detach = log.attach();
  let seq = after;
  let text: string | null = null;
  let error: TurnResult["error"] = null;
  try {
    for (;;) {
      const events = await log.read(seq);
      for (const event of events) {
        seq = event.seq;
        const data = (event.data ?? {}) as Record<string, unknown>;
        if (event.type === "turn_complete") text = typeof data.result === "string" ? data.result : null;
        if (event.type === "error" && !error) error = { message: String(data.error ?? "The turn failed."), code: String(data.code ?? "error") };
        if (event.type === "done") return { text, error };
      }
      if (events.length > 0) continue;
      if (log.broken) throw new Error("The session's events could not be stored.");
      if (log.isClosed) return { text, error: error ?? { message: "The session ended before the turn did.", code: "server_shutdown" } };
      await log.waitForMore(seq, 5000);
    }
  } finally {
    detach();
  }
}
