import { spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createObservability, type Observability } from "../../src/observability/index";
import { startOtlpCollector, type OtlpCollector, type CollectedSpan } from "../helpers/otlp-collector";

const ROOT = resolve(import.meta.dirname, "../..");

const byName = (spans: CollectedSpan[], name: string) => {
  const found = spans.filter((s) => s.name === name);
  if (found.length === 0) throw new Error(`no span named ${name}; got ${spans.map((s) => s.name).join(", ")}`);
  return found;
};

describe("tracing with an OTLP endpoint", () => {
  let collector: OtlpCollector;
  let obs: Observability;
  let spans: CollectedSpan[];
  const seen: Record<string, unknown> = {};

  beforeAll(async () => {
    collector = await startOtlpCollector();
    obs = await createObservability(
      {
        OTEL_EXPORTER_OTLP_ENDPOINT: collector.url,
        OTEL_SERVICE_NAME: "ash-under-test",
        OTEL_EXPORTER_OTLP_HEADERS: "x-tenant=blue,authorization=Bearer%20collector-secret-1",
        OTEL_RESOURCE_ATTRIBUTES: "deployment.environment=test",
        ANTHROPIC_API_KEY: "sk-ant-api03-very-secret-key",
      },
      { version: "0.1.0-test" },
    );
    expect(obs.tracing.enabled).toBe(true);

    // session.create → sandbox.spawn (with an await between), then a turn with two tool calls.
    await obs.tracing.withSpan("session.create", { "ash.session_id": "sess-1", "ash.agent": "support" }, async () => {
      await new Promise((r) => setTimeout(r, 5));
      await obs.tracing.withSpan("sandbox.spawn", { "ash.sandbox_id": "sb-1" }, async () => {
        await new Promise((r) => setImmediate(r));
        seen.sandboxEnv = obs.tracing.traceparentEnv();
      });
    });

    const turn = obs.observeTurn({ sessionId: "sess-1", agent: "support", model: "claude-test" });
    turn.event({ type: "session_start", data: { sessionId: "sess-1" } });
    turn.event({ type: "text_delta", data: { delta: "Let me look." } });
    turn.event({ type: "tool_use", data: { id: "tu_1", name: "Bash", input: { command: "ls" } } });
    turn.event({ type: "tool_result", data: { tool_use_id: "tu_1", content: "a\nb", is_error: false } });
    turn.event({ type: "tool_use", data: { id: "tu_2", name: "Read", input: { file_path: "/nope" } } });
    turn.event({ type: "tool_result", data: { tool_use_id: "tu_2", content: "no such file", is_error: true } });
    turn.event({ type: "turn_complete", data: { numTurns: 3, result: "done", usage: { input_tokens: 1200, output_tokens: 85, cache_read_input_tokens: 400 } } });
    seen.summary = turn.end();

    // A failure inside withSpan is recorded (redacted) and rethrown.
    seen.thrown = await obs.tracing
      .withSpan("sandbox.snapshot", {}, async () => {
        throw new Error("upload failed for key sk-ant-api03-very-secret-key");
      })
      .catch((e: Error) => e.message);

    await obs.shutdown(5000);
    spans = collector.spans();
  });

  afterAll(async () => {
    await obs?.shutdown(1000);
    await collector?.close();
  });

  it("exports over OTLP/HTTP JSON to <endpoint>/v1/traces with the configured headers and resource", () => {
    expect(collector.requests.length).toBeGreaterThan(0);
    const headers = collector.requests[0].headers;
    expect(headers["content-type"]).toMatch(/^application\/json/);
    expect(headers["x-tenant"]).toBe("blue");
    expect(headers.authorization).toBe("Bearer collector-secret-1");
    for (const s of spans) {
      expect(s.resource["service.name"]).toBe("ash-under-test");
      expect(s.resource["service.version"]).toBe("0.1.0-test");
      expect(s.resource["deployment.environment"]).toBe("test");
    }
  });

  it("links spans started in nested withSpan calls across awaits: one trace, parent ids set", () => {
    const [create] = byName(spans, "session.create");
    const [spawnSpan] = byName(spans, "sandbox.spawn");
    expect(create.parentSpanId).toBe("");
    expect(spawnSpan.traceId).toBe(create.traceId);
    expect(spawnSpan.parentSpanId).toBe(create.spanId);
    expect(create.attributes).toMatchObject({ "ash.session_id": "sess-1", "ash.agent": "support" });
    expect(spawnSpan.attributes["ash.sandbox_id"]).toBe("sb-1");
  });

  it("hands the sandbox a TRACEPARENT naming the active span, and nothing else without ASH_SANDBOX_OTEL", () => {
    const [spawnSpan] = byName(spans, "sandbox.spawn");
    expect(seen.sandboxEnv).toEqual({ TRACEPARENT: `00-${spawnSpan.traceId}-${spawnSpan.spanId}-01` });
  });

  it("gives a turn a span with usage, tool count and outcome, and a child span per tool call", () => {
    const [turn] = byName(spans, "turn");
    expect(turn.attributes).toMatchObject({
      "ash.session_id": "sess-1",
      "ash.agent": "support",
      "gen_ai.request.model": "claude-test",
      "gen_ai.usage.input_tokens": 1200,
      "gen_ai.usage.output_tokens": 85,
      "ash.usage.cache_read_input_tokens": 400,
      "ash.tool_calls": 2,
      "ash.outcome": "complete",
    });
    expect(turn.status.code).not.toBe(2);
    const [bash] = byName(spans, "tool.Bash");
    const [read] = byName(spans, "tool.Read");
    for (const tool of [bash, read]) {
      expect(tool.traceId).toBe(turn.traceId);
      expect(tool.parentSpanId).toBe(turn.spanId);
    }
    expect(bash.attributes).toMatchObject({ "ash.tool.name": "Bash", "ash.tool.use_id": "tu_1" });
    expect(bash.status.code).not.toBe(2);
    expect(read.status.code).toBe(2);
    expect(seen.summary).toMatchObject({ outcome: "complete", toolCalls: 2, inputTokens: 1200, outputTokens: 85 });
  });

  it("records an exception with status ERROR, rethrows it, and never exports the secret in it", () => {
    expect(seen.thrown).toBe("upload failed for key sk-ant-api03-very-secret-key");
    const [snap] = byName(spans, "sandbox.snapshot");
    expect(snap.status.code).toBe(2);
    const exception = snap.events.find((e) => e.name === "exception")!;
    expect(exception.attributes["exception.message"]).toBe("upload failed for key ***");
    expect(JSON.stringify(collector.requests)).not.toContain("very-secret-key");
  });

  it("counts the turn in the metrics as well", async () => {
    const text = await obs.metrics.render();
    expect(text).toContain('ash_turns_total{outcome="complete"} 1');
    expect(text).toMatch(/ash_turn_first_event_seconds_count 1/);
  });
});

