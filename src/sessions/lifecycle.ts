import type { ConsolaInstance } from "consola";
import type { AshDatabase } from "../db/types";
import { updateSession } from "../db/queries/sessions";
import { conflict } from "../errors";
import type { Observability } from "../observability";
import type { SessionStatus } from "../contract";
import type { LiveSessions, SandboxEnd } from "./live-sessions";
import type { SessionTurns } from "./session-state";
import type { RunningTurn } from "./turn-runner";

/** A session's move to sleep or to its end, and why. */
export type Transition =
  | { to: "paused" }
  | { to: "stopped" }
  | { to: "ended" }
  /** Put to sleep so its files and conversation can be moved back; the rewind writes the rest of the session row itself. */
  | { to: "rewinding" }
  | { to: "evicted"; reason: "idle" | "capacity" }
  /** Its agent process died during a turn; the session stays usable ("active") unless a limit killed it. */
  | { to: "exited"; status: Extract<SessionStatus, "active" | "error"> };

/** What each move does: end the turn first, how the sandbox goes, what the session row and telemetry say. */
interface Plan {
  killTurn: boolean;
  /** Waits for a start or a claimed message under way (asked for by a user; eviction and a dead process never meet one). */
  settle: boolean;
  sandbox: SandboxEnd;
  reason: string;
  /** Answered without waiting for the teardown (ending: the save and the teardown go on in the background). */
  background: boolean;
  /** A failed teardown is not thrown (a dead process: the turn that saw it goes on to its end). */
  tolerant: boolean;
  /** A failed row update is not thrown (eviction, a dead process: the sandbox is gone either way). */
  tolerantUpdate: boolean;
  update: Parameters<typeof updateSession>[2];
  event?: "session_paused" | "session_stopped" | "session_ended" | "session_evicted";
}

function planOf(t: Transition): Plan {
  switch (t.to) {
    case "paused":
      return { killTurn: false, settle: true, sandbox: "paused", reason: "paused", background: false, tolerant: false, tolerantUpdate: false, update: { status: "paused", sandboxId: null, touch: true }, event: "session_paused" };
    case "stopped":
      return { killTurn: true, settle: true, sandbox: "stopped", reason: "stopped", background: false, tolerant: false, tolerantUpdate: false, update: { status: "stopped", sandboxId: null, touch: true }, event: "session_stopped" };
    case "ended":
      return { killTurn: true, settle: true, sandbox: "ended", reason: "ended", background: true, tolerant: false, tolerantUpdate: false, update: { status: "ended", sandboxId: null, touch: true }, event: "session_ended" };
    case "rewinding":
      // The row's sandbox goes at once (the rewind's transaction writes the rest), so a rewind that fails later leaves no stale sandbox id.
      return { killTurn: false, settle: true, sandbox: "paused", reason: "paused", background: false, tolerant: false, tolerantUpdate: false, update: { sandboxId: null } };
    case "evicted":
      return { killTurn: false, settle: false, sandbox: "evicted", reason: t.reason === "idle" ? "idle_timeout" : "capacity", background: false, tolerant: false, tolerantUpdate: true, update: { sandboxId: null }, event: "session_evicted" };
    case "exited":
      return { killTurn: false, settle: false, sandbox: "evicted", reason: "process_exited", background: false, tolerant: true, tolerantUpdate: true, update: { status: t.status, sandboxId: null } };
  }
}

export interface LifecycleOptions {
  db: AshDatabase;
  live: LiveSessions;
  turns: SessionTurns<RunningTurn>;
  telemetry: Observability["telemetry"];
  log: ConsolaInstance;
}

/** The one way a session goes to sleep or ends: pause, stop, end, rewind, eviction, a dead agent process. */
export class Lifecycle {
  constructor(private readonly o: LifecycleOptions) {}

  async transition(session: { id: string; agentName?: string }, t: Transition): Promise<void> {
    const plan = planOf(t);
    const id = session.id;
    if (plan.settle) {
      // A message accepted a moment ago becomes its turn first, so that turn is ended too; a sandbox
      // still coming up is waited for, so it is torn down rather than left behind with the session asleep.
      await this.o.turns.claimSettled(id);
      await this.o.live.startSettled(id);
      // A message accepted meanwhile became a turn: a move that does not end turns (pause, rewind) would put its sandbox to sleep under it.
      if (!plan.killTurn && this.o.turns.phase(id) !== "free") throw conflict("A turn started on this session meanwhile; interrupt it first.");
    }
    if (plan.killTurn) await this.killTurn(id);
    const teardown = this.o.live.deactivate(id, plan.sandbox, plan.reason);
    // Answered once the session is marked ended and its agent process is told to stop; the save of
    // files changed since the last turn and the sandbox teardown go on in the background. The
    // sandbox keeps its pool slot until its processes are gone, and shutdown awaits it (live.closing).
    if (plan.background) teardown.catch((error) => this.o.log.error(`session ${id}: ending its sandbox failed:`, error));
    else if (plan.tolerant) await teardown.catch(() => undefined);
    else await teardown;
    const updating = updateSession(this.o.db, id, plan.update);
    if (plan.tolerantUpdate) await updating.catch(() => undefined);
    else await updating;
    if (plan.event === "session_evicted") {
      const reason = (t as { reason: string }).reason;
      this.o.telemetry.emit({ type: plan.event, sessionId: id, data: { reason } });
      this.o.log.debug(`session ${id}: evicted (${reason})`);
    } else if (plan.event) this.o.telemetry.emit({ type: plan.event, sessionId: id, agent: session.agentName });
  }

  /** Ends a running turn at once (stop, end, shutdown). */
  async killTurn(sessionId: string, why: "interrupted" | "server_shutdown" = "interrupted"): Promise<void> {
    const turn = this.o.turns.running(sessionId);
    if (!turn) return;
    if (why === "interrupted") turn.interrupted = true;
    await turn.live.agent.close(0);
    await turn.done;
  }
}
