import { describe, expect, it } from "vitest";
import { AshApiError, AshConnectionError, AshStreamError } from "../../src/client/errors";
import { AgentFolderError } from "../../src/agents/local-folder";
import { CliError, describeError } from "../../src/cli/errors";
import { assistantText, timeAgo, toolLine, truncate, turnSummary } from "../../src/cli/output";
import { messageLines } from "../../src/cli/commands/session";

describe("tool lines", () => {
  it("shows the field that says what the call does", () => {
    expect(toolLine("Bash", { command: "ls -la", description: "list" }, 80)).toBe("⏺ Bash(ls -la)");
    expect(toolLine("Read", { file_path: "/w/notes.md" }, 80)).toBe("⏺ Read(/w/notes.md)");
    expect(toolLine("Grep", { pattern: "TODO", path: "src" }, 80)).toBe("⏺ Grep(TODO)");
    expect(toolLine("TodoWrite", { todos: [] }, 80)).toBe("⏺ TodoWrite");
    expect(toolLine("mcp__db__query", { sql: "select 1" }, 80)).toBe("⏺ mcp__db__query(select 1)");
    expect(toolLine("Custom", { n: 1 }, 80)).toBe('⏺ Custom({"n":1})');
  });

  it("stays on one line and within the width", () => {
    const line = toolLine("Bash", { command: "for i in 1 2 3\ndo\n  echo $i\ndone && " + "x".repeat(200) }, 40);
    expect(line).not.toContain("\n");
    expect(Array.from(line).length).toBeLessThanOrEqual(40);
    expect(line.startsWith("⏺ Bash(for i in 1 2 3 do echo $i done")).toBe(true);
    expect(line.endsWith("…)")).toBe(true);
  });
});

describe("turn summary", () => {
  it("counts turns and tokens, cached input included", () => {
    expect(turnSummary(1, { input_tokens: 1200, output_tokens: 34, cache_read_input_tokens: 300 })).toBe(
      "1 turn · 1,500 tokens in · 34 out",
    );
    expect(turnSummary(3, undefined)).toBe("3 turns");
  });
});

describe("text helpers", () => {
  it("cuts with an ellipsis only when needed", () => {
    expect(truncate("hello", 5)).toBe("hello");
    expect(truncate("hello world", 6)).toBe("hello…");
    expect(truncate("hello world", Number.POSITIVE_INFINITY)).toBe("hello world");
  });

  it("says how long ago", () => {
    const now = Date.parse("2026-01-01T12:00:00Z");
    expect(timeAgo("2026-01-01T11:58:00Z", now)).toBe("2 min ago");
    expect(timeAgo("2026-01-01T09:00:00Z", now)).toBe("3 h ago");
    expect(timeAgo("2025-10-01T09:00:00Z", now)).toBe("2025-10-01");
  });

  it("takes the text of assistant messages and stored history content", () => {
    const sdk = { type: "assistant", message: { content: [{ type: "text", text: "Hi " }, { type: "tool_use", name: "Bash", input: { command: "ls" } }, { type: "text", text: "there" }] } };
    expect(assistantText(sdk)).toBe("Hi there");
    expect(messageLines(sdk, 80)).toEqual(["Hi ", "⏺ Bash(ls)", "there"]);
    expect(messageLines("plain", 80)).toEqual(["plain"]);
    expect(messageLines([{ type: "tool_result", content: "boom\nmore", is_error: true }], 80)).toEqual(["  ⎿ error: boom"]);
  });
});

describe("error sentences", () => {
  const context = { url: "http://localhost:4100", hasKey: false };

  it("tells how to start a server that does not answer", () => {
    const error = new AshConnectionError("http://localhost:4100", "ECONNREFUSED", new Error("x"));
    expect(describeError(error, context)).toBe("No Ash server answers at http://localhost:4100; start it with `ash start`.");
  });

  it("tells how to give the key, differently for a missing and a wrong key", () => {
    const error = new AshApiError(401, "Missing or invalid API key.", "GET /api/agents");
    expect(describeError(error, context)).toBe(
      "The server at http://localhost:4100 needs an API key; pass it with `--api-key`, set `ASH_API_KEY`, or run `ash start`, which saves it to ~/.ash/config.json.",
    );
    expect(describeError(error, { ...context, hasKey: true })).toMatch(/^The server at http:\/\/localhost:4100 rejected the API key; pass it with `--api-key`/);
  });

  it("passes the server's sentence on, with the wait for 503", () => {
    expect(describeError(new AshApiError(409, "A turn is already running on this session", "POST /x"), context)).toBe(
      "A turn is already running on this session.",
    );
    expect(describeError(new AshApiError(503, "Every sandbox is busy.", "POST /x", 5), context)).toBe("Every sandbox is busy. Try again in 5 s.");
  });

  it("uses our own sentences as they are, and marks the unexpected", () => {
    expect(describeError(new CliError("No agent named \"x\" is deployed."), context)).toBe('No agent named "x" is deployed.');
    expect(describeError(new AgentFolderError("x has no CLAUDE.md"), context)).toBe("x has no CLAUDE.md.");
    expect(describeError(new AshStreamError("The event stream broke.", 4), context)).toBe("The event stream broke.");
    expect(describeError(new RangeError("bad thing"), context)).toBe("Unexpected error: bad thing.");
  });
});