describe("tracing for the agent CLI (ASH_SANDBOX_OTEL)", () => {
  it("passes the CLI's export switches and the collector settings when the operator opts in", async () => {
    const obs = await createObservability({
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://127.0.0.1:9/v1/traces",
      OTEL_EXPORTER_OTLP_HEADERS: "x-tenant=blue",
      ASH_SANDBOX_OTEL: "true",
    });
    try {
      const env = await obs.tracing.withSpan("sandbox.spawn", {}, async () => obs.tracing.traceparentEnv());
      expect(env.TRACEPARENT).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
      expect(env).toMatchObject({
        CLAUDE_CODE_ENABLE_TELEMETRY: "1",
        CLAUDE_CODE_ENHANCED_TELEMETRY_BETA: "1",
        OTEL_TRACES_EXPORTER: "otlp",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://127.0.0.1:9/v1/traces",
        OTEL_EXPORTER_OTLP_HEADERS: "x-tenant=blue",
        OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
      });
      expect(env.OTEL_EXPORTER_OTLP_ENDPOINT).toBeUndefined();
    } finally {
      await obs.shutdown(200);
    }
  });

  it("refuses settings it cannot honour, naming the variable", async () => {
    await expect(createObservability({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4317", OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" })).rejects.toThrow(
      /OTEL_EXPORTER_OTLP_PROTOCOL is "grpc"/,
    );
    await expect(createObservability({ OTEL_EXPORTER_OTLP_ENDPOINT: "collector:4318" })).rejects.toThrow(/OTEL_EXPORTER_OTLP_ENDPOINT must be an http/);
    await expect(createObservability({ ASH_SANDBOX_OTEL: "maybe" })).rejects.toThrow(/ASH_SANDBOX_OTEL must be true or false/);
    await expect(createObservability({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318", OTEL_EXPORTER_OTLP_HEADERS: "=novalue" })).rejects.toThrow(
      /OTEL_EXPORTER_OTLP_HEADERS must be a comma-separated list/,
    );
  });
});

describe("tracing off (no endpoint)", () => {
  it("runs the helpers, records nothing, hands sandboxes nothing", async () => {
    const obs = await createObservability({ ASH_SANDBOX_OTEL: "true" });
    expect(obs.tracing.enabled).toBe(false);
    const result = await obs.tracing.withSpan("session.create", { a: 1 }, async (span) => ({ recording: span.isRecording(), env: obs.tracing.traceparentEnv() }));
    expect(result).toEqual({ recording: false, env: {} });
    await expect(obs.tracing.withSpan("x", {}, async () => Promise.reject(new Error("boom")))).rejects.toThrow("boom");
    const turn = obs.observeTurn({ sessionId: "s", agent: "a" });
    turn.event({ type: "tool_use", data: { id: "t", name: "Bash" } });
    expect(turn.end().toolCalls).toBe(1);
    await obs.shutdown();
  });

  it("does not load the OpenTelemetry SDK at all (checked in a fresh process, with the endpoint as a control)", async () => {
    const dir = await mkdtemp(join(tmpdir(), "ash-otel-"));
    try {
      const script = join(dir, "probe.mts");
      await writeFile(
        script,
        [
          `import { createRequire } from "node:module";`,
          `const { createObservability } = await import(${JSON.stringify(join(ROOT, "src/observability/index.ts"))});`,
          `const obs = await createObservability(process.env.PROBE_ENDPOINT ? { OTEL_EXPORTER_OTLP_ENDPOINT: process.env.PROBE_ENDPOINT } : {});`,
          `const ran = await obs.tracing.withSpan("x", {}, async () => "ran");`,
          `const loaded = Object.keys(createRequire(import.meta.url).cache).filter((p) => p.includes("@opentelemetry/") && !p.includes("@opentelemetry/api/"));`,
          `await obs.shutdown(100);`,
          `console.log(JSON.stringify({ ran, enabled: obs.tracing.enabled, loaded }));`,
        ].join("\n"),
      );
      const run = (env: Record<string, string>) =>
        new Promise<{ ran: string; enabled: boolean; loaded: string[] }>((resolvePromise, reject) => {
          const child = spawn(process.execPath, ["--import", "tsx", script], { cwd: ROOT, env: { PATH: process.env.PATH ?? "", ...env }, stdio: ["ignore", "pipe", "pipe"] });
          let out = "";
          let err = "";
          child.stdout.on("data", (d) => (out += d));
          child.stderr.on("data", (d) => (err += d));
          const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
          child.on("exit", (code) => {
            clearTimeout(timer);
            if (code !== 0) return reject(new Error(`probe exited ${code}: ${err}`));
            resolvePromise(JSON.parse(out.trim().split("\n").at(-1)!));
          });
        });

      // The two probes are independent processes: run side by side.
      const [off, on] = await Promise.all([run({}), run({ PROBE_ENDPOINT: "http://127.0.0.1:9" })]);
      expect(off).toEqual({ ran: "ran", enabled: false, loaded: [] });

      expect(on.enabled).toBe(true);
      expect(on.loaded.some((p) => p.includes("@opentelemetry/sdk-trace-base/"))).toBe(true);
      expect(on.loaded.some((p) => p.includes("@opentelemetry/exporter-trace-otlp-http/"))).toBe(true);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
