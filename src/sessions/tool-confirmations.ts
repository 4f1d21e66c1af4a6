import { conflict, notFound } from "../errors";
import type { ToolConfirmationRequest, ToolDecision } from "../runtime/agent-session";

/** A held tool use; `finish` answers it (once). */
export interface HeldTool {
  request: ToolConfirmationRequest;
  finish: (decision: ToolDecision) => void;
}

/** How many decided tool uses a session remembers, so a second answer is a conflict and not "unknown". */
const REMEMBERED = 200;

/**
 * Tool uses held by a confirmation policy, per session, until someone allows
 * or denies them (or the turn ends: its process closing aborts the wait).
 * Each is answered once; a later answer changes nothing.
 */
export class ToolConfirmations {
  private readonly pending = new Map<string, Map<string, HeldTool>>();
  private readonly decided = new Map<string, string[]>();

  /** Registers a held tool use; resolves with its decision, or a denial once `signal` aborts. */
  ask(sessionId: string, request: ToolConfirmationRequest, signal: AbortSignal): Promise<ToolDecision> {
    return new Promise<ToolDecision>((resolve) => {
      let finished = false;
      const held: HeldTool = {
        request,
        finish: (decision) => {
          if (finished) return;
          finished = true;
          signal.removeEventListener("abort", aborted);
          resolve(decision);
        },
      };
      const aborted = () => {
        this.remove(sessionId, held);
        held.finish({ allow: false, message: "The turn ended before this tool use was confirmed." });
      };
      const ofSession = this.pending.get(sessionId) ?? new Map<string, HeldTool>();
      this.pending.set(sessionId, ofSession);
      ofSession.set(request.toolUseId, held);
      if (signal.aborted) aborted();
      else signal.addEventListener("abort", aborted, { once: true });
    });
  }

  /** The tool uses of a session waiting for a decision, oldest first. */
  waiting(sessionId: string): ToolConfirmationRequest[] {
    return [...(this.pending.get(sessionId)?.values() ?? [])].map((p) => p.request);
  }

  /**
   * Takes one held tool use out of waiting, to be answered with its `finish`:
   * a second answer finds it decided (conflict). Not found when none such waits.
   */
  take(sessionId: string, toolUseId: string): HeldTool {
    const held = this.pending.get(sessionId)?.get(toolUseId);
    if (!held) {
      if (this.decided.get(sessionId)?.includes(toolUseId)) throw conflict(`Tool use ${toolUseId} was already decided (or its turn ended); a decision counts once.`);
      const open = this.waiting(sessionId).map((r) => r.toolUseId);
      throw notFound(`No tool use "${toolUseId}" is waiting for confirmation on this session.${open.length ? ` Waiting: ${open.join(", ")}.` : " None is waiting."}`);
    }
    this.remove(sessionId, held);
    return held;
  }

  /** Denies every held tool use of a session (interrupt, stop, end, shutdown); how many there were. */
  cancel(sessionId: string, message: string): number {
    const ofSession = this.pending.get(sessionId);
    if (!ofSession) return 0;
    const all = [...ofSession.values()];
    for (const held of all) {
      this.remove(sessionId, held);
      held.finish({ allow: false, message, interrupt: true });
    }
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

  private remove(sessionId: string, held: HeldTool): void {
    const ofSession = this.pending.get(sessionId);
    if (ofSession?.get(held.request.toolUseId) !== held) return;
    ofSession.delete(held.request.toolUseId);
    if (ofSession.size === 0) this.pending.delete(sessionId);
    this.remember(sessionId, held.request.toolUseId);
  }

  private remember(sessionId: string, toolUseId: string): void {
    const list = this.decided.get(sessionId) ?? [];
    list.push(toolUseId);
    if (list.length > REMEMBERED) list.splice(0, list.length - REMEMBERED);
    this.decided.set(sessionId, list);
  }
}
