// The session manager's concurrent paths, without the CLI: fake sandboxes,
// store and agent processes (tests/helpers/session-fakes.ts) over a real
// SQLite database (a file in a temporary folder). What a client of the API would see: who gets a
// conflict, which events a turn writes, which status a session ends in, and
// that no sandbox is left behind.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DomainError } from "../../src/errors";
import type { EventLog } from "../../src/sessions/event-log";
import type { LiveSessions } from "../../src/sessions/live-sessions";
import { gate, sessionHarness, until, type Harness } from "../helpers/session-fakes";

let h: Harness;
beforeEach(async () => {
  h = await sessionHarness();
});
afterEach(async () => {
  await h.close();
});

async function eventsAfter(log: EventLog, after: number) {
  const seen: Array<{ type: string; data: any }> = [];
  await until(async () => {
    seen.splice(0, seen.length, ...(await log.read(after)));
    return seen.some((e) => e.type === "done");
  });
  return seen;
}

const newSession = () => h.sessions.createSession({ agent: "writer", settings: {} });

async function rejection(promise: Promise<unknown>): Promise<DomainError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(DomainError);
  return error as DomainError;
}

describe("two messages at once", () => {
  it("runs one turn and refuses the other with a conflict; the next message after done is taken", async () => {
    const session = await newSession();
    const results = await Promise.allSettled([h.sessions.sendMessage(session.id, { content: "one" }), h.sessions.sendMessage(session.id, { content: "two" })]);
    const taken = results.filter((r) => r.status === "fulfilled");
    const refused = results.filter((r) => r.status === "rejected") as PromiseRejectedResult[];
    expect(taken).toHaveLength(1);
    expect(refused).toHaveLength(1);
    expect((refused[0]!.reason as DomainError).kind).toBe("conflict");
    const { log, after } = (taken[0] as PromiseFulfilledResult<{ log: EventLog; after: number }>).value;
    const events = await eventsAfter(log, after);
    expect(events.map((e) => e.type)).toEqual(["session_start", "message", "turn_complete", "done"]);
    // One agent process served it, and it ran one turn.
    expect(h.agents).toHaveLength(1);
    expect(h.agents[0]!.turns).toBe(1);

    const next = await h.sessions.sendMessage(session.id, { content: "three" });
    expect((await eventsAfter(next.log, next.after)).at(-1)!.type).toBe("done");
    expect(h.agents[0]!.turns).toBe(2);
    expect(h.sessions.busyCount).toBe(0);
  });

  it("two messages to a sleeping session bring up one sandbox, not two", async () => {
    const session = await newSession();
    await h.sessions.pause(session.id);
    h.sandboxes.hold = gate();
    const first = h.sessions.sendMessage(session.id, { content: "one" });
    const second = h.sessions.sendMessage(session.id, { content: "two" });
    expect((await rejection(second)).kind).toBe("conflict");
    h.sandboxes.hold.open();
    const { log, after } = await first;
    await eventsAfter(log, after);
    expect(h.sandboxes.asked).toBe(2);
    expect(h.sandboxes.live).toBe(1);
  });
});

describe("a stream and a message at once", () => {
  it("read and write one event log, so the stream sees the turn", async () => {
    const session = await newSession();
    await h.sessions.pause(session.id);
    // Two readers (GET /stream) and a writer open the sleeping session's log at the same moment.
    const [first, second, writer] = await Promise.all([h.sessions.logForReader(session.id), h.sessions.logForReader(session.id), h.sessions.logFor(session.id)]);
    expect(second).toBe(first);
    expect(writer).toBe(first);
    const sent = await h.sessions.sendMessage(session.id, { content: "one" });
    expect(sent.log).toBe(first);
    expect((await eventsAfter(first, sent.after)).map((e) => e.type)).toContain("done");
  });
});

