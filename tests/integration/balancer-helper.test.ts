/**
 * The load balancer the multi-server tests put in front of their servers
 * (tests/helpers/haproxy.ts): requests are spread over every server, a killed
 * server's share goes to the others, and a long stream passes through whole.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { readdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startBalancer, type Balancer } from "../helpers/haproxy";
import { haproxyProblem, skipUnlessReady } from "../helpers/requirements";

// A tiny server in its own process (so it can be killed for real): its name on
// every path, 200 on /health/live, and /stream sends 10 chunks 300 ms apart.
const BACKEND = `
const http = require("node:http");
const name = process.env.NAME;
const server = http.createServer((req, res) => {
  if (req.url === "/health/live") return res.end("ok");
  if (req.url === "/stream") {
    res.writeHead(200, { "content-type": "text/plain" });
    let i = 0;
    const timer = setInterval(() => {
      res.write(name + " chunk " + i + "\\n");
      if (++i === 10) { clearInterval(timer); res.end(); }
    }, 300);
    return;
  }
  res.end(name);
});
server.listen(0, "127.0.0.1", () => console.log(server.address().port));
`;

interface Backend {
  name: string;
  url: string;
  child: ChildProcess;
  kill(): Promise<void>;
}

async function startBackend(name: string): Promise<Backend> {
  const child = spawn(process.execPath, ["-e", BACKEND], { env: { ...process.env, NAME: name }, stdio: ["ignore", "pipe", "inherit"] });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout!.once("data", (d) => resolve(Number(String(d).trim())));
    child.once("exit", (code) => reject(new Error(`backend ${name} exited with ${code}`)));
  });
  return {
    name,
    url: `http://127.0.0.1:${port}`,
    child,
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await exited;
    },
  };
}

async function whoAnswers(url: string): Promise<string> {
  const response = await fetch(url + "/who");
  return `${response.status} ${await response.text()}`;
}

describe.skipIf(skipUnlessReady("the load balancer helper", haproxyProblem()))("startBalancer (HAProxy in front of two servers)", () => {
  let a: Backend;
  let b: Backend;
  let balancer: Balancer;

  beforeAll(async () => {
    a = await startBackend("a");
    b = await startBackend("b");
    balancer = await startBalancer({ backends: [a.url, b.url] });
  });
  afterAll(async () => {
    await balancer?.close();
    await a?.kill();
    await b?.kill();
  });

  it("listens on 127.0.0.1 only and sends consecutive requests to both servers", async () => {
    expect(balancer.url).toBe(`http://127.0.0.1:${balancer.port}`);
    expect(balancer.config).toContain(`bind 127.0.0.1:${balancer.port}\n`);
    const seen: string[] = [];
    for (let i = 0; i < 10; i++) seen.push(await whoAnswers(balancer.url));
    expect(new Set(seen)).toEqual(new Set(["200 a", "200 b"]));
    // Round robin: neither server gets them all, both get several.
    expect(seen.filter((s) => s === "200 a").length).toBeGreaterThanOrEqual(3);
    expect(seen.filter((s) => s === "200 b").length).toBeGreaterThanOrEqual(3);
  });

  it("passes a long streamed response through whole, chunk by chunk", async () => {
    const response = await fetch(balancer.url + "/stream");
    expect(response.status).toBe(200);
    const reader = response.body!.getReader();
    const decoder = new TextDecoder();
    let text = "";
    let reads = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      reads++;
      text += decoder.decode(value, { stream: true });
    }
    const name = text.split(" ")[0];
    expect(["a", "b"]).toContain(name);
    expect(text).toBe(Array.from({ length: 10 }, (_, i) => `${name} chunk ${i}\n`).join(""));
    // Forwarded as the server wrote it, not held back until the end.
    expect(reads).toBeGreaterThan(1);
  });

  it("sends every later request to the other server once one is killed", async () => {
    await a.kill();
    // Retries on a refused connection cover the moments before the health check marks it down.
    let streak = 0;
    for (let i = 0; i < 200 && streak < 6; i++) {
      const answer = await whoAnswers(balancer.url).catch((err) => String(err));
      streak = answer === "200 b" ? streak + 1 : 0;
      if (streak === 0) await new Promise((r) => setTimeout(r, 100));
    }
    expect(streak).toBe(6);
    const later: string[] = [];
    for (let i = 0; i < 10; i++) later.push(await whoAnswers(balancer.url));
    expect(later).toEqual(Array(10).fill("200 b"));
  });
});

describe.skipIf(skipUnlessReady("the load balancer helper", haproxyProblem()))("startBalancer refuses", () => {
  it.each([
    [[], /at least one backend/],
    [["http://192.0.2.1:4100"], /a backend must be http:\/\/127\.0\.0\.1:PORT, got "http:\/\/192\.0\.2\.1:4100"/],
    [["https://127.0.0.1:4100"], /a backend must be http:\/\/127\.0\.0\.1:PORT/],
    [["http://127.0.0.1"], /a backend must be http:\/\/127\.0\.0\.1:PORT/],
  ] as Array<[string[], RegExp]>)("backends %j, starting nothing and leaving no folder", async (backends, message) => {
    const before = (await readdir(tmpdir())).filter((f) => f.startsWith("ash-balancer-"));
    await expect(startBalancer({ backends })).rejects.toThrow(message);
    expect((await readdir(tmpdir())).filter((f) => f.startsWith("ash-balancer-"))).toEqual(before);
  });
});
