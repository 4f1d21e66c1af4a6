// The one per-session state (src/sessions/session-state.ts): which moves are
// allowed, and what counts as busy for eviction and parking.
import { describe, expect, it } from "vitest";
import { isBusy, LIVE_MOVES, moveLive, SessionTurns, TURN_MOVES, type SessionActivity } from "../../src/sessions/session-state";

describe("a session's turn", () => {
  it("goes free → claimed → running → free, and only one message at a time is claimed", () => {
    const turns = new SessionTurns<{ n: number }>();
    expect(turns.phase("s")).toBe("free");
    expect(turns.claim("s")).toBe(true);
    expect(turns.claim("s")).toBe(false);
    expect(turns.phase("s")).toBe("claimed");
    const turn = { n: 1 };
    turns.run("s", turn);
    expect(turns.phase("s")).toBe("running");
    expect(turns.claim("s")).toBe(false);
    expect(turns.running("s")).toBe(turn);
    expect(turns.runningCount).toBe(1);
    expect(turns.allRunning()).toEqual([["s", turn]]);
    // Giving up a claim leaves a running turn alone.
    turns.unclaim("s");
    expect(turns.phase("s")).toBe("running");
    turns.finish("s", turn);
    expect(turns.phase("s")).toBe("free");
    expect(turns.runningCount).toBe(0);
  });

  it("finishes only the turn it is told of, never a later one of the same session", () => {
    const turns = new SessionTurns<{ n: number }>();
    const first = { n: 1 };
    turns.claim("s");
    turns.run("s", first);
    turns.finish("s", first);
    const second = { n: 2 };
    turns.claim("s");
    turns.run("s", second);
    turns.finish("s", first);
    expect(turns.running("s")).toBe(second);
  });

  it("refuses to start a turn that was not claimed, and changes nothing", () => {
    const turns = new SessionTurns<{ n: number }>();
    expect(() => turns.run("s", { n: 1 })).toThrow(/claimed/);
    expect(turns.phase("s")).toBe("free");
  });

  it("tells a waiter when a claim became a turn or was given up", async () => {
    const turns = new SessionTurns<{ n: number }>();
    await turns.claimSettled("free-one");
    turns.claim("a");
    turns.claim("b");
    const order: string[] = [];
    const a = turns.claimSettled("a").then(() => order.push(`a:${turns.phase("a")}`));
    const b = turns.claimSettled("b").then(() => order.push(`b:${turns.phase("b")}`));
    turns.unclaim("b");
    turns.run("a", { n: 1 });
    await Promise.all([a, b]);
    expect(order.sort()).toEqual(["a:running", "b:free"]);
  });

  it("lists the allowed moves: every phase can get back to free", () => {
    expect(TURN_MOVES.free).toEqual(["claimed"]);
    expect(TURN_MOVES.claimed).toContain("free");
    expect(TURN_MOVES.running).toEqual(["free"]);
  });
});

describe("a live session", () => {
  it("parks and wakes while hot, and once closing never comes back", () => {
    const live = { phase: "hot" as const } as { phase: "hot" | "parked" | "closing" };
    expect(moveLive(live, "parked")).toBe(true);
    expect(moveLive(live, "parked")).toBe(false);
    expect(moveLive(live, "hot")).toBe(true);
    expect(moveLive(live, "closing")).toBe(true);
    for (const to of ["hot", "parked", "closing"] as const) {
      expect(moveLive(live, to)).toBe(false);
      expect(live.phase).toBe("closing");
    }
    expect(LIVE_MOVES.closing).toEqual([]);
  });
});

describe("busy", () => {
  it("is any turn (claimed or running) and any sandbox coming up or going away", () => {
    const cases: Array<[SessionActivity, boolean]> = [
      [{ sandbox: "hot", turn: "free" }, false],
      [{ sandbox: "parked", turn: "free" }, false],
      [{ sandbox: "asleep", turn: "free" }, false],
      [{ sandbox: "hot", turn: "claimed" }, true],
      [{ sandbox: "asleep", turn: "claimed" }, true],
      [{ sandbox: "hot", turn: "running" }, true],
      [{ sandbox: "starting", turn: "free" }, true],
      [{ sandbox: "closing", turn: "free" }, true],
      [{ sandbox: "closing", turn: "running" }, true],
    ];
    for (const [activity, busy] of cases) expect(isBusy(activity), JSON.stringify(activity)).toBe(busy);
  });
});
