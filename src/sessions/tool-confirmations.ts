import { conflict, notFound } from "../errors";
import type { ToolConfirmationRequest, ToolDecision } from "../runtime/agent-session";

interface Pending {
  request: ToolConfirmationRequest;
  resolve: (decision: ToolDecision) => void;
}

/** How many decided tool uses a session remembers, so a second answer is a conflict and not "unknown". */
const REMEMBERED = 200;

/**
 * Tool uses held by a confirmation policy, per session, until someone allows
 * or denies them (or the turn ends: its process closing aborts the wait).
 * Each is answered once; a later answer changes nothing.
 */
export class ToolConfirmations {
  private readonly pending = new Map<string, Map<string, Pending>>();
  private readonly decided = new Map<string, string[]>();

  /** Registers a held tool use; resolves with its decision, or a denial once `signal` aborts. */
  ask(sessionId: string, request: ToolConfirmationRequest, signal: AbortSignal): Promise<ToolDecision> {
    return new Promise<ToolDecision>((resolve) => {
      const ofSession = this.pending.get(sessionId) ?? new Map<string, Pending>();
      this.pending.set(sessionId, ofSession);
      const settle = (decision: ToolDecision) => {
        if (ofSession.get(request.toolUseId)?.resolve !== settle) return;
        ofSession.delete(request.toolUseId);
        if (ofSession.size === 0 && this.pending.get(sessionId) === ofSession) this.pending.delete(sessionId);
        this.remember(sessionId, request.toolUseId);
        signal.removeEventListener("abort", aborted);
        resolve(decision);
      };
      const aborted = () => settle({ allow: false, message: "The turn ended before this tool use was confirmed." });
      ofSession.set(request.toolUseId, { request, resolve: settle });
      if (signal.aborted) aborted();
      else signal.addEventListener("abort", aborted, { once: true });
    });
  }

  /** The tool uses of a session waiting for a decision, oldest first. */
  waiting(sessionId: string): ToolConfirmationRequest[] {
    return [...(this.pending.get(sessionId)?.values() ?? [])].map((p) => p.request);
  }

  /** Answers one held tool use; not found when none such waits, conflict when it was answered already. */
  decide(sessionId: string, toolUseId: string, decision: ToolDecision): ToolConfirmationRequest {
    const pending = this.pending.get(sessionId)?.get(toolUseId);
    if (!pending) {
      if (this.decided.get(sessionId)?.includes(toolUseId)) throw conflict(`Tool use ${toolUseId} was already decided (or its turn ended); a decision counts once.`);
      const open = this.waiting(sessionId).map((r) => r.toolUseId);
      throw notFound(`No tool use "${toolUseId}" is waiting for confirmation on this session.${open.length ? ` Waiting: ${open.join(", ")}.` : " None is waiting."}`);
    }
    pending.resolve(decision);
    return pending.request;
  }

  /** Denies every held tool use of a session (interrupt, stop, end, shutdown); how many there were. */
  cancel(sessionId: string, message: string): number {
    const ofSession = this.pending.get(sessionId);
    if (!ofSession) return 0;
    const all = [...ofSession.values()];
    for (const p of all) p.resolve({ allow: false, message, interrupt: true });
    return all.length;
  }

  /** Every session with a held tool use. */
  sessions(): string[] {
    return [...this.pending.keys()];
  }

  /** The session is gone for good: nothing of it is kept. */
  forget(sessionId: string): void {
    this.cancel(sessionId, "The session has ended.");
    this.decided.delete(sessionId);
  }

  private remember(sessionId: string, toolUseId: string): void {
    const list = this.decided.get(sessionId) ?? [];
    list.push(toolUseId);
    if (list.length > REMEMBERED) list.splice(0, list.length - REMEMBERED);
    this.decided.set(sessionId, list);
  }
}
