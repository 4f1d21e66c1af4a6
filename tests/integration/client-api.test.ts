import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AshApiError, AshClient, type StreamEvent } from "../../src/client";
import { startFakeModel } from "../fake-model/fake-model.mjs";
import { startTestServer, type TestServer } from "../helpers/server";

/** The typed client against the real server: shapes, paging, files and errors as a caller sees them. */

let model: Awaited<ReturnType<typeof startFakeModel>>;
let server: TestServer;
let client: AshClient;

const b64 = (content: string | Buffer) => Buffer.from(content).toString("base64");
const BLOB = Buffer.from([0, 0xff, 0x10, 0x80, 10]);

async function collect(events: AsyncIterable<StreamEvent>): Promise<StreamEvent[]> {
  const out: StreamEvent[] = [];
  for await (const event of events) out.push(event);
  return out;
}

beforeAll(async () => {
  model = await startFakeModel();
  server = await startTestServer({ modelUrl: model.url });
  client = new AshClient({ url: server.url, apiKey: server.apiKey });
  await client.deployAgent({
    name: "typed",
    files: [
      { path: "CLAUDE.md", content: b64("Be brief.") },
      { path: "data/readme.txt", content: b64("héllo\n") },
      { path: "data/blob.bin", content: b64(BLOB) },
    ],
    env: { TOKEN: "secret-value" },
  });
});

afterAll(async () => {
  await server?.dispose();
  await model?.close();
});

