import { describe, expect, it } from "vitest";
import { apply, EMPTY, withSent, withUsers, type Conversation } from "../../console/src/conversation";
import type { StoredMessage, StreamEvent } from "../../src/client";

// The web console's conversation: what a session page shows from stored and live events.
const text = (id: number, delta: string): StreamEvent => ({ type: "text_delta", id, data: { delta } });
const userMessage = (sequence: number, data: unknown): StoredMessage => ({ id: `m${sequence}`, sessionId: "s", role: "user", content: "", sequence, createdAt: "", kind: "user", data });
const run = (events: StreamEvent[], start: Conversation = EMPTY) => events.reduce(apply, start);

describe("the console's conversation", () => {
  it("joins text deltas into one answer and applies each event once, whichever stream delivers it again", () => {
    const turn: StreamEvent[] = [{ type: "session_start", id: 1, data: { sessionId: "s" } }, text(2, "Hel"), text(3, "lo"), { type: "done", id: 4, data: { sessionId: "s" } }];
    // The page's own POST stream and its follow stream both deliver events 2 and 3.
    const c = run([turn[0], turn[1], turn[1], turn[2], turn[1], turn[2], turn[3], turn[2]]);
    expect(c.items).toEqual([{ kind: "text", key: "t2", text: "Hello" }]);
    expect(c.lastId).toBe(4);
    expect(c.running).toBe(false);
  });

  it("pairs a tool call with its result, keeps thinking apart, and shows errors", () => {
    const c = run([
      { type: "thinking_delta", id: 1, data: { delta: "hmm" } },
      { type: "tool_use", id: 2, data: { id: "t1", name: "Bash", input: { command: "ls" } } },
      { type: "tool_result", id: 3, data: { tool_use_id: "t1", content: [{ type: "text", text: "a.txt" }], is_error: false } },
      { type: "error", id: 4, data: { error: "The model answered 500." } },
    ]);
    expect(c.items.map((i) => i.kind)).toEqual(["thinking", "tool", "error"]);
    expect(c.items[1]).toMatchObject({ name: "Bash", input: { command: "ls" }, output: "a.txt", isError: false });
    expect(c.running).toBe(true);
  });

  it("puts each stored user message before the first event of its turn", () => {
    let c = withUsers(EMPTY, [userMessage(1, "first"), userMessage(5, [{ type: "text", text: "second" }])]);
    c = run([{ type: "session_start", id: 1, data: { sessionId: "s" } }, text(2, "one"), { type: "done", id: 4, data: { sessionId: "s" } }, text(5, "two")], c);
    expect(c.items.map((i) => ("text" in i ? i.text : i.kind))).toEqual(["first", "one", "second", "two"]);
  });

  it("shows a message sent from the page at once", () => {
    const c = withSent(run([text(1, "a")]), "next");
    expect(c.items.at(-1)).toMatchObject({ kind: "user", text: "next" });
  });
});
