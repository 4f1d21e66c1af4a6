import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { agentUpload, readEvents, startTestServer, type TestServer } from "../helpers/server";
import { startFakeModel } from "../fake-model/fake-model.mjs";
import { ashInProcess } from "../helpers/cli";
import { AshClient } from "../../src/client";

// Every completed turn is a checkpoint (files + conversation); a session can be
// forked at any checkpoint or rewound to one. The fake model's echo says how
// many user text messages the model saw, which proves what the conversation holds.
describe("checkpoints, fork at a turn, rewind", () => {
  let server: TestServer;
  let model: Awaited<ReturnType<typeof startFakeModel>>;

  beforeAll(async () => {
    model = await startFakeModel();
    server = await startTestServer({ modelUrl: model.url });
    expect((await server.api("/api/agents", { method: "POST", json: agentUpload("keeper") })).status).toBe(201);
  });
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
  });

  const newSession = async () => (await (await server.api("/api/sessions", { method: "POST", json: { agent: "keeper" } })).json()).session as { id: string };
  const turn = async (id: string, content: string) => {
    const r = await server.api(`/api/sessions/${id}/messages`, { method: "POST", json: { content } });
    expect(r.status).toBe(200);
    const events = await readEvents(r);
    expect(events.at(-1)?.event).toBe("done");
    expect(events.filter((e) => e.event === "error")).toEqual([]);
    return events;
  };
  const echo = (events: Array<{ event: string; data: any }>) => events.find((e) => e.event === "turn_complete")?.data.result as string;
  const file = async (id: string, path: string) => {
    const r = await server.api(`/api/sessions/${id}/files/${path}`);
    return r.status === 200 ? await r.text() : `(${r.status})`;
  };
  const checkpoints = async (id: string) => (await (await server.api(`/api/sessions/${id}/checkpoints`)).json()).checkpoints as any[];

  let sessionId: string;

  it("records a checkpoint per completed turn with its prompt and what changed", async () => {
    sessionId = (await newSession()).id;
    expect(await checkpoints(sessionId)).toEqual([]);
    await turn(sessionId, "#bash echo one > state.txt");
    await turn(sessionId, "#bash echo two > state.txt && echo extra > extra.txt");
    expect(echo(await turn(sessionId, "what now"))).toContain("[turns seen: 3]");

    const list = await checkpoints(sessionId);
    expect(list.map((c) => [c.checkpoint, c.turn, c.parent, c.rewound])).toEqual([
      [1, 1, null, false],
      [2, 2, 1, false],
      [3, 3, 2, false],
    ]);
    expect(list.map((c) => c.prompt)).toEqual(["#bash echo one > state.txt", "#bash echo two > state.txt && echo extra > extra.txt", "what now"]);
    expect(list[0].filesChanged).toBeGreaterThanOrEqual(1);
    expect(list[1].filesChanged).toBeGreaterThanOrEqual(2);
    expect(list[1].fileCount).toBe(list[0].fileCount + 1);
    expect(Date.parse(list[2].createdAt)).toBeGreaterThanOrEqual(Date.parse(list[0].createdAt));
  });

  it("saves a turn that changed nothing, or only edited a file in place, by listing what changed since the last save", async () => {
    const metric = async (listed: string) => {
      const text = await (await server.api("/metrics")).text();
      return Number(new RegExp(`^ash_snapshot_saves_total\\{listed="${listed}"\\} (\\d+)`, "m").exec(text)?.[1]);
    };
    const id = (await newSession()).id;
    // The file is made well before its turn's save begins (past the margin a later save lists changes from).
    await turn(id, "#bash echo one > kept.txt && sleep 0.5");
    const before = await metric("changes");
    await turn(id, "nothing to do");
    expect(await metric("changes")).toBe(before + 1);
    // Edited in place between turns: the next save lists that file only, and reads it.
    const exec = await server.api(`/api/sessions/${id}/exec`, { method: "POST", json: { command: "printf two > kept.txt" } });
    expect((await exec.json()).exitCode).toBe(0);
    await turn(id, "still nothing");
    expect(await metric("changes")).toBe(before + 2);
    // A new folder: listed whole (the first save listed its folders after its tar stream); a file added in it later is listed with the folder's entries.
    const sh = async (command: string) => expect((await (await server.api(`/api/sessions/${id}/exec`, { method: "POST", json: { command } })).json()).exitCode).toBe(0);
    // Made well before the next turn's save begins (past the margin): the save after reads only what comes later.
    await sh("mkdir sub && echo a > sub/a.txt && sleep 0.5");
    const everything = await metric("everything");
    await turn(id, "a folder appeared");
    expect(await metric("changes")).toBe(before + 3);
    await sh("echo b > sub/b.txt");
    await turn(id, "a file appeared in it");
    expect(await metric("changes")).toBe(before + 4);
    expect(await metric("everything")).toBe(everything);
    const list = await checkpoints(id);
    // Files whose bytes changed, each counted once: a file written just before a save is read again by
    // the next one (its change time is within the margin) but is not counted there again.
    expect(list.map((c) => c.filesChanged).slice(1), JSON.stringify(list)).toEqual([0, 1, 1, 1]);
    // What each checkpoint holds is what the workspace held after its turn.
    for (const [checkpoint, path, text] of [[2, "kept.txt", "one\n"], [3, "kept.txt", "two"], [4, "sub/b.txt", "(404)"], [5, "sub/b.txt", "b\n"]] as const) {
      const fork = await (await server.api(`/api/sessions/${id}/fork`, { method: "POST", json: { checkpoint } })).json();
      expect(await file(fork.session.id, path)).toBe(text);
    }
  });

  it("forks at a checkpoint: the files and the conversation as after that turn", async () => {
    const r = await server.api(`/api/sessions/${sessionId}/fork`, { method: "POST", json: { checkpoint: 1 } });
    expect(r.status).toBe(201);
    const fork = (await r.json()).session;
    expect(fork.parentSessionId).toBe(sessionId);
    expect(await file(fork.id, "state.txt")).toBe("one\n");
    expect(await file(fork.id, "extra.txt")).toBe("(404)");
    expect((await checkpoints(fork.id)).map((c) => c.checkpoint)).toEqual([1]);
    // Turn 1's message plus this one: the model sees two user messages, not four.
    expect(echo(await turn(fork.id, "and here?"))).toContain("[turns seen: 2]");
    expect(await file(fork.id, "state.txt")).toBe("one\n");
    const forkHistory = (await (await server.api(`/api/sessions/${fork.id}/messages?limit=500`)).json()).messages as any[];
    expect(forkHistory.filter((m) => m.kind === "user").map((m) => m.data)).toEqual(["#bash echo one > state.txt", "and here?"]);
    // The parent goes on untouched.
    expect(await file(sessionId, "state.txt")).toBe("two\n");
  });

  it("rewinds: files and memory as after the turn, later history kept and marked", async () => {
    const r = await server.api(`/api/sessions/${sessionId}/rewind`, { method: "POST", json: { checkpoint: 2 } });
    expect(r.status).toBe(200);
    expect((await r.json()).session.status).toBe("paused");
    expect(await file(sessionId, "state.txt")).toBe("two\n");
    expect(echo(await turn(sessionId, "after the rewind"))).toContain("[turns seen: 3]");

    const list = await checkpoints(sessionId);
    expect(list.map((c) => [c.checkpoint, c.turn, c.parent, c.rewound])).toEqual([
      [1, 1, null, false],
      [2, 2, 1, false],
      [3, 3, 2, true],
      [4, 3, 2, false],
    ]);
    const history = (await (await server.api(`/api/sessions/${sessionId}/messages?limit=500`)).json()).messages as any[];
    const users = history.filter((m) => m.kind === "user");
    expect(users.map((m) => [m.data, Boolean(m.rewound)])).toEqual([
      ["#bash echo one > state.txt", false],
      ["#bash echo two > state.txt && echo extra > extra.txt", false],
      ["what now", true],
      ["after the rewind", false],
    ]);
    const events = (await (await server.api(`/api/sessions/${sessionId}/events?type=rewound`)).json()).events as any[];
    expect(events.map((e) => e.data)).toEqual([{ sessionId, checkpoint: 2, turn: 2 }]);
  });

  it("rewinds to the first turn after files changed by exec, and back onto a fork of a rewound checkpoint", async () => {
    const exec = await server.api(`/api/sessions/${sessionId}/exec`, { method: "POST", json: { command: "echo later > later.txt" } });
    expect(exec.status).toBe(200);
    expect((await server.api(`/api/sessions/${sessionId}/rewind`, { method: "POST", json: { checkpoint: 1 } })).status).toBe(200);
    expect(await file(sessionId, "later.txt")).toBe("(404)");
    expect(await file(sessionId, "state.txt")).toBe("one\n");
    expect(echo(await turn(sessionId, "once more"))).toContain("[turns seen: 2]");
    // The exec's files were saved as a checkpoint of their own before the rewind left them.
    const list = await checkpoints(sessionId);
    expect(list.map((c) => [c.checkpoint, c.turn, c.parent, c.rewound, c.prompt])).toEqual([
      [1, 1, null, false, "#bash echo one > state.txt"],
      [2, 2, 1, true, "#bash echo two > state.txt && echo extra > extra.txt"],
      [3, 3, 2, true, "what now"],
      [4, 3, 2, true, "after the rewind"],
      [5, 3, 4, true, null],
      [6, 2, 1, false, "once more"],
    ]);
    const kept = (await (await server.api(`/api/sessions/${sessionId}/fork`, { method: "POST", json: { checkpoint: 5 } })).json()).session;
    expect(await file(kept.id, "later.txt")).toBe("later\n");
    // Checkpoint 3 was rewound away earlier; a fork still reaches it.
    const fork = (await (await server.api(`/api/sessions/${sessionId}/fork`, { method: "POST", json: { checkpoint: 3 } })).json()).session;
    expect(await file(fork.id, "extra.txt")).toBe("extra\n");
    expect(echo(await turn(fork.id, "back on the old line"))).toContain("[turns seen: 4]");
  });

  it("refuses bad rewinds and forks with a clear error and changes nothing", async () => {
    const before = await checkpoints(sessionId);
    const cases: Array<[string, unknown, number, RegExp]> = [
      ["rewind", { checkpoint: 99 }, 404, /no checkpoint 99.*checkpoints are 1 to/i],
      ["rewind", { checkpoint: 3 }, 409, /rewound away.*fork/i],
      ["rewind", { checkpoint: 0 }, 400, /checkpoint/],
      ["rewind", { checkpoint: "2" }, 400, /checkpoint/],
      ["rewind", {}, 400, /checkpoint/],
      ["rewind", { checkpoint: 1, extra: true }, 400, /extra/],
      ["fork", { checkpoint: 1.5 }, 400, /checkpoint/],
      ["fork", { checkpoint: 42 }, 404, /no checkpoint 42/i],
    ];
    for (const [action, json, status, message] of cases) {
      const r = await server.api(`/api/sessions/${sessionId}/${action}`, { method: "POST", json });
      expect([action, json, r.status]).toEqual([action, json, status]);
      expect((await r.json()).error).toMatch(message);
    }
    expect(await checkpoints(sessionId)).toEqual(before);
    expect((await server.api(`/api/sessions/00000000-0000-4000-8000-000000000000/checkpoints`)).status).toBe(404);
    expect(await file(sessionId, "state.txt")).toBe("one\n");
  });

  it("a session without turns has no checkpoints to rewind to; an ended one cannot rewind", async () => {
    const fresh = (await newSession()).id;
    const r = await server.api(`/api/sessions/${fresh}/rewind`, { method: "POST", json: { checkpoint: 1 } });
    expect(r.status).toBe(404);
    expect((await r.json()).error).toMatch(/none yet/);
    await turn(fresh, "hello");
    expect((await server.api(`/api/sessions/${fresh}`, { method: "DELETE" })).status).toBe(200);
    expect((await server.api(`/api/sessions/${fresh}/rewind`, { method: "POST", json: { checkpoint: 1 } })).status).toBe(410);
    // An ended session can still be forked at a checkpoint.
    expect((await server.api(`/api/sessions/${fresh}/fork`, { method: "POST", json: { checkpoint: 1 } })).status).toBe(201);
  });

  it("the CLI and the typed client list checkpoints, rewind and fork at one", async () => {
    const client = new AshClient({ url: server.url, apiKey: server.apiKey });
    const env = { ASH_SERVER_URL: server.url, ASH_API_KEY: server.apiKey };
    const id = (await newSession()).id;
    await turn(id, "#bash echo first > f.txt");
    await turn(id, "#bash echo second > f.txt");

    const listed = await ashInProcess(["session", "checkpoints", id], { env });
    expect(listed.code).toBe(0);
    const rows = listed.stdout.trim().split("\n");
    expect(rows[0]).toMatch(/^CHECKPOINT\s+TURN\s+WHEN\s+FILES\s+CHANGED\s+PROMPT$/);
    expect(rows.slice(1).map((r) => r.split(/\s+/)[0])).toEqual(["1", "2"]);
    expect(rows[2]).toContain("#bash echo second > f.txt");
    const json = JSON.parse((await ashInProcess(["session", "checkpoints", id, "--json"], { env })).stdout);
    expect(json).toEqual(await client.listCheckpoints(id));

    const forked = await ashInProcess(["session", "fork", id, "--checkpoint", "1"], { env });
    expect(forked.code).toBe(0);
    const forkId = forked.stdout.trim();
    expect(forked.stderr).toContain(`Forked from ${id} at checkpoint 1`);
    expect((await client.readFile(forkId, "f.txt")).text()).toBe("first\n");

    const rewound = await ashInProcess(["session", "rewind", id, "1"], { env });
    expect(rewound.code).toBe(0);
    expect(rewound.stdout).toContain(`Rewound session ${id} to checkpoint 1`);
    expect((await client.readFile(id, "f.txt")).text()).toBe("first\n");
    expect((await client.listCheckpoints(id)).map((c) => c.rewound)).toEqual([false, true]);
    expect((await client.listMessages(id)).filter((m) => m.rewound).length).toBeGreaterThan(0);

    // The client: fork at a checkpoint, rewind; errors as AshApiError with the server's sentence.
    const viaClient = await client.forkSession(id, { checkpoint: 2 });
    expect((await client.readFile(viaClient.id, "f.txt")).text()).toBe("second\n");
    expect((await client.rewindSession(viaClient.id, 1)).status).toBe("paused");
    await expect(client.rewindSession(id, 77)).rejects.toMatchObject({ statusCode: 404, message: expect.stringMatching(/no checkpoint 77/) });

    for (const [args, message] of [
      [["session", "rewind", id, "zero"], /whole number/],
      [["session", "rewind", id, "9"], /no checkpoint 9/],
      [["session", "fork", id, "--checkpoint", "-1"], /whole number/],
    ] as const) {
      const run = await ashInProcess([...args], { env });
      expect(run.code).not.toBe(0);
      expect(run.stderr).toMatch(message);
    }
  });
});
