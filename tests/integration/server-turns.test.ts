import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { openDatabase } from "../../src/db/connect";
import { agentUpload, parseFrames, readEvents, readUntilDone, startTestServer, type TestServer } from "../helpers/server";
import { backends } from "../helpers/backends";
import { startFakeModel } from "../fake-model/fake-model.mjs";

describe.each(backends)("turns on $name", (backend) => {
  let server: TestServer;
  let model: Awaited<ReturnType<typeof startFakeModel>>;
  let cleanup: () => Promise<void>;
  let prepared: Awaited<ReturnType<typeof backend.prepare>>;

  beforeAll(async () => {
    model = await startFakeModel();
    prepared = await backend.prepare();
    cleanup = prepared.cleanup;
    server = await startTestServer({ env: prepared.env, modelUrl: model.url });
    expect((await server.api("/api/agents", { method: "POST", json: agentUpload("worker", { "data/seed.txt": "seed-content" }) })).status).toBe(201);
  });
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
    await cleanup?.();
  });

  const newSession = async (extra: Record<string, unknown> = {}) => {
    const r = await server.api("/api/sessions", { method: "POST", json: { agent: "worker", ...extra } });
    expect(r.status).toBe(201);
    return (await r.json()).session as { id: string; status: string; sandboxId: string };
  };
  const send = (id: string, content: string, extra: Record<string, unknown> = {}) =>
    server.api(`/api/sessions/${id}/messages`, { method: "POST", json: { content, ...extra } });
  const sendAndRead = async (id: string, content: string) => {
    const r = await send(id, content);
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toMatch(/text\/event-stream/);
    return readEvents(r);
  };

  it("streams a turn where the real CLI runs a tool in the workspace", async () => {
    const session = await newSession();
    expect(session.status).toBe("active");
    const events = await sendAndRead(session.id, "#bash cat data/seed.txt && echo made > out.txt");
    const types = events.map((e) => e.event);
    expect(types[0]).toBe("session_start");
    expect(types.at(-1)).toBe("done");
    expect(types).toContain("tool_use");
    expect(types).toContain("turn_complete");
    const ids = events.map((e) => e.id);
    expect(ids).toEqual([...ids].sort((a, b) => a - b));
    expect(new Set(ids).size).toBe(ids.length);
    const toolUse = events.find((e) => e.event === "tool_use")!;
    expect(toolUse.data).toMatchObject({ name: "Bash", input: { command: expect.stringContaining("seed.txt") } });
    const toolResult = events.find((e) => e.event === "tool_result")!;
    expect(toolResult.data).toMatchObject({ tool_use_id: toolUse.data.id, is_error: false });
    expect(JSON.stringify(toolResult.data.content)).toContain("seed-content");
    expect(events.filter((e) => e.event === "text_delta").map((e) => e.data.delta).join("")).toContain("Tool result: seed-content");
    expect(events.some((e) => e.event === "message" && e.data.type === "result")).toBe(true);

    const file = await (await server.api(`/api/sessions/${session.id}/files/out.txt?format=json`)).json();
    expect(file).toMatchObject({ path: "out.txt", content: "made\n" });
    const exec = await (await server.api(`/api/sessions/${session.id}/exec`, { method: "POST", json: { command: "cat out.txt; exit 3" } })).json();
    expect(exec).toMatchObject({ exitCode: 3, stdout: "made\n" });

    const archive = await server.api(`/api/sessions/${session.id}/workspace`);
    expect(archive.status).toBe(200);
    expect(archive.headers.get("content-type")).toBe("application/gzip");
    const listed = execFileSync("tar", ["tz"], { input: Buffer.from(await archive.arrayBuffer()) }).toString();
    expect(listed).toMatch(/out\.txt/);
    expect(listed).toMatch(/data\/seed\.txt/);

    const stored = (await (await server.api(`/api/sessions/${session.id}/events`)).json()).events;
    expect(stored.map((e: any) => e.sequence)).toEqual(ids);
    const history = (await (await server.api(`/api/sessions/${session.id}/messages`)).json()).messages;
    expect(history[0]).toMatchObject({ role: "user", kind: "user", data: expect.stringContaining("#bash") });
    // The original API's row: content is the SDK message as a JSON string.
    expect(JSON.parse(history[0].content)).toEqual({ type: "user", content: history[0].data });
    expect(history.map((m: any) => m.kind)).toEqual(expect.arrayContaining(["assistant", "tool", "result"]));
    expect(new Set(history.map((m: any) => m.role))).toEqual(new Set(["user", "assistant"]));
  });

  it("remembers earlier turns (the model receives them)", async () => {
    const session = await newSession();
    await sendAndRead(session.id, "my favourite colour is teal");
    const events = await sendAndRead(session.id, "what did I say?");
    const text = events.filter((e) => e.event === "text_delta").map((e) => e.data.delta).join("");
    expect(text).toContain("[turns seen: 2]");
    expect(model.userTexts()).toContain("my favourite colour is teal");
  });

  it("starts a new conversation when none of the stored one's lines are (an agent stopped just after naming it), instead of failing every turn", async () => {
    const session = await newSession();
    await sendAndRead(session.id, "a first turn");
    expect((await (await server.api(`/api/sessions/${session.id}/stop`, { method: "POST" })).json()).session.status).toBe("stopped");
    // What a crash right after the agent named its conversation leaves: the id, and not one line of it.
    const db = await openDatabase({ url: backend.name === "postgres" ? prepared.env.ASH_DATABASE_URL : undefined, dataDir: server.dataDir });
    try {
      await db.run("UPDATE sessions SET sdk_session_id = ? WHERE id = ?", [randomUUID(), session.id]);
    } finally {
      await db.close();
    }
    for (const [content, seen] of [["after the crash", 1], ["and again", 2]] as const) {
      const events = await sendAndRead(session.id, content);
      expect(events.find((e) => e.event === "error")?.data).toBeUndefined();
      const text = events.filter((e) => e.event === "text_delta").map((e) => e.data.delta).join("");
      expect(text).toContain(`Echo: ${content} [turns seen: ${seen}]`);
    }
  });

  it("refuses a second turn while one runs (409), and interrupt stops it", async () => {
    const session = await newSession();
    const first = await send(session.id, "#slow 20000");
    const reader = first.body!.getReader();
    await reader.read();
    const second = await send(session.id, "me too");
    expect(second.status).toBe(409);
    expect((await second.json()).error).toMatch(/already running/);
    const interrupted = await server.api(`/api/sessions/${session.id}/interrupt`, { method: "POST" });
    expect(await interrupted.json()).toEqual({ interrupted: true });
    let rest = "";
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) rest += new TextDecoder().decode(chunk.value);
    const tail = parseFrames(rest);
    expect(tail.at(-1)?.event).toBe("done");
    expect(tail.find((e) => e.event === "error")?.data).toMatchObject({ code: "interrupted" });
    // Still usable afterwards.
    const after = await sendAndRead(session.id, "still there?");
    expect(after.map((e) => e.event)).toContain("turn_complete");
  });

  it("ends a turn with model_error when the model answers 500, and stays usable", async () => {
    const session = await newSession();
    const events = await sendAndRead(session.id, "#fail 500");
    expect(events.find((e) => e.event === "error")?.data).toMatchObject({ code: "model_error" });
    expect(events.at(-1)?.event).toBe("done");
    const next = await sendAndRead(session.id, "hello again");
    expect(next.map((e) => e.event)).toContain("turn_complete");
  });

  it("keeps running a turn whose client went away; a reconnect replays it with Last-Event-ID", async () => {
    const session = await newSession();
    const controller = new AbortController();
    const r = await server.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "#slow 1500" }, signal: controller.signal });
    const reader = r.body!.getReader();
    const firstChunk = new TextDecoder().decode((await reader.read()).value);
    const seen = parseFrames(firstChunk);
    const lastId = seen.at(-1)!.id;
    controller.abort();

    const replay = await server.api(`/api/sessions/${session.id}/stream`, { headers: { "last-event-id": String(lastId) } });
    expect(replay.status).toBe(200);
    const rest = await readUntilDone(replay);
    expect(rest[0]!.id).toBe(lastId + 1);
    expect(rest.map((e) => e.event)).toContain("turn_complete");
    const all = (await (await server.api(`/api/sessions/${session.id}/events?limit=1000`)).json()).events;
    expect(all.map((e: any) => e.sequence)).toEqual([...seen, ...rest].map((e) => e.id));
  });

  it("pauses, resumes, stops, forks and ends a session", async () => {
    const session = await newSession();
    await sendAndRead(session.id, "#bash echo kept > kept.txt");
    await sendAndRead(session.id, "remember the word pineapple");

    const paused = (await (await server.api(`/api/sessions/${session.id}/pause`, { method: "POST" })).json()).session;
    expect(paused).toMatchObject({ status: "paused", sandboxId: null });
    // Files of a paused session come from its snapshot.
    expect((await (await server.api(`/api/sessions/${session.id}/files/kept.txt?format=json`)).json()).content).toBe("kept\n");
    const resumed = (await (await server.api(`/api/sessions/${session.id}/resume`, { method: "POST" })).json()).session;
    expect(resumed.status).toBe("active");
    expect(resumed.sandboxId).toBeTruthy();

    const stopped = (await (await server.api(`/api/sessions/${session.id}/stop`, { method: "POST" })).json()).session;
    expect(stopped.status).toBe("stopped");
    // A message to a stopped session resumes it, with its memory and files.
    const events = await sendAndRead(session.id, "#bash cat kept.txt");
    expect(events.find((e) => e.event === "tool_result")?.data.content).toContain("kept");
    expect(model.userTexts()).toContain("remember the word pineapple");

    const forkRes = await server.api(`/api/sessions/${session.id}/fork`, { method: "POST" });
    expect(forkRes.status).toBe(201);
    const fork = (await forkRes.json()).session;
    expect(fork).toMatchObject({ parentSessionId: session.id, agentName: "worker" });
    const forkEvents = await sendAndRead(fork.id, "#bash cat kept.txt");
    expect(forkEvents.find((e) => e.event === "tool_result")?.data.content).toContain("kept");
    expect(model.userTexts()).toContain("remember the word pineapple");

    const ended = (await (await server.api(`/api/sessions/${session.id}`, { method: "DELETE" })).json()).session;
    expect(ended.status).toBe("ended");
    const gone = await send(session.id, "hello?");
    expect(gone.status).toBe(410);
    expect((await server.api(`/api/sessions/${session.id}/resume`, { method: "POST" })).status).toBe(410);
    // History is kept.
    expect((await (await server.api(`/api/sessions/${session.id}/messages`)).json()).messages.length).toBeGreaterThan(3);
    // The fork lives on independently.
    expect((await (await server.api(`/api/sessions/${fork.id}`)).json()).session.status).toBe("active");
  });

  it("sends raw partial messages as message frames only when asked for in so many words", async () => {
    const session = await newSession();
    const rawPartials = (events: Array<{ event: string; data: any }>) => events.filter((e) => e.event === "message" && e.data?.type === "stream_event");
    const byDefault = await readEvents(await send(session.id, "plain"));
    expect(byDefault.some((e) => e.event === "text_delta")).toBe(true);
    expect(rawPartials(byDefault)).toEqual([]);
    const asked = await readEvents(await send(session.id, "with partials", { includePartialMessages: true }));
    const raw = rawPartials(asked);
    expect(raw.length).toBeGreaterThan(0);
    // The raw form carries the same text the deltas do.
    const rawText = raw.map((e) => (e.data.event?.delta?.type === "text_delta" ? e.data.event.delta.text : "")).join("");
    const deltaText = asked.filter((e) => e.event === "text_delta").map((e) => e.data.delta).join("");
    expect(rawText).toBe(deltaText);
    const none = await readEvents(await send(session.id, "no partials", { includePartialMessages: false }));
    expect(none.filter((e) => e.event === "text_delta" || (e.event === "message" && e.data?.type === "stream_event"))).toEqual([]);
  });

  it("rejects bad message bodies without starting a turn", async () => {
    const session = await newSession();
    for (const body of [{}, { content: "" }, { content: 5 }, { content: "x", maxTurns: "3" }, { content: "x", extra: 1 }]) {
      const r = await server.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: body });
      expect(r.status).toBe(400);
    }
    const events = (await (await server.api(`/api/sessions/${session.id}/events`)).json()).events;
    expect(events).toEqual([]);
  });

  it("lists sessions newest first with a working cursor", async () => {
    const page1 = await (await server.api("/api/sessions?agent=worker&limit=2")).json();
    expect(page1.sessions).toHaveLength(2);
    expect(page1.nextCursor).toBeTruthy();
    const page2 = await (await server.api(`/api/sessions?agent=worker&limit=2&cursor=${page1.nextCursor}`)).json();
    const ids1 = page1.sessions.map((s: any) => s.id);
    expect(page2.sessions.every((s: any) => !ids1.includes(s.id))).toBe(true);
    const ended = await (await server.api("/api/sessions?status=ended")).json();
    expect(ended.sessions.every((s: any) => s.status === "ended")).toBe(true);
  });
});

describe("a model that never answers", () => {
  it("ends the turn with model_timeout, and the session stays usable", async () => {
    const model = await startFakeModel();
    const server = await startTestServer({ modelUrl: model.url, env: { ASH_TURN_IDLE_TIMEOUT_MS: "4000" } });
    try {
      await server.api("/api/agents", { method: "POST", json: agentUpload("silent") });
      const { session } = await (await server.api("/api/sessions", { method: "POST", json: { agent: "silent" } })).json();
      // Let the CLI start first, so the timeout is about the model only.
      await readEvents(await server.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "warm up" } }));
      const events = await readEvents(await server.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "#hang" } }));
      expect(events.find((e) => e.event === "error")?.data, JSON.stringify(events)).toMatchObject({ code: "model_timeout" });
      expect(events.at(-1)?.event).toBe("done");
      const next = await readEvents(await server.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "are you back?" } }));
      expect(next.map((e) => e.event), JSON.stringify(next)).toContain("turn_complete");
    } finally {
      await server.dispose();
      await model.close();
    }
  });
});
