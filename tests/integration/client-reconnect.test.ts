import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { AshClient, AshStreamError, type StreamEvent } from "../../src/client";
import { startFakeModel } from "../fake-model/fake-model.mjs";
import { agentUpload, startTestServer, type TestServer } from "../helpers/server";

/**
 * A streamed turn that loses its connection: a TCP proxy between client and the real server
 * cuts the `POST …/messages` response part-way (or then stops accepting connections), and the
 * client must pick the turn up with `Last-Event-ID` without losing or repeating an event.
 */

const ROOT = resolve(import.meta.dirname, "../..");
const SLOW_TEXT = `Slow answer ${"word ".repeat(40).trim()}`;

/** Forwards TCP to the server; can cut one message stream after some text deltas. */
class CuttingProxy {
  /** Request lines seen, with the Last-Event-ID each carried. */
  readonly requests: { line: string; lastEventId?: string }[] = [];
  cuts = 0;
  url = "";
  private server?: Server;
  private cutAfter?: number;
  private closeAfterCut = false;
  private readonly sockets = new Set<Socket>();

  constructor(private readonly port: number) {}

  async start(): Promise<void> {
    this.server = createServer((client) => this.connect(client));
    await new Promise<void>((done) => this.server!.listen(0, "127.0.0.1", done));
    this.url = `http://127.0.0.1:${(this.server.address() as { port: number }).port}`;
  }

  /** The next message stream is cut after `deltas` text deltas have gone through. */
  arm(deltas: number, options: { closeAfterCut?: boolean } = {}): void {
    this.cutAfter = deltas;
    this.closeAfterCut = options.closeAfterCut ?? false;
  }

  async stop(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    if (this.server?.listening) await new Promise((done) => this.server!.close(done));
  }

  private connect(client: Socket): void {
    const upstream = createConnection(this.port, "127.0.0.1");
    this.sockets.add(client).add(upstream);
    let request = "";
    let deltas = 0;
    client.on("data", (chunk) => {
      const head = /^(GET|POST|PUT|PATCH|DELETE) (\S+) HTTP\/1\.1\r\n([\s\S]*?)\r\n\r\n/.exec(chunk.toString("latin1"));
      if (head) {
        request = `${head[1]} ${head[2]}`;
        deltas = 0;
        const lastEventId = /^last-event-id: *(.*)$/im.exec(head[3])?.[1]?.trim();
        this.requests.push({ line: request, lastEventId });
      }
      upstream.write(chunk);
    });
    upstream.on("data", (chunk) => {
      client.write(chunk);
      if (this.cutAfter === undefined || !/^POST \/api\/sessions\/[^/]+\/messages$/.test(request)) return;
      deltas += chunk.toString("utf8").split("event: text_delta").length - 1;
      if (deltas < this.cutAfter) return;
      this.cutAfter = undefined;
      this.cuts++;
      client.destroy();
      upstream.destroy();
      if (this.closeAfterCut) this.server!.close();
    });
    const close = () => {
      client.destroy();
      upstream.destroy();
      this.sockets.delete(client);
      this.sockets.delete(upstream);
    };
    client.on("close", close).on("error", close);
    upstream.on("close", close).on("error", close);
  }
}

let model: Awaited<ReturnType<typeof startFakeModel>>;
let server: TestServer;
let proxy: CuttingProxy;

async function newSession(): Promise<string> {
  const answer = await server.api("/api/sessions", { method: "POST", json: { agent: "steady" } });
  expect(answer.status).toBe(201);
  return ((await answer.json()) as { session: { id: string } }).session.id;
}

/** What the server stored for the session: the truth the client must match. */
async function storedEvents(sessionId: string): Promise<{ sequence: number; type: string }[]> {
  const answer = (await (await server.api(`/api/sessions/${sessionId}/events?limit=1000`)).json()) as { events: { sequence: number; type: string }[] };
  return answer.events.map((e) => ({ sequence: e.sequence, type: e.type }));
}

const deltaText = (events: StreamEvent[]) => events.map((e) => (e.type === "text_delta" ? e.data.delta : "")).join("");

beforeAll(async () => {
  model = await startFakeModel();
  server = await startTestServer({ modelUrl: model.url });
  expect((await server.api("/api/agents", { method: "POST", json: agentUpload("steady") })).status).toBe(201);
});

afterEach(async () => {
  await proxy?.stop();
});

afterAll(async () => {
  await server?.dispose();
  await model?.close();
});

