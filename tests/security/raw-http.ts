// Hand-made HTTP requests for attack tests: chunked bodies, bodies cut off
// mid-way, slow bodies and broken framing, which fetch cannot send.
import http from "node:http";
import { connect } from "node:net";
import { readFile } from "node:fs/promises";

export interface RawAnswer {
  status?: number;
  body?: string;
  /** Set when no answer came (the connection was reset or refused). */
  error?: string;
}

export interface RawRequest {
  port: number;
  path: string;
  method?: string;
  apiKey?: string;
  headers?: Record<string, string>;
  /** Body pieces, each written as it is (chunked unless content-length is set). */
  chunks: Array<string | Buffer>;
  /** Wait this long between pieces (a slow client). */
  pauseMs?: number;
  /** Destroy the connection after this many pieces, without ending the body. */
  abortAfter?: number;
}

export function rawRequest(options: RawRequest): Promise<RawAnswer> {
  return new Promise((resolve) => {
    let settled = false;
    const done = (answer: RawAnswer) => {
      if (!settled) {
        settled = true;
        resolve(answer);
      }
    };
    const headers: Record<string, string> = { "content-type": "application/json", ...options.headers };
    if (options.apiKey) headers.authorization = `Bearer ${options.apiKey}`;
    if (!Object.keys(headers).some((h) => h.toLowerCase() === "content-length")) headers["transfer-encoding"] = "chunked";
    const req = http.request({ host: "127.0.0.1", port: options.port, method: options.method ?? "POST", path: options.path, headers, agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d) => (body += d));
      res.on("end", () => done({ status: res.statusCode, body }));
      res.on("error", () => done({ status: res.statusCode, body }));
    });
    req.on("error", (error) => done({ error: (error as any).code ?? error.message }));
    const write = async () => {
      for (let i = 0; i < options.chunks.length; i++) {
        if (settled || req.destroyed) return;
        if (options.abortAfter !== undefined && i >= options.abortAfter) {
          req.destroy();
          done({ error: "aborted by the test" });
          return;
        }
        const ok = req.write(options.chunks[i]!);
        if (!ok) {
          await new Promise<void>((r) => {
            const go = () => {
              req.off("drain", go);
              req.off("close", go);
              r();
            };
            req.once("drain", go);
            req.once("close", go);
          });
        }
        if (options.pauseMs) await new Promise((r) => setTimeout(r, options.pauseMs));
      }
      if (options.abortAfter !== undefined && options.abortAfter >= options.chunks.length) {
        req.destroy();
        done({ error: "aborted by the test" });
        return;
      }
      req.end();
    };
    void write();
  });
}

/** Sends bytes as they are on a fresh connection and returns what came back. */
export function rawSocket(port: number, bytes: string): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    let text = "";
    socket.setEncoding("utf8");
    socket.on("data", (d) => (text += d));
    socket.on("error", () => resolve(text));
    socket.on("close", () => resolve(text));
    socket.on("connect", () => socket.end(bytes));
  });
}

/** Resident memory of a process in KiB, from /proc. */
export async function rssKiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  if (!match) throw new Error(`no VmRSS for ${pid}`);
  return Number(match[1]);
}

/** Repeats `check` until it returns true, a bounded number of times. */
export async function pollUntil(check: () => Promise<boolean> | boolean, tries = 200, pauseMs = 50): Promise<boolean> {
  for (let i = 0; i < tries; i++) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, pauseMs));
  }
  return false;
}

/** Environment for a test server whose memory is measured: SIGUSR2 makes it collect garbage. */
export const GC_ON_SIGNAL_ENV = {
  NODE_OPTIONS: `--expose-gc --import ${new URL("./gc-on-signal.mjs", import.meta.url).pathname}`,
};

/**
 * RSS of a server started with GC_ON_SIGNAL_ENV after full collections: the
 * lowest of a few readings, since freed memory goes back to the system in steps.
 */
export async function settledRssKiB(pid: number, readings = 6): Promise<number> {
  let lowest = Infinity;
  for (let i = 0; i < readings; i++) {
    process.kill(pid, "SIGUSR2");
    await new Promise((r) => setTimeout(r, 300));
    lowest = Math.min(lowest, await rssKiB(pid));
  }
  return lowest;
}

/** Polls (bounded) until the server's settled RSS is at most `limitKiB`; returns the last reading. */
export async function rssSettlesBelow(pid: number, limitKiB: number, tries = 10): Promise<number> {
  let last = Infinity;
  for (let i = 0; i < tries && last > limitKiB; i++) last = await settledRssKiB(pid, 3);
  return last;
}
