import { describe, expect, it } from "vitest";
import { Registry } from "../../src/observability/registry";
import { Metrics, turnOutcomeOf } from "../../src/observability/metrics";

interface Family {
  name: string;
  help: string;
  type: string;
  samples: Array<{ name: string; labels: Record<string, string>; value: number }>;
}

/**
 * A strict reader of the text format 0.0.4: every line is a HELP, a TYPE or a
 * sample; HELP and TYPE come once per family, before its samples; a sample
 * belongs to the family declared last (histograms: _bucket/_sum/_count);
 * label values use only the three escapes. Anything else throws.
 */
function parseExposition(text: string): Map<string, Family> {
  expect(text.endsWith("\n")).toBe(true);
  const families = new Map<string, Family>();
  let current: Family | undefined;
  const lines = text.slice(0, -1).split("\n");
  for (const [i, line] of lines.entries()) {
    const where = `line ${i + 1}: ${JSON.stringify(line)}`;
    let m: RegExpExecArray | null;
    if ((m = /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line))) {
      if (families.has(m[1])) throw new Error(`second HELP for ${m[1]} at ${where}`);
      current = { name: m[1], help: unescapeHelp(m[2]), type: "", samples: [] };
      families.set(m[1], current);
      continue;
    }
    if ((m = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/.exec(line))) {
      if (!current || current.name !== m[1] || current.type) throw new Error(`TYPE without its HELP at ${where}`);
      current.type = m[2];
      continue;
    }
    if (line.startsWith("#") || line === "") throw new Error(`unexpected ${where}`);
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not a sample: ${where}`);
    if (!current || !current.type) throw new Error(`sample before HELP/TYPE at ${where}`);
    const allowed = current.type === "histogram" ? [`${current.name}_bucket`, `${current.name}_sum`, `${current.name}_count`] : [current.name];
    if (!allowed.includes(m[1])) throw new Error(`sample ${m[1]} outside its family ${current.name} at ${where}`);
    const value = m[4] === "+Inf" ? Infinity : m[4] === "-Inf" ? -Infinity : Number(m[4]);
    if (Number.isNaN(value) && m[4] !== "NaN") throw new Error(`bad value at ${where}`);
    current.samples.push({ name: m[1], labels: parseLabels(m[3] ?? "", where), value });
  }
  return families;
}

function parseLabels(text: string, where: string): Record<string, string> {
  const labels: Record<string, string> = {};
  let rest = text;
  while (rest.length) {
    const m = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"(,|$)/.exec(rest);
    if (!m) throw new Error(`bad labels at ${where}`);
    if (m[1] in labels) throw new Error(`label ${m[1]} twice at ${where}`);
    labels[m[1]] = m[2].replace(/\\(\\|"|n)/g, (_, c) => (c === "n" ? "\n" : c));
    rest = rest.slice(m[0].length);
    if (m[3] === "" && rest.length) throw new Error(`junk after labels at ${where}`);
  }
  return labels;
}

function unescapeHelp(text: string): string {
  return text.replace(/\\(\\|n)/g, (_, c) => (c === "n" ? "\n" : c));
}

/** Buckets are cumulative, end in +Inf, and +Inf equals _count. */
function checkHistogram(family: Family, labels: Record<string, string> = {}): { buckets: Array<[number, number]>; sum: number; count: number } {
  const same = (s: { labels: Record<string, string> }) => Object.entries(labels).every(([k, v]) => s.labels[k] === v);
  const buckets = family.samples
    .filter((s) => s.name.endsWith("_bucket") && same(s))
    .map((s) => [s.labels.le === "+Inf" ? Infinity : Number(s.labels.le), s.value] as [number, number]);
  expect(buckets.length).toBeGreaterThan(1);
  for (let i = 1; i < buckets.length; i++) {
    expect(buckets[i][0]).toBeGreaterThan(buckets[i - 1][0]);
    expect(buckets[i][1]).toBeGreaterThanOrEqual(buckets[i - 1][1]);
  }
  expect(buckets.at(-1)![0]).toBe(Infinity);
  const count = family.samples.find((s) => s.name.endsWith("_count") && same(s))!.value;
  const sum = family.samples.find((s) => s.name.endsWith("_sum") && same(s))!.value;
  expect(buckets.at(-1)![1]).toBe(count);
  return { buckets, sum, count };
}

describe("the strict reader used here", () => {
  it("rejects output a scraper would reject", () => {
    expect(() => parseExposition("x 1\n")).toThrow(/before HELP/);
    expect(() => parseExposition("# HELP x h\n# TYPE x gauge\nx{a=\"1} 1\n")).toThrow(/bad labels/);
    expect(() => parseExposition("# HELP x h\n# TYPE x gauge\ny 1\n")).toThrow(/outside its family/);
    expect(() => parseExposition("# HELP x h\n# TYPE x gauge\nx one\n")).toThrow(/bad value/);
  });
});

describe("the Prometheus registry", () => {
  it("renders counters, gauges and histograms in the text format", async () => {
    const r = new Registry();
    const c = r.counter("jobs_total", "Jobs done.", ["kind"]);
    c.inc({ kind: "a" });
    c.inc({ kind: "a" }, 2);
    c.inc({ kind: "b" });
    r.gauge("temperature", "Now.").set(undefined, -3.5);
    const h = r.histogram("latency_seconds", "How long.", ["route"], [0.1, 1, 10]);
    for (const v of [0.05, 0.1, 0.5, 2, 100]) h.observe({ route: "/x" }, v);

    const text = await r.render();
    const families = parseExposition(text);
    expect(families.get("jobs_total")!.type).toBe("counter");
    expect(families.get("jobs_total")!.samples).toEqual([
      { name: "jobs_total", labels: { kind: "a" }, value: 3 },
      { name: "jobs_total", labels: { kind: "b" }, value: 1 },
    ]);
    expect(families.get("temperature")!.samples).toEqual([{ name: "temperature", labels: {}, value: -3.5 }]);
    const hist = checkHistogram(families.get("latency_seconds")!, { route: "/x" });
    // 0.1 is inside the 0.1 bucket: bounds are inclusive.
    expect(hist.buckets).toEqual([
      [0.1, 2],
      [1, 3],
      [10, 4],
      [Infinity, 5],
    ]);
    expect(hist.count).toBe(5);
    expect(hist.sum).toBeCloseTo(102.65);
    expect(text).toContain('latency_seconds_bucket{route="/x",le="+Inf"} 5');
  });

  it("escapes label values and help text so the output still parses", async () => {
    const r = new Registry();
    r.counter("odd_total", 'Help with a \\ backslash\nand a newline and "quotes".', ["v"]).inc({ v: 'a"b\\c\nd' });
    const text = await r.render();
    expect(text).toContain('odd_total{v="a\\"b\\\\c\\nd"} 1');
    const family = parseExposition(text).get("odd_total")!;
    expect(family.help).toBe('Help with a \\ backslash\nand a newline and "quotes".');
    expect(family.samples[0].labels.v).toBe('a"b\\c\nd');
  });

  it("refuses what would make bad output: unknown or missing labels, falling counters, bad names, unsorted buckets", () => {
    const r = new Registry();
    const c = r.counter("c_total", "c", ["a"]);
    expect(() => c.inc({ b: "x" } as any)).toThrow(/no label "b"/);
    expect(() => c.inc({})).toThrow(/needs the label "a"/);
    expect(() => c.inc({ a: "x" }, -1)).toThrow(/only goes up/);
    expect(() => r.counter("bad-name", "x")).toThrow(/Invalid metric name/);
    expect(() => r.counter("c2_total", "x", ["le"])).toThrow(/Invalid label name/);
    expect(() => r.histogram("h", "x", [], [1, 1])).toThrow(/increase/);
    expect(() => r.counter("c_total", "again")).toThrow(/twice/);
    expect(c.get({ a: "x" })).toBe(0);
  });

  it("leaves a gauge whose collect callback fails or hangs without samples, and still answers", async () => {
    const errors: string[] = [];
    const r = new Registry({ collectTimeoutMs: 50, onCollectError: (name) => errors.push(name) });
    r.gauge("broken", "Throws.", [], () => {
      throw new Error("database down");
    });
    r.gauge("hanging", "Never answers.", [], () => new Promise(() => undefined));
    r.gauge("fine", "Works.", ["k"], async () => [{ labels: { k: "v" }, value: 7 }]);
    const families = parseExposition(await r.render());
    expect(families.get("broken")!.samples).toEqual([]);
    expect(families.get("hanging")!.samples).toEqual([]);
    expect(families.get("fine")!.samples).toEqual([{ name: "fine", labels: { k: "v" }, value: 7 }]);
    expect(errors.sort()).toEqual(["broken", "hanging"]);
  });
});

describe("Ash's metrics", () => {
  it("exposes every metric an operator needs, with HELP and TYPE, before anything happened", async () => {
    const families = parseExposition(await new Metrics({ version: "9.9.9" }).render());
    const expected: Record<string, string> = {
      ash_build_info: "gauge",
      ash_sandboxes: "gauge",
      ash_sessions: "gauge",
      ash_turns_total: "counter",
      ash_turn_duration_seconds: "histogram",
      ash_turn_first_event_seconds: "histogram",
      ash_evictions_total: "counter",
      ash_resumes_total: "counter",
      ash_resume_hits_total: "counter",
      ash_sandbox_start_duration_seconds: "histogram",
      ash_snapshot_bytes: "histogram",
      ash_snapshot_duration_seconds: "histogram",
      ash_snapshot_saves_total: "counter",
      ash_limit_kills_total: "counter",
      ash_http_requests_total: "counter",
      ash_http_request_duration_seconds: "histogram",
      ash_database_errors_total: "counter",
      ash_telemetry_sent_total: "counter",
      ash_telemetry_dropped_total: "counter",
      ash_telemetry_queue_events: "gauge",
      ash_model_tokens_total: "counter",
      ash_gateway_rejected_total: "counter",
      ash_budget_refusals_total: "counter",
      ash_egress_connections_total: "counter",
      process_start_time_seconds: "gauge",
      process_resident_memory_bytes: "gauge",
      process_cpu_seconds_total: "gauge",
    };
    for (const [name, type] of Object.entries(expected)) {
      expect(families.get(name), name).toBeDefined();
      expect(families.get(name)!.type, name).toBe(type);
      expect(families.get(name)!.help.length, name).toBeGreaterThan(5);
    }
    expect(families.get("ash_build_info")!.samples).toEqual([{ name: "ash_build_info", labels: { version: "9.9.9" }, value: 1 }]);
    expect(families.get("process_resident_memory_bytes")!.samples[0].value).toBeGreaterThan(1_000_000);
    // Series without labels exist from the start, at zero.
    expect(families.get("ash_database_errors_total")!.samples).toEqual([{ name: "ash_database_errors_total", labels: {}, value: 0 }]);
    expect(checkHistogram(families.get("ash_turn_duration_seconds")!).count).toBe(0);
  });

  it("counts turns by outcome and times them, first event included", async () => {
    const m = new Metrics();
    m.turnFinished({ outcome: "complete", durationMs: 1500, firstEventMs: 80 });
    m.turnFinished({ outcome: "complete", durationMs: 700, firstEventMs: 300 });
    m.turnFinished({ outcome: "interrupted", durationMs: 9000 });
    m.turnFinished({ outcome: "something_new", durationMs: 10 });
    const f = parseExposition(await m.render());
    const byOutcome = Object.fromEntries(f.get("ash_turns_total")!.samples.map((s) => [s.labels.outcome, s.value]));
    expect(byOutcome).toEqual({ complete: 2, interrupted: 1, error: 1 });
    const duration = checkHistogram(f.get("ash_turn_duration_seconds")!);
    expect(duration.count).toBe(4);
    expect(duration.sum).toBeCloseTo(11.21);
    const first = checkHistogram(f.get("ash_turn_first_event_seconds")!);
    expect(first.count).toBe(2);
    expect(first.buckets.find(([le]) => le === 0.1)![1]).toBe(1);
  });

  it("labels HTTP requests by route pattern, normalizes methods and bounds label values", async () => {
    const m = new Metrics();
    m.httpRequest({ route: "/api/sessions/:id/messages", method: "post", status: 200, durationMs: 12 });
    m.httpRequest({ route: "/api/sessions/:id/messages", method: "POST", status: 409, durationMs: 3 });
    m.httpRequest({ route: "unmatched", method: "BREW", status: 404, durationMs: 1 });
    const f = parseExposition(await m.render());
    expect(f.get("ash_http_requests_total")!.samples.map((s) => s.labels)).toEqual([
      { route: "/api/sessions/:id/messages", method: "POST", status: "200" },
      { route: "/api/sessions/:id/messages", method: "POST", status: "409" },
      { route: "unmatched", method: "OTHER", status: "404" },
    ]);
    const d = checkHistogram(f.get("ash_http_request_duration_seconds")!, { route: "/api/sessions/:id/messages", method: "POST" });
    expect(d.count).toBe(2);
  });

  it("counts evictions, resumes, limit kills, snapshots, database errors and telemetry", async () => {
    const m = new Metrics();
    m.evicted("idle");
    m.evicted("idle");
    m.evicted("capacity");
    m.evicted("bogus" as any);
    m.resumed("snapshot");
    m.resumed("fresh");
    m.limitKilled("sandbox_oom");
    m.snapshotTaken({ bytes: 2_000_000, durationMs: 120, listed: "everything" });
    m.snapshotTaken({ bytes: 2_000_000, durationMs: 10, listed: "changes" });
    m.snapshotTaken({ bytes: 2_000_000, durationMs: 10, listed: "bogus" as any });
    m.sandboxStarted({ durationMs: 900 });
    m.databaseError();
    m.telemetrySent(100);
    m.telemetryDropped(3);
    m.telemetryDropped(0);
    const f = parseExposition(await m.render());
    const values = (name: string, label: string) => Object.fromEntries(f.get(name)!.samples.map((s) => [s.labels[label], s.value]));
    expect(values("ash_evictions_total", "reason")).toEqual({ idle: 2, capacity: 1, other: 1 });
    expect(values("ash_resumes_total", "from")).toEqual({ snapshot: 1, fresh: 1 });
    expect(values("ash_limit_kills_total", "kind")).toEqual({ sandbox_oom: 1 });
    const bytes = checkHistogram(f.get("ash_snapshot_bytes")!);
    expect(bytes.sum).toBe(6_000_000);
    expect(bytes.buckets.find(([le]) => le === 1_048_576)![1]).toBe(0);
    expect(bytes.buckets.find(([le]) => le === 16_777_216)![1]).toBe(3);
    expect(checkHistogram(f.get("ash_snapshot_duration_seconds")!).sum).toBeCloseTo(0.14);
    expect(values("ash_snapshot_saves_total", "listed")).toEqual({ changes: 1, everything: 2 });
    expect(checkHistogram(f.get("ash_sandbox_start_duration_seconds")!).count).toBe(1);
    expect(f.get("ash_database_errors_total")!.samples[0].value).toBe(1);
    expect(f.get("ash_telemetry_sent_total")!.samples[0].value).toBe(100);
    expect(f.get("ash_telemetry_dropped_total")!.samples[0].value).toBe(3);
  });

  it("reads sandbox and session counts on each scrape, every state present", async () => {
    const m = new Metrics();
    let busy = 1;
    m.collectSandboxes(() => ({ busy, idle: 2, evicted: 5 }));
    m.collectSessions(async () => ({ active: 3, paused: 1 }));
    let f = parseExposition(await m.render());
    expect(Object.fromEntries(f.get("ash_sandboxes")!.samples.map((s) => [s.labels.state, s.value]))).toEqual({ busy: 1, idle: 2, evicted: 5 });
    expect(Object.fromEntries(f.get("ash_sessions")!.samples.map((s) => [s.labels.status, s.value]))).toEqual({
      starting: 0,
      active: 3,
      paused: 1,
      stopped: 0,
      ended: 0,
      error: 0,
    });
    busy = 4;
    f = parseExposition(await m.render());
    expect(f.get("ash_sandboxes")!.samples.find((s) => s.labels.state === "busy")!.value).toBe(4);
  });

  it("derives a turn's outcome from its final events", () => {
    expect(turnOutcomeOf([{ type: "turn_complete", data: {} }])).toBe("complete");
    expect(turnOutcomeOf([{ type: "error", data: { code: "sandbox_oom" } }])).toBe("sandbox_oom");
    expect(turnOutcomeOf([{ type: "turn_complete", data: {} }, { type: "error", data: { code: "max_turns" } }])).toBe("max_turns");
    expect(turnOutcomeOf([{ type: "error", data: { code: "brand_new_code" } }])).toBe("error");
  });
});
