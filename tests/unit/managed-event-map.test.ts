import { describe, expect, it } from "vitest";
import { EventMapper, parseEventId } from "../../src/server/managed/event-map";
import type { StoredEvent } from "../../src/db/queries/events";

// The event log's Claude Code stream as Managed Agents events: the cases the end-to-end
// suite cannot reach with the fake model (MCP tools, a response split over several
// messages, failures and budgets), checked on the pure mapping.
let seq = 0;
const stored = (type: string, data: unknown): StoredEvent => ({ seq: ++seq, type, data, createdAt: Date.UTC(2026, 0, 1) });
const assistant = (id: string, content: unknown[], usage = { input_tokens: 10, output_tokens: 5 }) => stored("message", { type: "assistant", message: { id, content, usage } });
const toolResults = (content: unknown[]) => stored("message", { type: "user", message: { content } });

function run(events: Array<[StoredEvent, unknown?]>) {
  const mapper = new EventMapper();
  return events.flatMap(([e, user]) => mapper.map(e, user));
}

describe("Managed Agents events from the event log", () => {
  it("maps a turn with an MCP tool, one span per model response, the result tied to its call", () => {
    const start = stored("session_start", { sessionId: "s" });
    const out = run([
      [start, "look it up"],
      [assistant("msg_1", [{ type: "thinking", thinking: "hm" }])],
      // The CLI reports each content block of one response as its own message.
      [assistant("msg_1", [{ type: "tool_use", id: "toolu_1", name: "mcp__docs__search", input: { q: "heron" } }], { input_tokens: 10, output_tokens: 9 })],
      [stored("tool_use", { id: "toolu_1" })],
      [toolResults([{ type: "tool_result", tool_use_id: "toolu_1", content: "found it", is_error: false }])],
      [assistant("msg_2", [{ type: "text", text: "It is a bird." }])],
      [stored("message", { type: "result" })],
      [stored("turn_complete", {})],
      [stored("done", { sessionId: "s" })],
    ]);
    expect(out.map((e) => e.type)).toEqual([
      "user.message",
      "session.status_running",
      "span.model_request_start",
      "agent.thinking",
      "agent.mcp_tool_use",
      "span.model_request_end",
      "agent.mcp_tool_result",
      "span.model_request_start",
      "agent.message",
      "span.model_request_end",
      "session.status_idle",
    ]);
    expect(out[0]).toMatchObject({ id: `sevt_${start.seq}_0`, content: [{ type: "text", text: "look it up" }] });
    const use = out.find((e) => e.type === "agent.mcp_tool_use")!;
    expect(use).toMatchObject({ name: "search", mcp_server_name: "docs", input: { q: "heron" } });
    expect(out.find((e) => e.type === "agent.mcp_tool_result")).toMatchObject({ mcp_tool_use_id: use.id, content: [{ type: "text", text: "found it" }], is_error: false });
    const [firstEnd] = out.filter((e) => e.type === "span.model_request_end");
    // The span's usage is the response's last report, counted once.
    expect(firstEnd).toMatchObject({ model_request_start_id: out[2]!.id, model_usage: { input_tokens: 10, output_tokens: 9 } });
    expect(out.at(-1)).toMatchObject({ stop_reason: { type: "end_turn" } });
    expect(new Set(out.map((e) => e.id)).size).toBe(out.length);
    expect(out.every((e) => parseEventId(e.id))).toBe(true);
  });

  it("says why a turn stopped: an interrupt, a failing model, the token budget", () => {
    const interrupted = run([[stored("session_start", {}), "go"], [stored("error", { code: "interrupted", error: "Interrupted." })], [stored("done", {})]]);
    expect(interrupted.map((e) => e.type)).toEqual(["user.message", "session.status_running", "user.interrupt", "session.status_idle"]);
    const failed = run([[stored("session_start", {}), "go"], [stored("error", { code: "model_error", error: "The model answered 500." })], [stored("done", {})]]);
    expect(failed[2]).toMatchObject({ type: "session.error", error: { type: "model_request_failed_error", message: "The model answered 500." } });
    expect(failed[3]).toMatchObject({ type: "session.status_idle", stop_reason: { type: "retries_exhausted" } });
    const budget = run([[stored("session_start", {}), "go"], [stored("error", { code: "budget_exceeded", error: "Over budget." })], [stored("done", {})]]);
    expect(budget[3]).toMatchObject({ stop_reason: { type: "budget_reached" } });
  });

  it("reads only ids it gave out", () => {
    expect(parseEventId("sevt_12_3")).toEqual({ seq: 12, index: 3 });
    for (const bad of ["12", "sevt_-1_0", "sevt_1_", "sevt_1_0 ", "sevt_1e3_0", "sevt_99999999999999999_0"]) expect(parseEventId(bad)).toBeUndefined();
  });
});
