import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { agentUpload, readEvents, startTestServer, type TestServer } from "../helpers/server";
import { backends } from "../helpers/backends";
import { startFakeModel } from "../fake-model/fake-model.mjs";

describe.each(backends)("model usage and budgets on $name", (backend) => {
  let server: TestServer;
  let model: Awaited<ReturnType<typeof startFakeModel>>;
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    model = await startFakeModel();
    const prepared = await backend.prepare();
    cleanup = prepared.cleanup;
    server = await startTestServer({ env: prepared.env, modelUrl: model.url });
    expect((await server.api("/api/agents", { method: "POST", json: agentUpload("meter") })).status).toBe(201);
    expect((await server.api("/api/agents", { method: "POST", json: agentUpload("frugal", {}, { maxTokens: 1 }) })).status).toBe(201);
  });
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
    await cleanup?.();
  });

  const newSession = async (agent: string, extra: Record<string, unknown> = {}) => {
    const r = await server.api("/api/sessions", { method: "POST", json: { agent, ...extra } });
    expect(r.status).toBe(201);
    return (await r.json()).session as { id: string; maxTokens: number | null };
  };
  const turn = async (id: string, content: string) => readEvents(await server.api(`/api/sessions/${id}/messages`, { method: "POST", json: { content } }));
  /** What the fake model reported for the Messages calls since `from`. */
  const reported = (from: number) => {
    const calls = model.requests.slice(from).filter((r) => r.usage);
    return {
      requests: calls.length,
      inputTokens: calls.reduce((n, r) => n + r.usage!.input_tokens, 0),
      outputTokens: calls.reduce((n, r) => n + r.usage!.output_tokens, 0),
    };
  };

  it("stores the usage the model reported, per response and turn, and sums it by agent and model", async () => {
    const session = await newSession("meter");
    const from = model.requests.length;
    const events = await turn(session.id, "#bash echo counted");
    const complete = events.find((e) => e.event === "turn_complete")!;
    const expected = reported(from);
    expect(expected.requests).toBeGreaterThanOrEqual(2);
    expect(complete.data.gatewayUsage).toMatchObject({ ...expected, cacheCreationTokens: 0, cacheReadTokens: 0, totalTokens: expected.inputTokens + expected.outputTokens });

    // Stored in the background: poll (bounded) until every response is there.
    let rows: any[] = [];
    for (let i = 0; i < 100 && rows.length < expected.requests; i++) {
      rows = (await (await server.api(`/api/usage?session=${session.id}&limit=1000`)).json()).usage;
      if (rows.length < expected.requests) await new Promise((r) => setTimeout(r, 100));
    }
    expect(rows).toHaveLength(expected.requests);
    const turnIds = new Set(rows.map((r) => r.turnId));
    expect(turnIds.size).toBe(1);
    expect([...turnIds][0]).toEqual(expect.any(String));
    expect(rows.every((r) => r.agentName === "meter" && r.keyId === "server" && r.sessionId === session.id)).toBe(true);
    expect(rows.reduce((n, r) => n + r.inputTokens, 0)).toBe(expected.inputTokens);
    expect(rows.reduce((n, r) => n + r.outputTokens, 0)).toBe(expected.outputTokens);
    expect(rows.map((r) => r.inputTokens)).toEqual(model.requests.slice(from).filter((r) => r.usage).map((r) => r.usage!.input_tokens));

    // Paging: one at a time, in order, to the end.
    const paged: any[] = [];
    let cursor: string | null = null;
    for (let i = 0; i < 20; i++) {
      const page: any = await (await server.api(`/api/usage?session=${session.id}&limit=1${cursor ? `&cursor=${cursor}` : ""}`)).json();
      paged.push(...page.usage);
      cursor = page.nextCursor;
      if (!cursor) break;
    }
    expect(paged.map((r) => r.id)).toEqual(rows.map((r) => r.id));

    const stats = await (await server.api(`/api/usage/stats?agent=meter`)).json();
    const sums = await (await server.api(`/api/usage?agent=meter&limit=1000`)).json();
    expect(stats.totals.inputTokens).toBe(sums.usage.reduce((n: number, r: any) => n + r.inputTokens, 0));
    expect(stats.groups).toEqual([expect.objectContaining({ agentName: "meter", model: expect.any(String), requests: sums.usage.length })]);
    expect((await server.api(`/api/usage?from=not-a-time`)).status).toBe(400);
    expect((await server.api(`/api/usage?to=${Date.now() - 3600_000}`)).status).toBe(200);

    const metrics = await (await server.api("/metrics")).text();
    expect(metrics).toMatch(/ash_model_tokens_total\{agent="meter",model="[^"]+",kind="input"\} [1-9]/);
    expect(metrics).toMatch(/ash_model_tokens_total\{agent="meter",model="[^"]+",kind="output"\} [1-9]/);
  });

  it("stops the turn that crosses a session's budget with budget_exceeded, and works again once it is raised", async () => {
    const session = await newSession("meter", { maxTokens: 1 });
    expect(session.maxTokens).toBe(1);
    // The first call is admitted (nothing used yet) and crosses the budget; the call after the tool is refused.
    const first = await turn(session.id, "#bash echo over-budget");
    const error = first.find((e) => e.event === "error");
    expect(error?.data).toMatchObject({ code: "budget_exceeded", budget: "session", limit: 1 });
    expect(error?.data.used).toBeGreaterThan(1);
    expect(error?.data.error).toMatch(/used \d+ tokens/);
    expect(first.at(-1)?.event).toBe("done");
    const before = model.requests.length;
    const again = await turn(session.id, "still there?");
    expect(again.find((e) => e.event === "error")?.data.code).toBe("budget_exceeded");
    expect(model.requests.length).toBe(before);

    const raised = await server.api(`/api/sessions/${session.id}`, { method: "PATCH", json: { maxTokens: 10_000_000 } });
    expect(raised.status).toBe(200);
    expect((await raised.json()).session.maxTokens).toBe(10_000_000);
    const works = await turn(session.id, "hello again");
    expect(works.some((e) => e.event === "turn_complete")).toBe(true);
    expect(works.some((e) => e.event === "error")).toBe(false);
    expect((await server.api(`/api/sessions/${session.id}`, { method: "PATCH", json: { maxTokens: 0 } })).status).toBe(400);
    const metrics = await (await server.api("/metrics")).text();
    expect(metrics).toMatch(/ash_turns_total\{outcome="budget_exceeded"\} [1-9]/);
  });

  it("applies an agent's default budget to its sessions", async () => {
    const session = await newSession("frugal");
    await turn(session.id, "first");
    const second = await turn(session.id, "second");
    expect(second.find((e) => e.event === "error")?.data).toMatchObject({ code: "budget_exceeded", budget: "agent", limit: 1 });
  });
});

