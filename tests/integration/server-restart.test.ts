import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { agentUpload, parseFrames, readEvents, startTestServer, type TestServer } from "../helpers/server";
import { backends } from "../helpers/backends";
import { startFakeModel } from "../fake-model/fake-model.mjs";
import { countClaudeProcesses } from "../helpers/processes";
import { mkdir, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";

describe.each(backends)("restarts on $name", (backend) => {
  let server: TestServer;
  let model: Awaited<ReturnType<typeof startFakeModel>>;
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    model = await startFakeModel();
    const prepared = await backend.prepare();
    cleanup = prepared.cleanup;
    server = await startTestServer({ env: prepared.env, modelUrl: model.url });
    await server.api("/api/agents", { method: "POST", json: agentUpload("keeper") });
  });
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
    await cleanup?.();
  });

  const newSession = async () => (await (await server.api("/api/sessions", { method: "POST", json: { agent: "keeper" } })).json()).session;
  const turn = async (id: string, content: string) => readEvents(await server.api(`/api/sessions/${id}/messages`, { method: "POST", json: { content } }));
  const events = async (id: string) => (await (await server.api(`/api/sessions/${id}/events?limit=1000`)).json()).events;

  it("keeps sessions, messages and memory across a graceful restart", async () => {
    const session = await newSession();
    await turn(session.id, "the secret number is 4217");
    const before = await events(session.id);
    expect(await server.stop()).toBe(0);
    await server.restart();
    expect(await events(session.id)).toEqual(before);
    const after = await turn(session.id, "what was the number?");
    expect(after.map((e) => e.event)).toContain("turn_complete");
    expect(after[0]!.id).toBe(before.at(-1).sequence + 1);
    expect(model.userTexts()).toContain("the secret number is 4217");
  });

  it("loses nothing stored when killed -9 mid-turn, and closes the broken turn on restart", async () => {
    const session = await newSession();
    const r = await server.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "#slow 6000" } });
    const reader = r.body!.getReader();
    let seen = "";
    while (parseFrames(seen).filter((e) => e.event === "text_delta").length < 3) {
      const chunk = await reader.read();
      if (chunk.done) break;
      seen += new TextDecoder().decode(chunk.value);
    }
    const streamed = parseFrames(seen);
    await server.kill();
    await reader.cancel().catch(() => undefined);
    await server.restart();
    const stored = await events(session.id);
    // Every event a client saw is still there, in order, and the turn was closed.
    expect(stored.slice(0, streamed.length).map((e: any) => [e.sequence, e.type])).toEqual(streamed.map((e) => [e.id, e.event]));
    expect(stored.at(-2)).toMatchObject({ type: "error", data: { code: "server_restart" } });
    expect(stored.at(-1)).toMatchObject({ type: "done" });
    const next = await turn(session.id, "hello after the crash");
    expect(next.map((e) => e.event)).toContain("turn_complete");
  });

  it("keeps the files and the conversation of a completed turn through kill -9", async () => {
    const session = await newSession();
    await turn(session.id, "#bash echo survived > crash.txt");
    const sandboxId = (await (await server.api(`/api/sessions/${session.id}`)).json()).session.sandboxId;
    await server.kill();
    // The sandboxed CLI dies with the server (bounded wait).
    for (let i = 0; i < 50 && (await countClaudeProcesses(server.dataDir)) > 0; i++) await new Promise((r) => setTimeout(r, 100));
    expect(await countClaudeProcesses(server.dataDir)).toBe(0);
    // A folder the crashed run had put in the trash and not yet removed.
    await mkdir(join(server.dataDir, "trash", "left-by-a-crash.0a1b2c", "workspace"), { recursive: true });
    await writeFile(join(server.dataDir, "trash", "left-by-a-crash.0a1b2c", "workspace", "file.txt"), "left");
    await server.restart();
    // What the crashed run left is cleaned up at start.
    expect(await readdir(join(server.dataDir, "sandboxes"))).not.toContain(sandboxId);
    expect(await readdir(join(server.dataDir, "trash"))).toEqual([]);
    const file = await (await server.api(`/api/sessions/${session.id}/files/crash.txt?format=json`)).json();
    expect(file.content).toBe("survived\n");
    const next = await turn(session.id, "#bash cat crash.txt");
    expect(next.find((e) => e.event === "tool_result")?.data.content).toContain("survived");
    expect(model.userTexts().some((t) => t.includes("echo survived > crash.txt"))).toBe(true);
  });

  it("a kill -9 during a turn's save leaves the previous checkpoint whole, and the session wakes whole", async () => {
    const session = await newSession();
    await turn(session.id, "#bash mkdir -p tree && echo base > state.txt");
    // Each round: a turn that rewrites 1,500 files, the server killed as soon as the turn's
    // result is out (the save runs between it and `done`), at a point that moves each round.
    for (let round = 0; round < 3; round++) {
      const r = await server.api(`/api/sessions/${session.id}/messages`, {
        method: "POST",
        json: { content: `#bash for i in $(seq 1 1500); do echo r${round}-$i > tree/f$i; done; echo round-${round} > state.txt` },
      });
      const reader = r.body!.getReader();
      let seen = "";
      while (!parseFrames(seen).some((e) => e.event === "turn_complete" || e.event === "done")) {
        const chunk = await reader.read();
        if (chunk.done) break;
        seen += new TextDecoder().decode(chunk.value);
      }
      await new Promise((resolve) => setTimeout(resolve, round * 40));
      await server.kill();
      await reader.cancel().catch(() => undefined);
      await server.restart();

      // Every checkpoint listed restores exactly: the state file and all files of one round.
      const checkpoints = (await (await server.api(`/api/sessions/${session.id}/checkpoints`)).json()).checkpoints as Array<{ checkpoint: number }>;
      expect(checkpoints.length).toBeGreaterThanOrEqual(round + 1);
      const last = checkpoints.at(-1)!.checkpoint;
      const fork = (await (await server.api(`/api/sessions/${session.id}/fork`, { method: "POST", json: { checkpoint: last } })).json()).session;
      const check = await turn(fork.id, "#bash cat state.txt; cat tree/f* 2>/dev/null | cut -d- -f1 | sort | uniq -c");
      const out = String(check.find((e) => e.event === "tool_result")?.data.content ?? "");
      const state = /^(base|round-\d)$/m.exec(out)?.[1];
      expect(state).toBeDefined();
      if (state === "base") expect(out).not.toMatch(/ r\d\b/);
      else expect(out).toMatch(new RegExp(`^\\s*1500 r${state!.slice(6)}$`, "m"));
      // The session itself wakes with a whole state too.
      const own = await turn(session.id, "#bash cat state.txt");
      expect(String(own.find((e) => e.event === "tool_result")?.data.content)).toMatch(/^(base|round-\d)\n?$/);
    }
  });

  it("on SIGTERM ends the running turn cleanly, closes open streams and exits 0", async () => {
    const session = await newSession();
    const post = await server.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "#slow 60000" } });
    const postReader = post.body!.getReader();
    await postReader.read();
    const watcher = await server.api(`/api/sessions/${session.id}/stream`, { headers: { "last-event-id": "0" } });
    const watchReader = watcher.body!.getReader();
    await watchReader.read();

    const exit = server.stop();
    const drain = async (reader: ReadableStreamDefaultReader<Uint8Array>) => {
      let text = "";
      for (let c = await reader.read(); !c.done; c = await reader.read()) text += new TextDecoder().decode(c.value);
      return text;
    };
    const [postRest, watchRest, code] = await Promise.all([drain(postReader), drain(watchReader), exit]);
    expect(code).toBe(0);
    const tail = parseFrames(postRest);
    expect(tail.at(-1)?.event).toBe("done");
    expect(tail.find((e) => e.event === "error")?.data).toMatchObject({ code: "server_shutdown" });
    expect(parseFrames(watchRest).map((e) => e.event)).toContain("done");

    await server.restart();
    const stored = await events(session.id);
    expect(stored.at(-1).type).toBe("done");
    expect(stored.filter((e: any) => e.type === "done")).toHaveLength(1);
  });
});
