// A stand-in for an operator's telemetry endpoint (ASH_TELEMETRY_URL): an HTTP
// server on 127.0.0.1 that records every POSTed batch, and can be told to
// answer with an error status or to never answer at all.
import { createServer, type IncomingHttpHeaders, type ServerResponse } from "node:http";

export type SinkMode = { kind: "ok" } | { kind: "fail"; status: number; retryAfter?: string } | { kind: "hang" };

export interface TelemetrySink {
  url: string;
  /** Batches answered 200, in arrival order. */
  batches: Array<{ headers: IncomingHttpHeaders; records: any[] }>;
  /** Every POST seen, whatever it was answered. */
  attempts(): number;
  /** All records of the accepted batches. */
  records(): any[];
  setMode(mode: SinkMode): void;
  /** Polls until `predicate` holds; throws after `timeoutMs`. */
  waitFor(predicate: () => boolean, timeoutMs?: number, what?: string): Promise<void>;
  close(): Promise<void>;
}

export async function startTelemetrySink(path = "/ingest"): Promise<TelemetrySink> {
  const batches: TelemetrySink["batches"] = [];
  const hanging = new Set<ServerResponse>();
  let attempts = 0;
  let mode: SinkMode = { kind: "ok" };

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      if (req.method !== "POST" || req.url !== path) {
        res.writeHead(404).end();
        return;
      }
      attempts++;
      if (mode.kind === "hang") {
        hanging.add(res);
        res.on("close", () => hanging.delete(res));
        return;
      }
      if (mode.kind === "fail") {
        res.writeHead(mode.status, mode.retryAfter ? { "retry-after": mode.retryAfter } : {}).end("no");
        return;
      }
      let records: any;
      try {
        records = JSON.parse(Buffer.concat(chunks).toString("utf8"));
      } catch {
        res.writeHead(400).end("not JSON");
        return;
      }
      if (!Array.isArray(records)) {
        res.writeHead(400).end("not an array");
        return;
      }
      batches.push({ headers: req.headers, records });
      res.writeHead(200, { "content-type": "application/json" }).end('{"ok":true}');
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as any).port as number;

  return {
    url: `http://127.0.0.1:${port}${path}`,
    batches,
    attempts: () => attempts,
    records: () => batches.flatMap((b) => b.records),
    setMode(next) {
      mode = next;
      if (next.kind !== "hang") for (const res of hanging) res.destroy();
    },
    async waitFor(predicate, timeoutMs = 10_000, what = "the condition") {
      const deadline = Date.now() + timeoutMs;
      while (!predicate()) {
        if (Date.now() > deadline) throw new Error(`telemetry sink: ${what} did not happen within ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    async close() {
      for (const res of hanging) res.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
