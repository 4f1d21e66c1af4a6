// What a turn's outcome means for the user (src/sessions/turn-runner.ts): the
// final events and their error codes, for every way a turn can end.
import { describe, expect, it } from "vitest";
import { SnapshotTooLargeError } from "../../src/snapshots";
import { finalEvents, limitHit, modelFailure, promptOf, saveFailedEvent, type TurnEnding } from "../../src/sessions/turn-runner";

const ending = (over: Partial<TurnEnding> = {}): TurnEnding => ({ interrupted: false, timedOut: false, shuttingDown: false, live: { budget: {} }, ...over });
const success = { subtype: "success", is_error: false, result: "done", num_turns: 2, usage: { input_tokens: 3 }, total_cost_usd: 0.01 };
const codes = (events: ReturnType<typeof finalEvents>) => events.map((e) => (e.type === "error" ? `error:${(e.data as any).code}` : e.type));
const exit = { kind: "process_exit" as const, error: new Error("boom") };

describe("final events of a turn", () => {
  it("a result is turn_complete with the CLI's numbers", () => {
    const events = finalEvents(ending(), { kind: "result", result: success }, null);
    expect(events).toEqual([{ type: "turn_complete", data: { numTurns: 2, result: "done", usage: { input_tokens: 3 }, totalCostUsd: 0.01 } }]);
  });

  it("a turn whose server lost the session's lease is server_lost even when the CLI answered: nothing of it was saved", () => {
    const exceeded = { budget: "session" as const, limit: 10, used: 12 };
    for (const outcome of [{ kind: "result" as const, result: success }, { kind: "max_turns" as const, result: success }, exit]) {
      expect(codes(finalEvents(ending({ lost: true }), outcome, null))).toEqual(["error:server_lost"]);
      expect(codes(finalEvents(ending({ lost: true, shuttingDown: true, live: { budget: { exceeded } } }), outcome, "sandbox_oom"))).toEqual(["error:server_lost"]);
    }
  });

  it("names the cause of an early end: timeout before interrupt, both before the model's error", () => {
    expect(codes(finalEvents(ending({ timedOut: true, interrupted: true }), { kind: "result", result: success }, null))).toEqual(["error:model_timeout"]);
    expect(codes(finalEvents(ending({ interrupted: true }), { kind: "result", result: { ...success, subtype: "error_during_execution", is_error: true } }, null))).toEqual(["error:interrupted"]);
    expect(codes(finalEvents(ending(), { kind: "result", result: { ...success, subtype: "error_during_execution", is_error: true, result: "overloaded" } }, null))).toEqual(["error:model_error"]);
  });

  it("a refused budget wins over everything but an interrupt or shutdown, and says how to raise it", () => {
    const exceeded = { budget: "session", limit: 100, used: 120 };
    const [event] = finalEvents(ending({ live: { budget: { exceeded } } }), { kind: "result", result: success }, "sandbox_oom");
    expect(event).toMatchObject({ type: "error", data: { code: "budget_exceeded", budget: "session", limit: 100, used: 120 } });
    expect((event!.data as any).error).toMatch(/maxTokens/);
    expect(codes(finalEvents(ending({ interrupted: true, live: { budget: { exceeded } } }), { kind: "result", result: success }, null))).toEqual(["error:interrupted"]);
    expect(codes(finalEvents(ending({ shuttingDown: true, live: { budget: { exceeded } } }), exit, null))).toEqual(["error:server_shutdown"]);
  });

  it("a limit that stopped a process the CLI ran comes after turn_complete; one that stopped the CLI is the error", () => {
    expect(codes(finalEvents(ending(), { kind: "result", result: success }, "sandbox_pids"))).toEqual(["turn_complete", "error:sandbox_pids"]);
    expect(codes(finalEvents(ending({ shuttingDown: true, interrupted: true }), exit, "sandbox_oom"))).toEqual(["error:sandbox_oom"]);
  });

  it("a dead process: shutdown, then timeout, then interrupt, else a crash with the reason", () => {
    expect(codes(finalEvents(ending({ shuttingDown: true, timedOut: true }), exit, null))).toEqual(["error:server_shutdown"]);
    expect(codes(finalEvents(ending({ timedOut: true, interrupted: true }), exit, null))).toEqual(["error:model_timeout"]);
    expect(codes(finalEvents(ending({ interrupted: true }), exit, null))).toEqual(["error:interrupted"]);
    const [crash] = finalEvents(ending(), exit, null);
    expect(crash).toEqual({ type: "error", data: { error: "The agent process ended unexpectedly: boom", code: "sandbox_crashed" } });
  });

  it("max_turns keeps the result it got", () => {
    expect(codes(finalEvents(ending(), { kind: "max_turns", result: success }, null))).toEqual(["turn_complete", "error:max_turns"]);
    expect(codes(finalEvents(ending(), { kind: "max_turns" }, null))).toEqual(["error:max_turns"]);
  });
});

describe("the pieces of a turn's ending", () => {
  it("reads which limit struck between two counter readings, memory first", () => {
    const zero = { oomKills: 0, pidsMaxHits: 0, diskKills: 0 };
    expect(limitHit(zero, zero)).toBeNull();
    expect(limitHit(zero, { oomKills: 1, pidsMaxHits: 1, diskKills: 1 })).toBe("sandbox_oom");
    expect(limitHit(zero, { ...zero, pidsMaxHits: 2, diskKills: 1 })).toBe("sandbox_pids");
    expect(limitHit(zero, { ...zero, diskKills: 1 })).toBe("sandbox_disk");
  });

  it("a failed save is a disk limit when the workspace is too large, else a save failure the session survives", () => {
    expect(saveFailedEvent(new SnapshotTooLargeError(2048, 1024))).toMatchObject({ data: { code: "sandbox_disk" } });
    expect(saveFailedEvent(new Error("disk full"))).toMatchObject({ data: { code: "workspace_save_failed" } });
  });

  it("a save cut by a lost lease or a shutdown says so, whatever the workspace's own error", () => {
    expect(saveFailedEvent(new Error("tar was killed"), "lost")).toMatchObject({ data: { code: "server_lost" } });
    expect(saveFailedEvent(new SnapshotTooLargeError(2048, 1024), "shutdown")).toMatchObject({ data: { code: "server_shutdown" } });
  });

  it("lists a checkpoint's prompt as the start of the message's text", () => {
    expect(promptOf("  hello  ")).toBe("hello");
    expect(promptOf([{ type: "image" }, { type: "text", text: "look" }])).toBe("look");
    expect(promptOf("   ")).toBeNull();
    expect(promptOf("x".repeat(500))).toHaveLength(200);
  });

  it("names the server setting when the model key is missing", () => {
    expect(modelFailure("Not logged in · Please run /login")).toMatch(/ANTHROPIC_API_KEY/);
    expect(modelFailure("overloaded")).toBe("The model call failed: overloaded");
  });
});