describe("a turn whose connection drops", () => {
  it("is picked up with Last-Event-ID: every stored event arrives exactly once, in order", async () => {
    proxy = new CuttingProxy(server.port);
    await proxy.start();
    const id = await newSession();
    const client = new AshClient({ url: proxy.url, apiKey: server.apiKey, reconnect: { initialDelayMs: 50 } });

    proxy.arm(5);
    const events: StreamEvent[] = [];
    for await (const event of client.sendMessage(id, "#slow 3000", { includePartialMessages: true })) events.push(event);

    expect(proxy.cuts).toBe(1);
    const reconnects = proxy.requests.filter((r) => r.line === `GET /api/sessions/${id}/stream`);
    expect(reconnects.length).toBeGreaterThanOrEqual(1);
    // The first reconnect asks for what follows the last event the client had.
    const resumedFrom = Number(reconnects[0].lastEventId);
    const beforeCut = events.filter((e) => e.id <= resumedFrom);
    expect(beforeCut.at(-1)!.id).toBe(resumedFrom);
    expect(beforeCut.filter((e) => e.type === "text_delta").length).toBeGreaterThanOrEqual(1);
    expect(events.at(-1)!.type).toBe("done");

    const stored = await storedEvents(id);
    expect(events.map((e) => ({ sequence: e.id, type: e.type }))).toEqual(stored);
    expect(deltaText(events)).toBe(SLOW_TEXT);
  });

  it("prints the whole answer once through `ash session send`", async () => {
    proxy = new CuttingProxy(server.port);
    await proxy.start();
    const id = await newSession();
    const home = await mkdtemp(join(tmpdir(), "ash-reconnect-home-"));
    proxy.arm(5);
    try {
      const run = await new Promise<{ code: number | null; stdout: string; stderr: string }>((done, fail) => {
        const child = spawn(process.execPath, ["--import", "tsx", join(ROOT, "src/cli/main.ts"), "session", "send", id, "#slow 3000", "--url", proxy.url], {
          cwd: ROOT,
          env: { PATH: process.env.PATH, HOME: home, NO_COLOR: "1", ASH_API_KEY: server.apiKey },
          stdio: ["ignore", "pipe", "pipe"],
        });
        let stdout = "";
        let stderr = "";
        child.stdout.on("data", (d) => (stdout += d));
        child.stderr.on("data", (d) => (stderr += d));
        const timer = setTimeout(() => {
          child.kill("SIGKILL");
          fail(new Error(`ash session send did not finish:\n${stdout}\n${stderr}`));
        }, 60_000);
        child.on("close", (code) => {
          clearTimeout(timer);
          done({ code, stdout, stderr });
        });
      });
      expect(proxy.cuts).toBe(1);
      expect(run.code).toBe(0);
      expect(run.stdout).toBe(SLOW_TEXT + "\n");
      expect(run.stderr).toMatch(/^1 turn · [\d,]+ tokens in · [\d,]+ out\n$/);
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  });

  it("gives up after its retries with the last event id, from which streamEvents finishes the turn", async () => {
    proxy = new CuttingProxy(server.port);
    await proxy.start();
    const id = await newSession();
    const client = new AshClient({ url: proxy.url, apiKey: server.apiKey, reconnect: { retries: 2, initialDelayMs: 20 } });

    proxy.arm(3, { closeAfterCut: true });
    const first: StreamEvent[] = [];
    const failure = await (async () => {
      for await (const event of client.sendMessage(id, "#slow 3000", { includePartialMessages: true })) first.push(event);
    })().catch((error) => error);

    expect(failure).toBeInstanceOf(AshStreamError);
    expect(failure.message).toMatch(/^The event stream broke and 2 reconnect attempts failed; the last event received was \d+\.$/);
    expect(failure.lastEventId).toBe(first.at(-1)!.id);
    expect(first.at(-1)!.type).not.toBe("done");

    // The turn went on without us; the server still has all of it.
    const direct = new AshClient({ url: server.url, apiKey: server.apiKey });
    const rest: StreamEvent[] = [];
    for await (const event of direct.streamEvents(id, { lastEventId: failure.lastEventId, untilDone: true })) rest.push(event);

    const all = [...first, ...rest];
    expect(all.map((e) => ({ sequence: e.id, type: e.type }))).toEqual(await storedEvents(id));
    expect(deltaText(all)).toBe(SLOW_TEXT);
  });
});

describe("streamEvents", () => {
  it("replays a finished turn from any event id, then follows the next turn live", async () => {
    const id = await newSession();
    const client = new AshClient({ url: server.url, apiKey: server.apiKey });
    const turn: StreamEvent[] = [];
    for await (const event of client.sendMessage(id, "first turn", { includePartialMessages: true })) turn.push(event);

    const middle = turn[Math.floor(turn.length / 2)].id;
    const replay: StreamEvent[] = [];
    for await (const event of client.streamEvents(id, { lastEventId: middle, untilDone: true })) replay.push(event);
    expect(replay.map((e) => e.id)).toEqual(turn.filter((e) => e.id > middle).map((e) => e.id));

    // Following from the end: the next turn's events arrive as they happen.
    const controller = new AbortController();
    const live: StreamEvent[] = [];
    const following = (async () => {
      for await (const event of client.streamEvents(id, { lastEventId: turn.at(-1)!.id, signal: controller.signal })) {
        live.push(event);
        if (event.type === "done") controller.abort();
      }
    })().catch((error) => error);
    for await (const event of client.sendMessage(id, "second turn")) void event;
    const ended = await following;
    expect(ended).toBeInstanceOf(Error);
    expect(ended.name).toBe("AbortError");
    expect(live[0].type).toBe("session_start");
    expect(live[0].id).toBe(turn.at(-1)!.id + 1);
    expect(live.at(-1)!.type).toBe("done");
    expect(live.some((e) => e.type === "turn_complete" && e.data.result === "Echo: second turn [turns seen: 2]")).toBe(true);
  });
});