describe("interrupt", () => {
  it("while the sandbox comes up finds no turn to stop; the message's turn then runs", async () => {
    const session = await newSession();
    await h.sessions.pause(session.id);
    h.sandboxes.hold = gate();
    const sending = h.sessions.sendMessage(session.id, { content: "hello" });
    await until(() => h.sandboxes.asked === 2);
    expect(h.sessions.stateOf(session.id)).toBe("hot");
    expect(await h.sessions.interrupt(session.id)).toBe(false);
    h.sandboxes.hold.open();
    const { log, after } = await sending;
    const types = (await eventsAfter(log, after)).map((e) => e.type);
    expect(types).toContain("turn_complete");
    expect(types.at(-1)).toBe("done");
  });

  it("during a turn ends it with code interrupted, and the session takes the next message", async () => {
    const session = await newSession();
    h.agents[0]!.hold = gate();
    const { log, after } = await h.sessions.sendMessage(session.id, { content: "long" });
    await until(() => h.agents[0]!.turnRunning);
    expect(await h.sessions.interrupt(session.id)).toBe(true);
    const events = await eventsAfter(log, after);
    expect(events.find((e) => e.type === "error")?.data.code).toBe("interrupted");
    expect(events.at(-1)!.type).toBe("done");
    h.agents[0]!.hold = undefined;
    const next = await h.sessions.sendMessage(session.id, { content: "again" });
    expect((await eventsAfter(next.log, next.after)).map((e) => e.type)).toContain("turn_complete");
  });
});

describe("pause", () => {
  it("during a turn is refused and changes nothing; after the turn it saves, frees the sandbox, and the next message restores it", async () => {
    const session = await newSession();
    const agent = h.agents[0]!;
    agent.hold = gate();
    const { log, after } = await h.sessions.sendMessage(session.id, { content: "work" });
    await until(() => agent.turnRunning);
    const refused = await rejection(h.sessions.pause(session.id));
    expect(refused.kind).toBe("conflict");
    expect((await h.sessions.requireSession(session.id)).status).toBe("active");
    expect(h.sandboxes.live).toBe(1);
    agent.hold.open();
    await eventsAfter(log, after);

    const paused = await h.sessions.pause(session.id);
    expect(paused.status).toBe("paused");
    expect(paused.sandboxId).toBeNull();
    expect(h.sandboxes.live).toBe(0);
    expect(agent.closed).toBe(true);
    expect(h.sessions.stateOf(session.id)).toBe("asleep");

    const next = await h.sessions.sendMessage(session.id, { content: "more" });
    await eventsAfter(next.log, next.after);
    expect(h.store.restores).toEqual([paused.workspaceVersion]);
    // The new process continues the conversation of the first.
    expect(h.agents[1]!.options.resume).toBe(agent.sdkSessionId);
  });
});

describe("stop", () => {
  it("during a turn ends it (interrupted), frees the sandbox, and the session can be resumed", async () => {
    const session = await newSession();
    h.agents[0]!.hold = gate();
    const { log, after } = await h.sessions.sendMessage(session.id, { content: "long" });
    await until(() => h.agents[0]!.turnRunning);
    const stopped = await h.sessions.stop(session.id);
    expect(stopped.status).toBe("stopped");
    expect((await eventsAfter(log, after)).find((e) => e.type === "error")?.data.code).toBe("interrupted");
    expect(h.sandboxes.live).toBe(0);
    const resumed = await h.sessions.resume(session.id);
    expect(resumed.status).toBe("active");
    expect(h.sandboxes.live).toBe(1);
  });
});

