/**
 * Metrics, traces, event telemetry and logs of the real server, with a real
 * agent CLI in a real sandbox; only the model is faked. The collector and the
 * telemetry sink are local stand-ins on 127.0.0.1.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { agentUpload, readEvents, startTestServer, type TestServer } from "../helpers/server";
import { startFakeModel } from "../fake-model/fake-model.mjs";
import { startOtlpCollector, type CollectedSpan, type OtlpCollector } from "../helpers/otlp-collector";
import { startTelemetrySink, type TelemetrySink } from "../helpers/telemetry-sink";

const sample = (text: string, name: string, labels: Record<string, string> = {}) => {
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`).join(",");
  const line = text.split("\n").find((l) => (wanted ? l.startsWith(`${name}{${wanted}}`) : l.startsWith(`${name} `)));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(" ") + 1));
};

describe("observability of the running server", () => {
  let model: Awaited<ReturnType<typeof startFakeModel>>;
  let collector: OtlpCollector;
  let sink: TelemetrySink;
  let server: TestServer;
  let sessionId: string;
  let firstTurn: Array<{ id: number; event: string; data: any }>;

  beforeAll(async () => {
    model = await startFakeModel();
    collector = await startOtlpCollector();
    sink = await startTelemetrySink();
    server = await startTestServer({
      modelUrl: model.url,
      env: {
        OTEL_EXPORTER_OTLP_ENDPOINT: collector.url,
        OTEL_SERVICE_NAME: "ash-it",
        ASH_TELEMETRY_URL: sink.url,
        ASH_TELEMETRY_TOKEN: "sink-token-0123456789",
        ASH_LOG_FORMAT: "json",
      },
    });
    expect((await server.api("/api/agents", { method: "POST", json: agentUpload("observed") })).status).toBe(201);
    const created = await server.api("/api/sessions", { method: "POST", json: { agent: "observed" } });
    expect(created.status).toBe(201);
    sessionId = (await created.json()).session.id;
    const turn = await server.api(`/api/sessions/${sessionId}/messages`, { method: "POST", json: { content: "#bash echo observed-output" } });
    expect(turn.status).toBe(200);
    firstTurn = await readEvents(turn);
    expect(firstTurn.at(-1)!.event).toBe("done");
  });

  afterAll(async () => {
    await server?.dispose();
    await sink?.close();
    await collector?.close();
    await model?.close();
  });

  it("serves /metrics behind the API key, in the text format", async () => {
    const anonymous = await fetch(`${server.url}/metrics`);
    expect(anonymous.status).toBe(401);
    expect(await anonymous.json()).toMatchObject({ statusCode: 401 });
    const res = await server.api("/metrics");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
  });

  it("counts the turn, the request, the sandbox and the snapshot", async () => {
    const text = await (await server.api("/metrics")).text();
    expect(sample(text, "ash_turns_total", { outcome: "complete" })).toBe(1);
    expect(sample(text, "ash_turn_first_event_seconds_count")).toBe(1);
    expect(sample(text, "ash_http_requests_total", { route: "/api/sessions/:id/messages", method: "POST", status: "200" })).toBe(1);
    expect(sample(text, "ash_http_requests_total", { route: "/api/sessions", method: "POST", status: "201" })).toBe(1);
    expect(text).not.toContain(sessionId);
    expect(sample(text, "ash_sandboxes", { state: "idle" })).toBe(1);
    expect(sample(text, "ash_sandboxes", { state: "busy" })).toBe(0);
    expect(sample(text, "ash_sessions", { status: "active" })).toBe(1);
    expect(sample(text, "ash_sandbox_start_duration_seconds_count")).toBe(1);
    expect(sample(text, "ash_snapshot_bytes_count")).toBeGreaterThanOrEqual(1);
    expect(sample(text, "ash_snapshot_bytes_sum")).toBeGreaterThan(0);
  });

  it("sends every stored event and the session's lifecycle to the telemetry sink", async () => {
    await sink.waitFor(() => sink.records().some((r) => r.type === "done" && r.sessionId === sessionId), 15_000, "the turn's done event");
    const records = sink.records().filter((r) => r.sessionId === sessionId);
    expect(records[0]).toMatchObject({ type: "session_created", agent: "observed" });
    const streamed = records.filter((r) => r.seq !== undefined);
    expect(streamed.map((r) => [r.seq, r.type])).toEqual(firstTurn.map((e) => [e.id, e.event]));
    expect(streamed.find((r) => r.type === "tool_use")!.data).toMatchObject({ name: "Bash" });
    expect(sink.batches[0].headers.authorization).toBe("Bearer sink-token-0123456789");
  });

  it("counts a pause as an eviction and the next message as a resume from the snapshot", async () => {
    expect((await server.api(`/api/sessions/${sessionId}/pause`, { method: "POST" })).status).toBe(200);
    const again = await readEvents(await server.api(`/api/sessions/${sessionId}/messages`, { method: "POST", json: { content: "hello again" } }));
    expect(again.at(-1)!.event).toBe("done");
    const text = await (await server.api("/metrics")).text();
    expect(sample(text, "ash_evictions_total", { reason: "pause" })).toBe(1);
    expect(sample(text, "ash_resumes_total", { from: "snapshot" })).toBe(1);
    expect(sample(text, "ash_turns_total", { outcome: "complete" })).toBe(2);
    await sink.waitFor(() => sink.records().some((r) => r.type === "session_resumed" && r.sessionId === sessionId), 15_000, "session_resumed");
    const types = sink.records().filter((r) => r.sessionId === sessionId).map((r) => r.type);
    expect(types.indexOf("session_paused")).toBeLessThan(types.indexOf("session_resumed"));
  });

  it("exports linked spans for requests, sessions, sandboxes, turns and tools; flushed when the server stops", async () => {
    expect(await server.stop()).toBe(0);
    const spans = collector.spans();
    const one = (name: string, where: (s: CollectedSpan) => boolean = () => true) => {
      const found = spans.filter((s) => s.name === name && where(s));
      expect(found.length, `spans named ${name}`).toBeGreaterThan(0);
      return found[0];
    };
    const createRequest = one("POST /api/sessions");
    const create = one("session.create");
    expect(create.parentSpanId).toBe(createRequest.spanId);
    expect(create.attributes["ash.session_id"]).toBe(sessionId);
    const spawn = one("sandbox.spawn", (s) => s.parentSpanId === create.spanId);
    expect(one("sandbox.restore").parentSpanId).toBe(spawn.spanId);

    const messageRequest = one("POST /api/sessions/:id/messages");
    const turn = one("turn", (s) => s.parentSpanId === messageRequest.spanId);
    expect(turn.traceId).toBe(messageRequest.traceId);
    expect(turn.attributes).toMatchObject({ "ash.session_id": sessionId, "ash.agent": "observed", "ash.tool_calls": 1, "ash.outcome": "complete" });
    const tool = one("tool.Bash");
    expect(tool.parentSpanId).toBe(turn.spanId);
    expect(one("sandbox.snapshot", (s) => s.parentSpanId === turn.spanId).attributes["ash.snapshot.bytes"]).toBeGreaterThan(0);
    expect(one("sandbox.evict", (s) => s.attributes["ash.reason"] === "paused").attributes["ash.session_id"]).toBe(sessionId);
    for (const s of spans) expect(s.resource["service.name"]).toBe("ash-it");
  });

  it("logs JSON lines without the API key", () => {
    const lines = server.output().split("\n").filter((l) => l.startsWith("{"));
    expect(lines.length).toBeGreaterThan(0);
    for (const line of lines) expect(JSON.parse(line)).toMatchObject({ time: expect.any(String), level: expect.any(String), msg: expect.any(String) });
    expect(server.output()).not.toContain(server.apiKey);
    expect(server.output()).not.toContain("sink-token-0123456789");
  });
});

describe("the agent CLI's own spans (ASH_SANDBOX_OTEL=true)", () => {
  it("join the session's trace under the span that started its sandbox", async () => {
    const model = await startFakeModel();
    const collector = await startOtlpCollector();
    const server = await startTestServer({ modelUrl: model.url, env: { OTEL_EXPORTER_OTLP_ENDPOINT: collector.url, ASH_SANDBOX_OTEL: "true" } });
    try {
      expect((await server.api("/api/agents", { method: "POST", json: agentUpload("traced") })).status).toBe(201);
      const id = (await (await server.api("/api/sessions", { method: "POST", json: { agent: "traced" } })).json()).session.id;
      const events = await readEvents(await server.api(`/api/sessions/${id}/messages`, { method: "POST", json: { content: "#bash echo traced" } }));
      expect(events.at(-1)!.event).toBe("done");
      // Stopping the server ends the CLI, which flushes its spans; the server flushes its own.
      expect(await server.stop()).toBe(0);
      const spans = await collector.waitForSpans((all) => all.some((s) => s.resource["service.name"] !== "ash"), 30_000);
      const spawn = spans.find((s) => s.name === "sandbox.spawn" && s.attributes["ash.session_id"] === id)!;
      const cli = spans.filter((s) => s.resource["service.name"] !== "ash");
      expect(cli.length).toBeGreaterThan(0);
      for (const s of cli) expect(s.traceId).toBe(spawn.traceId);
      expect(cli.some((s) => s.parentSpanId === spawn.spanId)).toBe(true);
    } finally {
      await server.dispose();
      await collector.close();
      await model.close();
    }
  });
});
