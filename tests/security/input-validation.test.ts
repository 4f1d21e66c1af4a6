// Hostile input that is well-formed HTTP: agent uploads whose paths clash,
// JSON nested deep enough to overflow a recursive walk, sequence numbers in
// odd notations, and the environment exec runs with.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { agentUpload, readEvents, startTestServer, type TestServer } from "../helpers/server";
import { startFakeModel } from "../fake-model/fake-model.mjs";

describe("input validation", () => {
  let server: TestServer;
  let model: Awaited<ReturnType<typeof startFakeModel>>;

  beforeAll(async () => {
    model = await startFakeModel();
    server = await startTestServer({ modelUrl: model.url });
  });
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
  });

  const deploy = (name: string, files: Array<{ path: string; content?: string }>, extra: Record<string, unknown> = {}) =>
    server.api("/api/agents", {
      method: "POST",
      json: { name, files: files.map((f) => ({ path: f.path, content: Buffer.from(f.content ?? "x").toString("base64") })), ...extra },
    });
  const newSession = async (agent: string, extra: Record<string, unknown> = {}) => {
    const r = await server.api("/api/sessions", { method: "POST", json: { agent, ...extra } });
    expect(r.status).toBe(201);
    return (await r.json()).session as { id: string };
  };
  const turn = async (sessionId: string, content: unknown) => {
    const r = await server.api(`/api/sessions/${sessionId}/messages`, { method: "POST", json: { content } });
    expect(r.status).toBe(200);
    const events = await readEvents(r);
    expect(events.at(-1)?.event).toBe("done");
    return events;
  };
  const stillServes = async () => {
    expect((await fetch(`${server.url}/health`)).status).toBe(200);
    expect((await server.api("/api/agents")).status).toBe(200);
  };

  describe("agent uploads", () => {
    const claude = { path: "CLAUDE.md", content: "Be brief." };
    const bad: Array<[string, Array<{ path: string }>, RegExp]> = [
      ["a file and a folder of the same name", [{ path: "x" }, { path: "x/y" }], /"x" is a file, but "x\/y"/],
      ["a folder and then a file of the same name", [{ path: "x/y" }, { path: "x" }], /"x" is a file, but "x\/y"/],
      ["a deeper clash", [{ path: "a/b/c" }, { path: "a/b" }], /"a\/b" is a file/],
      ["a path naming a folder", [{ path: "x/" }, { path: "x/y" }], /"x\/" names a folder/],
      ["the same path twice", [{ path: "d/e" }, { path: "d/e" }], /"d\/e" appears twice/],
      ["paths that normalize to the same file", [{ path: "d/./e" }, { path: "d//e" }], /"d\/.\/e" and "d\/\/e" are the same file/],
      ["CLAUDE.md twice in another spelling", [{ path: "./CLAUDE.md" }], /"CLAUDE.md" and ".\/CLAUDE.md" are the same file/],
      ["..", [{ path: "a/../../etc/passwd" }], /must not contain "\.\."/],
      ["an absolute path", [{ path: "/etc/passwd" }], /relative/],
      ["an empty path", [{ path: "" }], /needs a path/],
      ["a path of dots and slashes", [{ path: "./." }], /does not name a file/],
      ["a NUL byte", [{ path: "a\u0000b" }], /NUL/],
      ["a name over 255 bytes", [{ path: `d/${"n".repeat(256)}` }], /longer than 255 bytes/],
      ["a name of 128 two-byte characters", [{ path: "é".repeat(128) }], /longer than 255 bytes/],
      ["a path over 4096 bytes", [{ path: Array.from({ length: 20 }, () => "p".repeat(250)).join("/") }], /longer than 4096 bytes/],
    ];

    it.each(bad)("refuses %s with 400 naming the path, and writes nothing", async (_what, files, message) => {
      const name = `clash-${Math.random().toString(36).slice(2, 8)}`;
      const r = await deploy(name, [claude, ...files]);
      expect(r.status).toBe(400);
      const body = await r.json();
      expect(body).toEqual({ error: expect.stringMatching(message), statusCode: 400 });
      expect((await server.api(`/api/agents/${name}`)).status).toBe(404);
      expect(await readdir(join(server.dataDir, "agents")).catch(() => [])).not.toContain(name);
      await stillServes();
    });

    it("keeps the previous version whole when a redeploy is refused, and its sessions keep working", async () => {
      expect((await deploy("steady", [claude, { path: "x", content: "one" }])).status).toBe(201);
      const before = await newSession("steady");
      const refused = await deploy("steady", [claude, { path: "x", content: "two" }, { path: "x/y" }]);
      expect(refused.status).toBe(400);
      expect((await (await server.api("/api/agents/steady")).json()).agent.version).toBe(1);
      expect(await readFile(join(server.dataDir, "agents/steady/x"), "utf8")).toBe("one");
      // No staging or leftover folders.
      expect((await readdir(join(server.dataDir, "agents"))).filter((n) => n.startsWith("."))).toEqual([]);
      await turn(before.id, "still there?");
      const after = await newSession("steady");
      await turn(after.id, "and a new one?");
      const ls = await server.api(`/api/sessions/${after.id}/exec`, { method: "POST", json: { command: "cat x" } });
      expect((await ls.json()).stdout).toBe("one");
      // A good redeploy still works.
      const next = await deploy("steady", [claude, { path: "x/y", content: "three" }]);
      expect(next.status).toBe(201);
      expect((await next.json()).agent.version).toBe(2);
      expect(await readFile(join(server.dataDir, "agents/steady/x/y"), "utf8")).toBe("three");
      await stillServes();
    });
  });

  describe("deeply nested JSON", () => {
    it("answers 400 to a 50 000-deep message content, and the session's next turn works", async () => {
      expect((await server.api("/api/agents", { method: "POST", json: agentUpload("deep") })).status).toBe(201);
      const session = await newSession("deep");
      const deep = `{"content":[{"type":"text","text":"hi","x":${"[".repeat(50_000)}${"]".repeat(50_000)}}]}`;
      const r = await server.api(`/api/sessions/${session.id}/messages`, { method: "POST", body: deep, headers: { "content-type": "application/json" } });
      expect(r.status).toBe(400);
      expect(await r.json()).toEqual({ error: expect.stringMatching(/deeper than 64/), statusCode: 400 });
      // Nothing was stored for it.
      const events = await (await server.api(`/api/sessions/${session.id}/events`)).json();
      expect(events.events).toEqual([]);
      await stillServes();
      await turn(session.id, "a normal message");
    });

    it("refuses deep nesting in every JSON body, but counts brackets inside strings as text", async () => {
      const deepObject = `{"name":"n","files":[],"env":${'{"a":'.repeat(100)}1${"}".repeat(100)}}`;
      expect((await server.api("/api/agents", { method: "POST", body: deepObject })).status).toBe(400);
      const deepArray = `{"agent":"deep","allowedTools":${"[".repeat(1000)}${"]".repeat(1000)}}`;
      expect((await server.api("/api/sessions", { method: "POST", body: deepArray })).status).toBe(400);
      const unclosed = "[".repeat(200_000);
      expect((await server.api("/api/sessions", { method: "POST", body: unclosed })).status).toBe(400);
      const session = await newSession("deep");
      // Content blocks pass extra fields through: 65 levels is refused, 64 is taken.
      const nested = (levels: number) => `{"content":[{"type":"text","text":"hi","meta":${"[".repeat(levels - 3)}${"]".repeat(levels - 3)}}]}`;
      const over = await server.api(`/api/sessions/${session.id}/messages`, { method: "POST", body: nested(65) });
      expect(over.status).toBe(400);
      expect((await over.json()).error).toMatch(/deeper than 64/);
      const atLimit = await server.api(`/api/sessions/${session.id}/messages`, { method: "POST", body: nested(64) });
      expect(atLimit.status).toBe(200);
      expect((await readEvents(atLimit)).at(-1)?.event).toBe("done");
      // Brackets in strings (with escaped quotes) are text, not nesting.
      const text = `[[[ \\" ${"[".repeat(5000)} {{{`;
      const events = await turn(session.id, text);
      expect(events.some((e) => e.event === "turn_complete")).toBe(true);
      await stillServes();
    });
  });

  describe("sequence numbers", () => {
    let sessionId: string;
    beforeAll(async () => {
      expect((await server.api("/api/agents", { method: "POST", json: agentUpload("seq") })).status).toBe(201);
      sessionId = (await newSession("seq")).id;
      await turn(sessionId, "make some events");
    });

    const odd = ["-0", "-1", "0x10", "1e3", " 5 ", "5 ", "+5", "1.0", "", "abc", "99999999999999999999", "9007199254740993", "٣"];

    // HTTP drops blanks around a header value (" 5 " arrives as "5"), and fetch sends only Latin-1.
    const oddHeaders = odd.filter((v) => v.trim() === v && /^[\x00-\xff]*$/.test(v));

    it.each(oddHeaders)("refuses Last-Event-ID %j with 400 naming the header", async (value) => {
      const r = await fetch(`${server.url}/api/sessions/${sessionId}/stream`, { headers: { authorization: `Bearer ${server.apiKey}`, "last-event-id": value } });
      expect(r.status).toBe(400);
      expect(await r.json()).toEqual({ error: expect.stringMatching(/Last-Event-ID/), statusCode: 400 });
      await stillServes();
    });

    it.each(odd)("refuses ?after=%j with 400 naming the parameter", async (value) => {
      for (const path of ["stream", "events", "messages"]) {
        const r = await server.api(`/api/sessions/${sessionId}/${path}?after=${encodeURIComponent(value)}`);
        expect(r.status).toBe(400);
        expect((await r.json()).error).toMatch(/"after"/);
      }
    });

    it("refuses a repeated query parameter with a 400 that names it", async () => {
      for (const path of [`/api/sessions/${sessionId}/events?type=text_delta&type=done`, `/api/sessions/${sessionId}/events?after=1&after=2`, "/api/sessions?status=active&status=ended", "/api/usage?agent=a&agent=b"]) {
        const r = await server.api(path);
        const body = await r.json();
        expect({ status: r.status, error: body.error }, path).toEqual({ status: 400, error: expect.stringMatching(/^The query parameter "\w+" was given more than once\.$/) });
      }
    });

    it("takes plain digits", async () => {
      const all = (await (await server.api(`/api/sessions/${sessionId}/events`)).json()).events;
      const last = all.at(-1).sequence as number;
      const r = await server.api(`/api/sessions/${sessionId}/events?after=${last - 1}&limit=10`);
      expect((await r.json()).events.map((e: any) => e.sequence)).toEqual([last]);
      const stream = await server.api(`/api/sessions/${sessionId}/stream`, { headers: { "last-event-id": String(last - 1) } });
      expect(stream.status).toBe(200);
      await stream.body?.cancel();
      await stillServes();
    });
  });

  describe("exec", () => {
    it("runs without the model key or any CLI setting, while the agent's own turn still gets its key", async () => {
      const agentKey = "sk-ant-agent-level-key-123";
      const deployed = await server.api("/api/agents", {
        method: "POST",
        json: agentUpload("keyed", {}, { env: { ANTHROPIC_API_KEY: agentKey, CLAUDE_CODE_EXTRA_SETTING: "s3cret", MY_SETTING: "visible" } }),
      });
      expect(deployed.status).toBe(201);
      const session = await newSession("keyed", { extraEnv: { ANTHROPIC_AUTH_TOKEN: "sk-session-token", SESSION_SETTING: "also-visible" } });
      const r = await server.api(`/api/sessions/${session.id}/exec`, { method: "POST", json: { command: "env" } });
      expect(r.status).toBe(200);
      const { stdout, exitCode } = await r.json();
      expect(exitCode).toBe(0);
      expect(stdout).not.toMatch(/^(ANTHROPIC_|CLAUDE_CODE_|CLAUDE_AGENT_SDK_)/m);
      expect(stdout).not.toContain(agentKey);
      expect(stdout).not.toContain("sk-ant-test-fake");
      expect(stdout).not.toContain("sk-session-token");
      expect(stdout).toMatch(/^MY_SETTING=visible$/m);
      expect(stdout).toMatch(/^SESSION_SETTING=also-visible$/m);

      const seen = model.requests.length;
      await turn(session.id, "do you have your key?");
      const calls = model.requests.slice(seen);
      expect(calls.length).toBeGreaterThan(0);
      // The CLI still reached the model with a credential.
      expect(calls.some((c) => c.headers["x-api-key"] === agentKey || String(c.headers.authorization ?? "").includes("sk-session-token"))).toBe(true);
    });
  });
});