describe("the keep-alive", () => {
  const liveOf = (h: Harness) => (h.sessions as unknown as { live: LiveSessions }).live;
  /** Parks the session's process past the window, then starts a wake that waits for that process to exit until `release()`. */
  const wakeHeld = async (sessionId: string) => {
    const hold = gate();
    h.agents[0]!.closeHold = hold;
    liveOf(h).parkIdle(Date.now() + h.config.keepaliveMs + 1);
    const waking = h.sessions.resume(sessionId);
    await until(() => h.sessions.stateOf(sessionId) === "hot");
    return { waking, release: () => hold.open() };
  };
  /** A session with one completed turn (checkpoint 1). */
  const afterOneTurn = async () => {
    const session = await newSession();
    const first = await h.sessions.sendMessage(session.id, { content: "one" });
    await eventsAfter(first.log, first.after);
    return session;
  };

  it("parks an idle session's agent process; the next message wakes it in the same sandbox, resuming its conversation", async () => {
    const session = await newSession();
    const first = await h.sessions.sendMessage(session.id, { content: "one" });
    await eventsAfter(first.log, first.after);
    liveOf(h).parkIdle(Date.now() + h.config.keepaliveMs + 1);
    expect(h.sessions.stateOf(session.id)).toBe("idle");
    expect(h.agents[0]!.closed).toBe(true);
    expect(h.sandboxes.live).toBe(1);

    const next = await h.sessions.sendMessage(session.id, { content: "two" });
    expect((await eventsAfter(next.log, next.after)).map((e) => e.type)).toContain("turn_complete");
    expect(h.sessions.stateOf(session.id)).toBe("hot");
    expect(h.sandboxes.asked).toBe(1);
    expect(h.agents).toHaveLength(2);
    expect(h.agents[1]!.options.resume).toBe(h.agents[0]!.sdkSessionId);
  });

  it("a pause while the session is being woken waits for the wake, then pauses: no sandbox and no process left", async () => {
    const session = await newSession();
    // The wake waits for the parked process to exit; the pause comes meanwhile.
    const { waking, release } = await wakeHeld(session.id);
    const pausing = h.sessions.pause(session.id);
    release();
    await waking;
    expect((await pausing).status).toBe("paused");
    expect(h.sandboxes.live).toBe(0);
    expect(h.agents.every((a) => !a.alive)).toBe(true);
    expect(h.sessions.stateOf(session.id)).toBe("asleep");
  });

  it("a rewind while the session is being woken waits for the wake, then rewinds: no sandbox and no process left", async () => {
    const session = await afterOneTurn();
    // The rewind comes while the wake still waits for the parked process to exit.
    const { waking, release } = await wakeHeld(session.id);
    const rewinding = h.sessions.rewind(session.id, 1);
    release();
    await waking;
    expect((await rewinding).status).toBe("paused");
    expect(h.sandboxes.live).toBe(0);
    expect(h.agents.every((a) => !a.alive)).toBe(true);
    expect(h.sessions.stateOf(session.id)).toBe("asleep");
  });

  it("a rewind that waited for a wake refuses when a message became a turn meanwhile, and the turn runs to its end", async () => {
    const session = await afterOneTurn();
    const { waking, release } = await wakeHeld(session.id);
    const rewinding = h.sessions.rewind(session.id, 1);
    // A message comes while both wait for the parked process: it is taken and becomes a turn once the wake is done.
    const sending = h.sessions.sendMessage(session.id, { content: "two" });
    release();
    await waking;
    await expect(rewinding).rejects.toMatchObject({ kind: "conflict" });
    const second = await sending;
    expect((await eventsAfter(second.log, second.after)).map((e) => e.type)).toContain("turn_complete");
    expect(h.sandboxes.live).toBe(1);
    expect(h.agents.filter((a) => a.alive)).toHaveLength(1);
    expect(h.sandboxes.made.find((s) => s.workspaceDir === h.agents.find((a) => a.alive)!.options.cwd)?.destroyed).toBe(false);
  });
});

describe("delete", () => {
  it("while the session's sandbox comes up waits for it, ends the accepted turn, and leaves no sandbox behind", async () => {
    const session = await newSession();
    await h.sessions.pause(session.id);
    h.sandboxes.hold = gate();
    const sending = h.sessions.sendMessage(session.id, { content: "hello" });
    await until(() => h.sandboxes.asked === 2);
    const ending = h.sessions.end(session.id);
    h.sandboxes.hold.open();
    const ended = await ending;
    expect(ended.status).toBe("ended");
    const { log, after } = await sending;
    const events = await eventsAfter(log, after);
    expect(events.find((e) => e.type === "error")?.data.code).toBe("interrupted");
    expect(events.at(-1)!.type).toBe("done");
    await until(() => h.sandboxes.live === 0);
    expect((await h.sessions.requireSession(session.id)).status).toBe("ended");
    expect(h.sessions.stateOf(session.id)).toBe("asleep");
    // An ended session takes no more messages.
    expect((await rejection(h.sessions.sendMessage(session.id, { content: "again" }))).kind).toBe("gone");
  });

  it("while a new session's first sandbox comes up leaves it ended, with no sandbox behind", async () => {
    h.sandboxes.hold = gate();
    const creating = newSession();
    await until(() => h.sandboxes.asked === 1);
    const id = (await h.db.get<{ id: string }>(`SELECT id FROM sessions`))!.id;
    const ending = h.sessions.end(id);
    h.sandboxes.hold.open();
    expect((await ending).status).toBe("ended");
    await creating;
    await until(() => h.sandboxes.live === 0);
    expect((await h.sessions.requireSession(id)).status).toBe("ended");
    expect(h.sessions.stateOf(id)).toBe("asleep");
  });
});
