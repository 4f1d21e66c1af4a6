// A stand-in for an OpenTelemetry collector's OTLP/HTTP receiver: records the
// JSON bodies POSTed to /v1/traces on 127.0.0.1 and flattens them into spans.
import { createServer, type IncomingHttpHeaders } from "node:http";

export interface CollectedSpan {
  name: string;
  traceId: string;
  spanId: string;
  /** Empty for a root span. */
  parentSpanId: string;
  kind?: number;
  attributes: Record<string, unknown>;
  /** 0 unset, 1 ok, 2 error. */
  status: { code: number; message?: string };
  events: Array<{ name: string; attributes: Record<string, unknown> }>;
  resource: Record<string, unknown>;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
}

export interface OtlpCollector {
  /** Base URL, as OTEL_EXPORTER_OTLP_ENDPOINT takes it. */
  url: string;
  /** Raw requests to /v1/traces. */
  requests: Array<{ headers: IncomingHttpHeaders; body: any }>;
  spans(): CollectedSpan[];
  waitForSpans(predicate: (spans: CollectedSpan[]) => boolean, timeoutMs?: number): Promise<CollectedSpan[]>;
  close(): Promise<void>;
}

export async function startOtlpCollector(): Promise<OtlpCollector> {
  const requests: OtlpCollector["requests"] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      if (req.method !== "POST" || req.url !== "/v1/traces") {
        res.writeHead(404).end();
        return;
      }
      if (!String(req.headers["content-type"]).startsWith("application/json")) {
        res.writeHead(415).end("this collector reads OTLP/JSON only");
        return;
      }
      try {
        requests.push({ headers: req.headers, body: JSON.parse(Buffer.concat(chunks).toString("utf8")) });
      } catch {
        res.writeHead(400).end("bad JSON");
        return;
      }
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as any).port as number;

  const spans = () =>
    requests.flatMap(({ body }) =>
      (body.resourceSpans ?? []).flatMap((rs: any) => {
        const resource = attributesOf(rs.resource?.attributes);
        return (rs.scopeSpans ?? []).flatMap((ss: any) =>
          (ss.spans ?? []).map(
            (s: any): CollectedSpan => ({
              name: s.name,
              traceId: s.traceId,
              spanId: s.spanId,
              parentSpanId: s.parentSpanId ?? "",
              kind: s.kind,
              attributes: attributesOf(s.attributes),
              status: { code: s.status?.code ?? 0, message: s.status?.message },
              events: (s.events ?? []).map((e: any) => ({ name: e.name, attributes: attributesOf(e.attributes) })),
              resource,
              startTimeUnixNano: String(s.startTimeUnixNano),
              endTimeUnixNano: String(s.endTimeUnixNano),
            }),
          ),
        );
      }),
    );

  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    spans,
    async waitForSpans(predicate, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      while (!predicate(spans())) {
        if (Date.now() > deadline) throw new Error(`collector: expected spans did not arrive within ${timeoutMs} ms; got ${spans().map((s) => s.name).join(", ") || "none"}`);
        await new Promise((r) => setTimeout(r, 25));
      }
      return spans();
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** OTLP's `[{key, value: {stringValue | intValue | ...}}]` as a plain object. */
function attributesOf(list: any[] | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const { key, value } of list ?? []) out[key] = valueOf(value);
  return out;
}

function valueOf(v: any): unknown {
  if (!v) return undefined;
  if ("stringValue" in v) return v.stringValue;
  if ("intValue" in v) return Number(v.intValue);
  if ("doubleValue" in v) return Number(v.doubleValue);
  if ("boolValue" in v) return v.boolValue;
  if ("arrayValue" in v) return (v.arrayValue.values ?? []).map(valueOf);
  return v;
}
