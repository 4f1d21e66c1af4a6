/**
 * What this server is doing with one session, as one value. Its two parts
 * move on their own: the sandbox with its agent process, and the turn (a turn
 * can still be ending while its sandbox is put to sleep: a crash, stop, shutdown).
 * Every question of "is it busy" is asked of this value (see isBusy).
 */
export interface SessionActivity {
  sandbox: SandboxPhase;
  turn: TurnPhase;
}

/**
 * asleep: no sandbox here. starting: being brought up or woken. hot: its
 * agent process runs. parked: its agent process was stopped after
 * ASH_KEEPALIVE_MS, the sandbox stays. closing: being put to sleep or ended.
 */
export type SandboxPhase = "asleep" | "starting" | LivePhase;

/** The phase of a session that has a sandbox on this server. */
export type LivePhase = "hot" | "parked" | "closing";

/** free: no turn. claimed: a message was accepted, its turn is not registered yet. running: a turn runs. */
export type TurnPhase = "free" | "claimed" | "running";

/** Allowed moves of a live session (it leaves the registry once closed). */
export const LIVE_MOVES: Readonly<Record<LivePhase, readonly LivePhase[]>> = {
  hot: ["parked", "closing"],
  parked: ["hot", "closing"],
  closing: [],
};

/** Allowed moves of a session's turn. */
export const TURN_MOVES: Readonly<Record<TurnPhase, readonly TurnPhase[]>> = {
  free: ["claimed"],
  claimed: ["running", "free"],
  running: ["free"],
};

/** Moves a live session; false (and no move) when `to` is not allowed from where it is. */
export function moveLive(live: { phase: LivePhase }, to: LivePhase): boolean {
  if (!LIVE_MOVES[live.phase].includes(to)) return false;
  live.phase = to;
  return true;
}

/**
 * Busy: not to be evicted for room or idleness, nor to have its agent process
 * parked. A session is busy from the moment a message is accepted until its
 * turn ends, and while its sandbox comes up or goes away.
 */
export function isBusy(a: SessionActivity): boolean {
  return a.turn !== "free" || a.sandbox === "starting" || a.sandbox === "closing";
}

/**
 * The turn part of every session's state: absent means free. A turn's own
 * data (`T`) is kept with it while it runs, so "running" and "its turn" can
 * never disagree.
 */
export class SessionTurns<T> {
  private readonly slots = new Map<string, { phase: "claimed"; settle: () => void; settled: Promise<void> } | { phase: "running"; turn: T }>();

  phase(sessionId: string): TurnPhase {
    return this.slots.get(sessionId)?.phase ?? "free";
  }

  /** free → claimed; false when a turn is already claimed or running. */
  claim(sessionId: string): boolean {
    if (this.slots.has(sessionId)) return false;
    let settle!: () => void;
    const settled = new Promise<void>((resolve) => (settle = resolve));
    this.slots.set(sessionId, { phase: "claimed", settle, settled });
    return true;
  }

  /** Resolves once a claimed session's turn has started or the claim was given up (at once when not claimed). */
  claimSettled(sessionId: string): Promise<void> {
    const slot = this.slots.get(sessionId);
    return slot?.phase === "claimed" ? slot.settled : Promise.resolve();
  }

  /** claimed → running with this turn. */
  run(sessionId: string, turn: T): void {
    const slot = this.slots.get(sessionId);
    if (slot?.phase !== "claimed") throw new Error(`session ${sessionId}: a turn can only start on a claimed session (it is ${this.phase(sessionId)})`);
    this.slots.set(sessionId, { phase: "running", turn });
    slot.settle();
  }

  /** claimed → free (the message was not taken after all); a running turn stays. */
  unclaim(sessionId: string): void {
    const slot = this.slots.get(sessionId);
    if (slot?.phase !== "claimed") return;
    this.slots.delete(sessionId);
    slot.settle();
  }

  /** running → free, only for this very turn (a later one of the same session is left alone). */
  finish(sessionId: string, turn: T): void {
    const slot = this.slots.get(sessionId);
    if (slot?.phase === "running" && slot.turn === turn) this.slots.delete(sessionId);
  }

  /** The running turn of a session. */
  running(sessionId: string): T | undefined {
    const slot = this.slots.get(sessionId);
    return slot?.phase === "running" ? slot.turn : undefined;
  }

  /** Every running turn, by session id. */
  allRunning(): Array<[string, T]> {
    const all: Array<[string, T]> = [];
    for (const [id, slot] of this.slots) if (slot.phase === "running") all.push([id, slot.turn]);
    return all;
  }

  /** Sessions with a message accepted or a turn running. */
  get activeCount(): number {
    return this.slots.size;
  }

  get runningCount(): number {
    let n = 0;
    for (const slot of this.slots.values()) if (slot.phase === "running") n++;
    return n;
  }
}
