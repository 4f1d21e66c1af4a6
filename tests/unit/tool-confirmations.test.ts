import { describe, expect, it } from "vitest";
import { ToolConfirmations } from "../../src/sessions/tool-confirmations";
import { confirmationCovers } from "../../src/runtime/agent-session";
import { askedTools, presentTools } from "../../src/server/managed/agent-shape";
import { EventMapper } from "../../src/server/managed/event-map";
import { DomainError } from "../../src/errors";

const request = (toolUseId: string) => ({ toolUseId, name: "Bash", input: { command: "ls" } });
const kindOf = (f: () => unknown) => {
  try {
    f();
  } catch (error) {
    return error instanceof DomainError ? error.kind : "other";
  }
  return "none";
};

describe("held tool uses", () => {
  it("answers each once: a second answer is a conflict, an unknown id not found", async () => {
    const held = new ToolConfirmations();
    const waiting = held.ask("s1", request("t1"), new AbortController().signal);
    expect(held.waiting("s1").map((r) => r.toolUseId)).toEqual(["t1"]);
    expect(kindOf(() => held.take("s1", "t2"))).toBe("not_found");
    expect(kindOf(() => held.take("s2", "t1"))).toBe("not_found");
    held.take("s1", "t1").finish({ allow: true });
    expect(await waiting).toEqual({ allow: true });
    expect(kindOf(() => held.take("s1", "t1"))).toBe("conflict");
    expect(held.waiting("s1")).toEqual([]);
  });

  it("denies what waits when the turn's process goes, or the session is interrupted", async () => {
    const held = new ToolConfirmations();
    const abort = new AbortController();
    const first = held.ask("s1", request("t1"), abort.signal);
    abort.abort();
    expect(await first).toMatchObject({ allow: false });
    const second = held.ask("s1", request("t2"), new AbortController().signal);
    expect(held.cancel("s1", "The turn was interrupted.")).toBe(1);
    expect(await second).toEqual({ allow: false, message: "The turn was interrupted.", interrupt: true });
    expect(kindOf(() => held.take("s1", "t2"))).toBe("conflict");
    expect(held.sessions()).toEqual([]);
  });
});

describe("which tools a policy holds", () => {
  it("all, names, and a whole MCP server by its prefix", () => {
    expect(confirmationCovers(undefined, "Bash")).toBe(false);
    expect(confirmationCovers("all", "Read")).toBe(true);
    expect(confirmationCovers(["Bash"], "Bash")).toBe(true);
    expect(confirmationCovers(["Bash"], "BashOutput")).toBe(false);
    expect(confirmationCovers(["mcp__docs"], "mcp__docs__search")).toBe(true);
    expect(confirmationCovers(["mcp__docs"], "mcp__docsearch__x")).toBe(false);
    expect(confirmationCovers(["mcp__docs__search"], "mcp__docs__fetch")).toBe(false);
  });

  it("maps /v1 always_ask policies to Claude Code tool names, and shows them back", () => {
    const tools = [
      { type: "agent_toolset_20260401" as const, default_config: { permission_policy: { type: "always_ask" } }, configs: [{ name: "read", permission_policy: { type: "always_allow" } }] },
      { type: "mcp_toolset" as const, mcp_server_name: "docs", configs: [{ name: "search", permission_policy: { type: "always_ask" } }] },
    ];
    const asked = askedTools(tools as any);
    expect(asked).toContain("Bash");
    expect(asked).not.toContain("Read");
    expect(asked).toContain("mcp__docs__search");
    const shown = presentTools(tools as any, asked) as any[];
    expect(shown[0].configs.find((c: any) => c.name === "read").permission_policy).toEqual({ type: "always_allow" });
    expect(shown[0].configs.find((c: any) => c.name === "bash").permission_policy).toEqual({ type: "always_ask" });
    expect(shown[1].configs[0].permission_policy).toEqual({ type: "always_ask" });
  });
});

describe("/v1 events of a held tool use", () => {
  it("status_idle requires_action names the agent.tool_use; the decision is user.tool_confirmation then running", () => {
    const mapper = new EventMapper();
    const at = Date.parse("2026-01-01T00:00:00Z");
    const stored = (seq: number, type: string, data: unknown) => ({ seq, type, data, createdAt: at }) as any;
    mapper.map(stored(1, "session_start", { sessionId: "s" }), "go");
    const use = mapper.map(stored(2, "message", { type: "assistant", message: { id: "m1", content: [{ type: "tool_use", id: "toolu_1", name: "Bash", input: { command: "ls" } }] } }));
    const toolUse = use.find((e) => e.type === "agent.tool_use")!;
    const idle = mapper.map(stored(3, "tool_confirmation", { toolUseId: "toolu_1", name: "Bash", input: {} }));
    expect(idle.at(-1)).toMatchObject({ type: "session.status_idle", stop_reason: { type: "requires_action", event_ids: [toolUse.id] } });
    expect(mapper.claudeToolUseId(toolUse.id)).toBe("toolu_1");
    expect(mapper.claudeToolUseId("sevt_9_9")).toBeUndefined();
    const decided = mapper.map(stored(4, "tool_decision", { toolUseId: "toolu_1", decision: "deny", message: "no" }));
    expect(decided.map((e) => e.type)).toEqual(["user.tool_confirmation", "session.status_running"]);
    expect(decided[0]).toMatchObject({ tool_use_id: toolUse.id, result: "deny", deny_message: "no" });
  });
});
