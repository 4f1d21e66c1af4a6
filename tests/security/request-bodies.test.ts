// Hostile request bodies: oversized (chunked or declared), cut off, slow,
// badly framed, not JSON. Each gets its 4xx and the server keeps serving.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { agentUpload, startTestServer, type TestServer } from "../helpers/server";
import { GC_ON_SIGNAL_ENV, rawRequest, rawSocket, rssSettlesBelow, settledRssKiB } from "./raw-http";

const MB = 1024 * 1024;

describe("request bodies", () => {
  let server: TestServer;
  let deploys = 0;

  beforeAll(async () => {
    server = await startTestServer({ env: GC_ON_SIGNAL_ENV });
  });
  afterAll(async () => {
    await server?.dispose();
  });

  /** The server is alive and a real request still works. */
  const stillServes = async () => {
    const health = await fetch(`${server.url}/health`);
    expect(health.status).toBe(200);
    const name = `alive-${++deploys}`;
    const deploy = await server.api("/api/agents", { method: "POST", json: agentUpload(name) });
    expect(deploy.status).toBe(201);
    expect((await deploy.json()).agent.name).toBe(name);
  };

  const bigChunks = (total: number, size = 64 * 1024) => Array.from({ length: Math.ceil(total / size) }, () => Buffer.alloc(size, "a"));

  it("answers 413 to oversized chunked bodies, again and again, and keeps serving", async () => {
    for (let round = 0; round < 5; round++) {
      const answer = await rawRequest({ port: server.port, path: "/api/agents", apiKey: server.apiKey, chunks: bigChunks(5 * MB) });
      expect(answer.error).toBeUndefined();
      expect(answer.status).toBe(413);
      expect(JSON.parse(answer.body!)).toEqual({ error: expect.stringMatching(/larger than/), statusCode: 413 });
      await stillServes();
    }
    expect(server.output()).not.toMatch(/TypeError|_isIdle/);
  });

  it("answers 413 to a declared length over the limit, before reading it", async () => {
    const answer = await rawRequest({
      port: server.port,
      path: "/api/agents",
      apiKey: server.apiKey,
      headers: { "content-length": String(5 * MB) },
      chunks: [Buffer.alloc(64 * 1024, "a")],
      abortAfter: 1,
    });
    // The answer may come before the client gives up; either way the server lives.
    if (answer.status !== undefined) expect(answer.status).toBe(413);
    const full = await server.api("/api/sessions", { method: "POST", body: Buffer.alloc(2 * MB, "a"), headers: { "content-type": "application/json" } });
    expect(full.status).toBe(413);
    await stillServes();
  });

  it("survives bodies cut off mid-way, chunked or not", async () => {
    for (let i = 0; i < 10; i++) {
      await rawRequest({ port: server.port, path: "/api/agents", apiKey: server.apiKey, chunks: ['{"name":"cut', Buffer.alloc(32 * 1024, "a")], abortAfter: 1 + (i % 2) });
      await rawRequest({
        port: server.port,
        path: "/api/sessions",
        apiKey: server.apiKey,
        headers: { "content-length": "1000" },
        chunks: ['{"agent":"x"', "  "],
        abortAfter: 2,
      });
    }
    await stillServes();
  });

  it("takes a slow body to the end, and answers a slow oversized one with 413", async () => {
    const body = JSON.stringify(agentUpload("slow-agent"));
    const pieces = body.match(/.{1,40}/gs)!;
    const slow = await rawRequest({ port: server.port, path: "/api/agents", apiKey: server.apiKey, chunks: pieces, pauseMs: 5 });
    expect(slow.status).toBe(201);
    const slowBig = await rawRequest({ port: server.port, path: "/api/agents", apiKey: server.apiKey, chunks: bigChunks(2 * MB, 256 * 1024), pauseMs: 20 });
    expect(slowBig.status).toBe(413);
    await stillServes();
  });

  it("answers broken chunked framing with 400 and keeps serving", async () => {
    const head = `POST /api/agents HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${server.apiKey}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`;
    for (const framing of ["ZZZ\r\nabc\r\n0\r\n\r\n", "5\r\n{\"a\":1}\r\n0\r\n\r\n", "ffffffffffffffffff\r\n{}\r\n0\r\n\r\n", "3\r\n{}"]) {
      const answer = await rawSocket(server.port, head + framing);
      // Either Node's parser refuses the framing (400) or the body is judged (400), or the connection just ends.
      if (answer) expect(answer).toMatch(/^HTTP\/1\.1 4\d\d/);
    }
    await stillServes();
  });

  it("answers bodies that are not JSON, or not sent as JSON, with 400 naming the problem", async () => {
    const cases: Array<[string, string | undefined]> = [
      ["{not json", "application/json"],
      ["name=x&files=y", "application/x-www-form-urlencoded"],
      ["--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n--b--", "multipart/form-data; boundary=b"],
      ["", "application/json"],
      ["   ", "application/json"],
      ['"\\u00', "text/plain"],
    ];
    for (const [body, type] of cases) {
      const r = await server.api("/api/agents", { method: "POST", body, headers: type ? { "content-type": type } : {} });
      expect(r.status).toBe(400);
      const answer = await r.json();
      expect(answer).toEqual({ error: expect.stringMatching(/JSON/), statusCode: 400 });
      if (type && !type.includes("json") && body.trim()) expect(answer.error).toContain(type.split(";")[0]);
    }
    await stillServes();
  });

  it("keeps its memory through 200 bad requests in a row", async () => {
    const run = async (n: number) => {
      for (let i = 0; i < n; i++) {
        switch (i % 5) {
          case 0:
            await rawRequest({ port: server.port, path: "/api/agents", apiKey: server.apiKey, chunks: bigChunks(2 * MB) });
            break;
          case 1:
            await rawRequest({ port: server.port, path: "/api/agents", apiKey: server.apiKey, chunks: ['{"name":', Buffer.alloc(200 * 1024, "a")], abortAfter: 2 });
            break;
          case 2:
            await rawRequest({ port: server.port, path: "/api/sessions", apiKey: server.apiKey, chunks: ["{" + "x".repeat(500 * 1024)] });
            break;
          case 3:
            await rawRequest({ port: server.port, path: "/api/sessions", apiKey: server.apiKey, chunks: ["[".repeat(50_000)] });
            break;
          default:
            await rawRequest({ port: server.port, path: "/api/agents", apiKey: server.apiKey, headers: { "content-type": "text/plain" }, chunks: ["hello"] });
        }
      }
    };
    // Warm up first, so the baseline includes what the first requests allocate for good.
    await run(100);
    await stillServes();
    const before = await settledRssKiB(server.pid());
    await run(200);
    await stillServes();
    const after = await rssSettlesBelow(server.pid(), before + 8 * 1024);
    console.log(`RSS before ${Math.round(before / 1024)} MB, after 200 bad requests ${Math.round(after / 1024)} MB`);
    expect(after - before).toBeLessThan(8 * 1024);
  });
});
