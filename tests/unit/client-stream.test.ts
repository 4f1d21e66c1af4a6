import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { AshApiError, AshClient, AshConnectionError, AshStreamError, type StreamEvent } from "../../src/client";

/**
 * These tests drive the client's stream handling against a small scripted HTTP server on
 * 127.0.0.1, to reach protocol situations the real server makes rarely on demand: a socket
 * cut mid-frame, a resend of events already delivered, a reconnect refused with 503.
 */

type Handler = (req: IncomingMessage, res: ServerResponse, body: string) => void;

let server: Server | undefined;

async function serve(handler: Handler): Promise<string> {
  server = createServer((req, res) => {
    let body = "";
    req.on("data", (chunk) => (body += chunk));
    req.on("end", () => handler(req, res, body));
  });
  await new Promise<void>((resolve) => server!.listen(0, "127.0.0.1", resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

afterEach(async () => {
  if (!server) return;
  server.closeAllConnections();
  await new Promise((resolve) => server!.close(resolve));
  server = undefined;
});

function frame(id: number, event: string, data: unknown): string {
  return `id: ${id}\nevent: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

const TURN = [
  frame(11, "session_start", { sessionId: "s1" }),
  frame(12, "text_delta", { delta: "Hello" }),
  frame(13, "tool_use", { id: "t1", name: "Bash", input: { command: "ls" } }),
  frame(14, "tool_result", { tool_use_id: "t1", content: "a.txt", is_error: false }),
  frame(15, "text_delta", { delta: " world" }),
  frame(16, "turn_complete", { numTurns: 2, result: "Hello world", usage: { input_tokens: 10, output_tokens: 4 } }),
  frame(17, "done", { sessionId: "s1" }),
];

function startStream(res: ServerResponse): void {
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
}

async function collect(events: AsyncIterable<StreamEvent>): Promise<StreamEvent[]> {
  const out: StreamEvent[] = [];
  for await (const event of events) out.push(event);
  return out;
}

const fastReconnect = { retries: 3, initialDelayMs: 5, maxDelayMs: 20 };

describe("AshClient.sendMessage", () => {
  it("yields typed events in order with their ids and stops after done", async () => {
    const seen: { method?: string; path?: string; auth?: string; body?: string } = {};
    const url = await serve((req, res, body) => {
      Object.assign(seen, { method: req.method, path: req.url, auth: req.headers.authorization, body });
      startStream(res);
      res.write(": ping\n\n");
      res.write(TURN.join(""));
      // The server keeps the connection open; the client must stop on `done` by itself.
    });
    const client = new AshClient({ url, apiKey: "k1" });
    const events = await collect(client.sendMessage("s1", "hi", { includePartialMessages: true }));
    expect(seen).toEqual({
      method: "POST",
      path: "/api/sessions/s1/messages",
      auth: "Bearer k1",
      body: JSON.stringify({ content: "hi", includePartialMessages: true }),
    });
    expect(events.map((e) => [e.id, e.type])).toEqual([
      [11, "session_start"],
      [12, "text_delta"],
      [13, "tool_use"],
      [14, "tool_result"],
      [15, "text_delta"],
      [16, "turn_complete"],
      [17, "done"],
    ]);
    const tool = events[2];
    expect(tool.type === "tool_use" && tool.data.input).toEqual({ command: "ls" });
  });

  it("reconnects with Last-Event-ID after a cut and never yields an event twice", async () => {
    const reconnects: (string | undefined)[] = [];
    const url = await serve((req, res) => {
      if (req.method === "POST") {
        startStream(res);
        // Three whole frames, then half of the fourth, then the socket dies.
        res.write(TURN.slice(0, 3).join("") + TURN[3].slice(0, 20), () => setTimeout(() => res.destroy(), 20));
        return;
      }
      expect(req.url).toBe("/api/sessions/s1/stream");
      reconnects.push(req.headers["last-event-id"] as string | undefined);
      startStream(res);
      // This server replays a little too much: events 12 and 13 again, then the rest.
      res.write(TURN.slice(1).join(""));
    });
    const client = new AshClient({ url, reconnect: fastReconnect });
    const events = await collect(client.sendMessage("s1", "hi"));
    expect(reconnects).toEqual(["13"]);
    expect(events.map((e) => e.id)).toEqual([11, 12, 13, 14, 15, 16, 17]);
  });

  it("reconnects when the stream ends cleanly before done, and survives a failed attempt", async () => {
    let gets = 0;
    const url = await serve((req, res) => {
      if (req.method === "POST") {
        startStream(res);
        res.end(TURN.slice(0, 2).join(""));
        return;
      }
      gets++;
      if (gets === 1) {
        res.writeHead(503, { "content-type": "application/json", "retry-after": "0" });
        res.end(JSON.stringify({ error: "Every sandbox is busy.", statusCode: 503 }));
        return;
      }
      expect(req.headers["last-event-id"]).toBe("12");
      startStream(res);
      res.end(TURN.slice(2).join(""));
    });
    const client = new AshClient({ url, reconnect: fastReconnect });
    const events = await collect(client.sendMessage("s1", "hi"));
    expect(gets).toBe(2);
    expect(events.map((e) => e.id)).toEqual([11, 12, 13, 14, 15, 16, 17]);
  });

  it("gives up after the configured number of reconnects with the last id in the error", async () => {
    let gets = 0;
    const url = await serve((req, res) => {
      if (req.method === "POST") {
        startStream(res);
        res.end(TURN.slice(0, 2).join(""));
        return;
      }
      gets++;
      req.socket.destroy();
    });
    const client = new AshClient({ url, reconnect: { retries: 2, initialDelayMs: 1, maxDelayMs: 5 } });
    const events: StreamEvent[] = [];
    const failure = await (async () => {
      for await (const event of client.sendMessage("s1", "hi")) events.push(event);
    })().catch((e) => e);
    expect(events.map((e) => e.id)).toEqual([11, 12]);
    expect(gets).toBe(2);
    expect(failure).toBeInstanceOf(AshStreamError);
    expect(failure.lastEventId).toBe(12);
    expect(failure.message).toContain("2 reconnect attempts failed");
  });

  it("does not retry a 4xx answer to a reconnect", async () => {
    const url = await serve((req, res) => {
      if (req.method === "POST") {
        startStream(res);
        res.end(TURN.slice(0, 1).join(""));
        return;
      }
      res.writeHead(410, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: "The session has ended.", statusCode: 410 }));
    });
    const client = new AshClient({ url, reconnect: fastReconnect });
    const failure = await collect(client.sendMessage("s1", "hi")).catch((e) => e);
    expect(failure).toBeInstanceOf(AshApiError);
    expect(failure.statusCode).toBe(410);
    expect(failure.message).toBe("The session has ended.");
  });

  it("turns an error answer into AshApiError with the server's sentence", async () => {
    const url = await serve((_req, res) => {
      res.writeHead(409, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: "A turn is already running on session s1.", statusCode: 409 }));
    });
    const failure = await collect(new AshClient({ url }).sendMessage("s1", "hi")).catch((e) => e);
    expect(failure).toBeInstanceOf(AshApiError);
    expect(failure.statusCode).toBe(409);
    expect(failure.request).toBe("POST /api/sessions/s1/messages");
    expect(failure.message).toBe("A turn is already running on session s1.");
  });

  it("stops when the signal aborts, with the signal's reason", async () => {
    const url = await serve((_req, res) => {
      startStream(res);
      res.write(TURN.slice(0, 2).join(""));
    });
    const controller = new AbortController();
    const events: StreamEvent[] = [];
    const failure = await (async () => {
      for await (const event of new AshClient({ url }).sendMessage("s1", "hi", { signal: controller.signal })) {
        events.push(event);
        if (event.id === 12) controller.abort(new Error("user left"));
      }
    })().catch((e) => e);
    expect(events.map((e) => e.id)).toEqual([11, 12]);
    expect(failure).toBeInstanceOf(Error);
    expect(failure.message).toBe("user left");
  });
});

describe("AshClient.streamEvents", () => {
  it("sends lastEventId as Last-Event-ID and skips anything at or before it", async () => {
    let lastEventId: string | undefined;
    const url = await serve((req, res) => {
      lastEventId = req.headers["last-event-id"] as string;
      startStream(res);
      res.end(TURN.join(""));
    });
    const events = await collect(new AshClient({ url }).streamEvents("s1", { lastEventId: 14 }));
    expect(lastEventId).toBe("14");
    expect(events.map((e) => e.id)).toEqual([15, 16, 17]);
  });

  it("refuses a lastEventId that is not a number", () => {
    expect(() => new AshClient({ url: "http://127.0.0.1:1" }).streamEvents("s1", { lastEventId: "abc" })).toThrow(/whole number/);
  });
});

describe("AshClient requests", () => {
  it("reports a closed port as AshConnectionError", async () => {
    const url = await serve(() => {});
    server!.close();
    server = undefined;
    const failure = await new AshClient({ url }).listAgents().catch((e) => e);
    expect(failure).toBeInstanceOf(AshConnectionError);
    expect(failure.code).toBe("ECONNREFUSED");
    expect(failure.url).toBe(url);
  });

  it("escapes ids and names in paths and drops empty query values", async () => {
    const paths: string[] = [];
    const url = await serve((req, res) => {
      paths.push(req.url!);
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ sessions: [], nextCursor: null, agent: { name: "a b" } }));
    });
    const client = new AshClient({ url: url + "/" });
    await client.getAgent("a b/c");
    await client.listSessions({ agent: "x", limit: 5, cursor: undefined });
    expect(paths).toEqual(["/api/agents/a%20b%2Fc", "/api/sessions?agent=x&limit=5"]);
  });

  it("uses the status line when an error answer is not JSON", async () => {
    const url = await serve((_req, res) => {
      res.writeHead(502, "Bad Gateway", { "content-type": "text/html" });
      res.end("<html>oops</html>");
    });
    const failure = await new AshClient({ url }).getSession("s9").catch((e) => e);
    expect(failure).toBeInstanceOf(AshApiError);
    expect(failure.statusCode).toBe(502);
    expect(failure.message).toBe("The server answered 502 Bad Gateway to GET /api/sessions/s9.");
  });

  it("streams the workspace archive as it arrives", async () => {
    const archive = Buffer.from(Array.from({ length: 200_000 }, (_, i) => (i * 7) % 256));
    const url = await serve((req, res) => {
      expect(req.url).toBe("/api/sessions/s1/workspace");
      res.writeHead(200, { "content-type": "application/gzip" });
      // In pieces, as a tar stream would send it.
      for (let i = 0; i < archive.length; i += 65_536) res.write(archive.subarray(i, i + 65_536));
      res.end();
    });
    const body = await new AshClient({ url }).downloadWorkspace("s1");
    const chunks: Uint8Array[] = [];
    for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) chunks.push(chunk);
    expect(Buffer.concat(chunks).equals(archive)).toBe(true);
  });

  it("rejects an address that is not http(s)", () => {
    expect(() => new AshClient({ url: "localhost:4100" })).toThrow(/http/);
    expect(() => new AshClient({ url: "not a url" })).toThrow(/server address/);
  });
});