describe("AshClient against the server", () => {
  it("deploys, lists and reads agents, with env values hidden", async () => {
    const agent = await client.getAgent("typed");
    expect(agent).toMatchObject({ name: "typed", version: 1, env: { TOKEN: "***" } });
    expect((await client.listAgents()).map((a) => a.name)).toContain("typed");
    const again = await client.deployAgent({ name: "typed", files: [{ path: "CLAUDE.md", content: b64("Be brief.") }, { path: "data/readme.txt", content: b64("héllo\n") }, { path: "data/blob.bin", content: b64(BLOB) }] });
    expect(again.version).toBe(2);
  });

  it("streams a turn as typed events and stores the same events and the messages", async () => {
    const session = await client.createSession({ agent: "typed" });
    expect(session).toMatchObject({ agentName: "typed", status: "active" });
    const events = await collect(client.sendMessage(session.id, "#bash cat data/readme.txt", { includePartialMessages: true }));

    const tool = events.find((e) => e.type === "tool_use");
    expect(tool?.type === "tool_use" && tool.data).toMatchObject({ name: "Bash", input: { command: "cat data/readme.txt" } });
    const result = events.find((e) => e.type === "tool_result");
    expect(result?.type === "tool_result" && result.data.is_error).toBe(false);
    const complete = events.find((e) => e.type === "turn_complete");
    expect(complete?.type === "turn_complete" && complete.data).toMatchObject({ numTurns: 2, result: "Tool result: héllo" });

    const stored = await client.listEvents(session.id, { limit: 1000 });
    expect(stored.map((e) => [e.id, e.type])).toEqual(events.map((e) => [e.id, e.type]));
    expect((await client.listEvents(session.id, { type: "tool_use" })).map((e) => e.id)).toEqual([tool!.id]);

    const messages = await client.listMessages(session.id);
    expect(messages[0]).toMatchObject({ role: "user", kind: "user", data: "#bash cat data/readme.txt", sessionId: session.id });
    expect(JSON.parse(messages[0]!.content)).toEqual({ type: "user", content: "#bash cat data/readme.txt" });
    expect(messages.map((m) => m.kind)).toContain("assistant");
  });

  it("reads workspace files as bytes, text and binary alike", async () => {
    const session = await client.createSession({ agent: "typed" });
    const listing = await client.listFiles(session.id);
    expect(listing.files.map((f) => f.path).sort()).toEqual(["CLAUDE.md", "data/blob.bin", "data/readme.txt"]);
    expect((await client.readFile(session.id, "data/readme.txt")).text()).toBe("héllo\n");
    expect(Buffer.from((await client.readFile(session.id, "/data/blob.bin")).content).equals(BLOB)).toBe(true);

    const missing = await client.readFile(session.id, "data/none.txt").catch((e) => e);
    expect(missing).toBeInstanceOf(AshApiError);
    expect(missing.statusCode).toBe(404);
  });

  it("runs commands, forks and ends sessions", async () => {
    const session = await client.createSession({ agent: "typed" });
    expect(await client.exec(session.id, "echo made > made.txt && cat made.txt; exit 4")).toMatchObject({ exitCode: 4, stdout: "made\n", stderr: "" });

    const fork = await client.forkSession(session.id);
    expect(fork.id).not.toBe(session.id);
    expect(fork.parentSessionId).toBe(session.id);
    expect((await client.readFile(fork.id, "made.txt")).text()).toBe("made\n");

    const ended = await client.endSession(session.id);
    expect(ended.status).toBe("ended");
    const gone = await collect(client.sendMessage(session.id, "hello?")).catch((e) => e);
    expect(gone).toBeInstanceOf(AshApiError);
    expect(gone.statusCode).toBe(410);
    expect(gone.message).toMatch(/ended/);
  });

  it("refuses a second turn while one runs, with 409", async () => {
    const session = await client.createSession({ agent: "typed" });
    const first = client.sendMessage(session.id, "#slow 3000");
    const started = await first.next();
    expect(started.value?.type).toBe("session_start");
    const second = await collect(client.sendMessage(session.id, "me too")).catch((e) => e);
    expect(second).toBeInstanceOf(AshApiError);
    expect(second.statusCode).toBe(409);
    const rest = [started.value!, ...(await collect({ [Symbol.asyncIterator]: () => first }))];
    expect(rest.at(-1)!.type).toBe("done");
  });

  it("pages through sessions with the cursor", async () => {
    await client.deployAgent({ name: "paged", files: [{ path: "CLAUDE.md", content: b64("x") }] });
    const made = new Set<string>();
    for (let i = 0; i < 5; i++) made.add((await client.createSession({ agent: "paged" })).id);

    const page = await client.listSessions({ agent: "paged", limit: 2 });
    expect(page.sessions).toHaveLength(2);
    expect(page.nextCursor).toEqual(expect.any(String));
    const next = await client.listSessions({ agent: "paged", limit: 2, cursor: page.nextCursor! });
    expect(next.sessions.map((s) => s.id)).not.toContain(page.sessions[0].id);

    const all: string[] = [];
    for await (const session of client.allSessions({ agent: "paged", limit: 2 })) all.push(session.id);
    expect(all).toHaveLength(5);
    expect(new Set(all)).toEqual(made);
  });

  it("throws AshApiError with the server's sentence for bad input and unknown things", async () => {
    const badName = await client.deployAgent({ name: "no spaces allowed", files: [{ path: "CLAUDE.md", content: b64("x") }] }).catch((e) => e);
    expect(badName).toBeInstanceOf(AshApiError);
    expect(badName.statusCode).toBe(400);
    expect(badName.message).toMatch(/name/);

    const noPrompt = await client.deployAgent({ name: "empty", files: [{ path: "README.md", content: b64("x") }] }).catch((e) => e);
    expect(noPrompt.statusCode).toBe(422);
    expect(noPrompt.message).toMatch(/CLAUDE\.md/);

    const unknown = await client.getSession("does-not-exist").catch((e) => e);
    expect(unknown).toBeInstanceOf(AshApiError);
    expect(unknown.statusCode).toBe(404);
    expect(unknown.request).toBe("GET /api/sessions/does-not-exist");

    const wrongKey = await new AshClient({ url: server.url, apiKey: "wrong" }).listAgents().catch((e) => e);
    expect(wrongKey.statusCode).toBe(401);
  });
});