describe("the server's default budget (ASH_DEFAULT_MAX_TOKENS)", () => {
  let server: TestServer;
  let model: Awaited<ReturnType<typeof startFakeModel>>;

  beforeAll(async () => {
    model = await startFakeModel();
    server = await startTestServer({ modelUrl: model.url, env: { ASH_DEFAULT_MAX_TOKENS: "1" } });
    expect((await server.api("/api/agents", { method: "POST", json: agentUpload("plain") })).status).toBe(201);
  });
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
  });

  it("applies to sessions whose agent and request set none, and a session's own budget wins", async () => {
    const limited = (await (await server.api("/api/sessions", { method: "POST", json: { agent: "plain" } })).json()).session;
    await readEvents(await server.api(`/api/sessions/${limited.id}/messages`, { method: "POST", json: { content: "first" } }));
    const second = await readEvents(await server.api(`/api/sessions/${limited.id}/messages`, { method: "POST", json: { content: "second" } }));
    expect(second.find((e) => e.event === "error")?.data).toMatchObject({ code: "budget_exceeded", budget: "server", limit: 1 });
    const own = (await (await server.api("/api/sessions", { method: "POST", json: { agent: "plain", maxTokens: 10_000_000 } })).json()).session;
    for (const content of ["first", "second"]) {
      const events = await readEvents(await server.api(`/api/sessions/${own.id}/messages`, { method: "POST", json: { content } }));
      expect(events.some((e) => e.event === "turn_complete")).toBe(true);
    }
  });
});
