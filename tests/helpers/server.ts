// Starts the real server (src/server/main.ts) as a child process with its own
// data directory and port, so tests can stop, kill -9 and restart it.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { freePort } from "./ports";
import { removeTree } from "../../src/sandbox/remove-tree";

const ROOT = resolve(import.meta.dirname, "../..");

/** A response whose JSON the test reads as the API documents it (tests assert the shape). */
export type ApiResponse = Omit<Response, "json"> & { json(): Promise<any> };

export interface TestServer {
  url: string;
  port: number;
  apiKey: string;
  dataDir: string;
  /** Output the server printed so far. */
  output(): string;
  /** The server process id. */
  pid(): number;
  /** Authorized fetch against the server. */
  api(path: string, init?: RequestInit & { json?: unknown }): Promise<ApiResponse>;
  /** SIGTERM and wait for exit. */
  stop(): Promise<number | null>;
  /** SIGKILL: a crash. */
  kill(): Promise<void>;
  /** Start again on the same data directory and port. */
  restart(extraEnv?: Record<string, string>): Promise<void>;
  /** Stop and remove the data directory. */
  dispose(): Promise<void>;
}

export interface TestServerOptions {
  env?: Record<string, string>;
  dataDir?: string;
  apiKey?: string;
  /** Where the fake model listens. */
  modelUrl?: string;
  startTimeoutMs?: number;
}

export async function startTestServer(options: TestServerOptions = {}): Promise<TestServer> {
  const dataDir = options.dataDir ?? (await mkdtemp(join(tmpdir(), "ash-test-")));
  const port = await freePort();
  const apiKey = options.apiKey ?? "test-key-0123456789";
  let child: ChildProcess | undefined;
  let output = "";
  let exited: Promise<number | null> = Promise.resolve(null);
  const url = `http://127.0.0.1:${port}`;

  const launch = async (extraEnv: Record<string, string> = {}) => {
    output = "";
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      HOME: process.env.HOME ?? "/root",
      ASH_DATA_DIR: dataDir,
      ASH_PORT: String(port),
      ASH_HOST: "127.0.0.1",
      ASH_API_KEY: apiKey,
      ANTHROPIC_API_KEY: "sk-ant-test-fake",
      // Generous: a loaded machine can take seconds before the first model call.
      ASH_TURN_IDLE_TIMEOUT_MS: "60000",
      ASH_MODEL_MAX_RETRIES: "0",
      ...(options.modelUrl ? { ANTHROPIC_BASE_URL: options.modelUrl } : {}),
      ...(process.env.ASH_TEST_DATABASE_URL ? { ASH_DATABASE_URL: process.env.ASH_TEST_DATABASE_URL } : {}),
      ...options.env,
      ...extraEnv,
    };
    if (env.ASH_API_KEY === "") delete env.ASH_API_KEY;
    child = spawn(process.execPath, ["--import", "tsx", join(ROOT, "src/server/main.ts")], { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
    child.stdout!.on("data", (d) => (output += d));
    child.stderr!.on("data", (d) => (output += d));
    const proc = child;
    exited = new Promise((resolve) => proc.once("exit", (code) => resolve(code)));
    // A test process that ends without disposing (a crash, a timeout) takes its servers along.
    const reap = () => proc.kill("SIGKILL");
    process.once("exit", reap);
    proc.once("exit", () => process.off("exit", reap));
    const deadline = Date.now() + (options.startTimeoutMs ?? 30_000);
    while (Date.now() < deadline) {
      if (proc.exitCode !== null) throw new Error(`server exited with ${proc.exitCode}:\n${output}`);
      try {
        const r = await fetch(`${url}/health`);
        if (r.status === 200 || r.status === 503) return;
      } catch {
        // not up yet
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`server did not answer /health in time:\n${output}`);
  };

  await launch();
  const server: TestServer = {
    url,
    port,
    apiKey,
    dataDir,
    output: () => output,
    pid: () => child!.pid!,
    api(path, init = {}) {
      const headers = new Headers(init.headers);
      if (!headers.has("authorization")) headers.set("authorization", `Bearer ${apiKey}`);
      let body = init.body;
      if (init.json !== undefined) {
        headers.set("content-type", "application/json");
        body = JSON.stringify(init.json);
      }
      return fetch(url + path, { ...init, headers, body });
    },
    async stop() {
      if (!child || child.exitCode !== null) return child?.exitCode ?? null;
      child.kill("SIGTERM");
      return exited;
    },
    async kill() {
      if (!child || child.exitCode !== null) return;
      child.kill("SIGKILL");
      await exited;
    },
    async restart(extraEnv) {
      await server.stop();
      await launch(extraEnv);
    },
    async dispose() {
      // Gracefully, so the server removes its sandboxes' resource groups; then for sure.
      const stopped = server.stop();
      await Promise.race([stopped, new Promise((r) => setTimeout(r, 20_000))]);
      await server.kill();
      // A sandbox may have left folders nested past PATH_MAX: removeTree copes.
      if (!options.dataDir) await removeTree(dataDir);
    },
  };
  return server;
}

/** Reads an SSE response to its end and returns the frames. */
export async function readEvents(response: Response): Promise<Array<{ id: number; event: string; data: any }>> {
  const text = await response.text();
  return parseFrames(text);
}

/**
 * Reads an event stream that does not end by itself (GET /stream) until it has
 * had `dones` `done` frames or the server ended it (bounded: 1000 reads), then lets go.
 */
export async function readUntilDone(response: Response, dones = 1): Promise<Array<{ id: number; event: string; data: any }>> {
  const reader = response.body!.getReader();
  let text = "";
  for (let round = 0; round < 1000 && (text.match(/event: done\n/g) ?? []).length < dones; round++) {
    const chunk = await reader.read();
    if (chunk.done) break;
    text += new TextDecoder().decode(chunk.value);
  }
  await reader.cancel().catch(() => undefined);
  return parseFrames(text);
}

export function parseFrames(text: string): Array<{ id: number; event: string; data: any }> {
  const frames: Array<{ id: number; event: string; data: any }> = [];
  for (const block of text.split("\n\n")) {
    const lines = block.split("\n").filter((l) => l && !l.startsWith(":"));
    if (lines.length === 0) continue;
    const field = (name: string) => lines.filter((l) => l.startsWith(`${name}:`)).map((l) => l.slice(name.length + 1).replace(/^ /, "")).join("\n");
    frames.push({ id: Number(field("id")), event: field("event"), data: JSON.parse(field("data") || "null") });
  }
  return frames;
}

/** A minimal agent upload body. */
export function agentUpload(name: string, files: Record<string, string> = {}, extra: Record<string, unknown> = {}) {
  const all = { "CLAUDE.md": "You are a test agent. Be brief.", ...files };
  return { name, files: Object.entries(all).map(([path, content]) => ({ path, content: Buffer.from(content).toString("base64") })), ...extra };
}

/** Runs the server with an environment expected to make it fail; returns its exit code and output. */
export async function runServerExpectingFailure(env: Record<string, string>, timeoutMs = 30_000): Promise<{ code: number | null; output: string }> {
  // A free port unless the test names one: a server already on 4100 (the user's) must not decide the outcome.
  const port = String(await freePort());
  const child = spawn(process.execPath, ["--import", "tsx", join(ROOT, "src/server/main.ts")], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/root", ASH_HOST: "127.0.0.1", ASH_PORT: port, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout.on("data", (d) => (output += d));
  child.stderr.on("data", (d) => (output += d));
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  const code = await new Promise<number | null>((resolve) => child.once("exit", (c) => resolve(c)));
  clearTimeout(timer);
  return { code, output };
}
