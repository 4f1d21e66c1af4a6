import { randomUUID } from "node:crypto";
import { getRouterParam, type H3, type H3Event } from "h3";
import { z } from "zod";
import type { AppContext } from "../context";
import { principalOf } from "../auth";
import { readJsonBody } from "../body";
import { parseWholeNumber, validate, singleQuery } from "../validate";
import { notFound } from "../errors";
import { json } from "./sessions";
import { getAgent } from "../../db/queries/agents";
import {
  deleteEvalCase,
  deleteEvalCasesOf,
  getEvalResult,
  getEvalRun,
  insertEvalCase,
  listEvalCases,
  listEvalResults,
  listEvalRuns,
  setHumanScore,
  type EvalCaseRecord,
  type EvalResultRecord,
  type EvalRunRecord,
} from "../../db/queries/evals";
import { caseScore, summarize } from "../../evals/scoring";

const topic = z.string().min(1).max(500);
const caseSchema = z
  .object({
    question: z.string().min(1, "must not be empty").max(100_000),
    expectedTopics: z.array(topic).max(100).optional(),
    unexpectedTopics: z.array(topic).max(100).optional(),
    referenceAnswer: z.string().max(100_000).nullable().optional(),
    category: z.string().min(1).max(200).nullable().optional(),
    tags: z.array(z.string().min(1).max(100)).max(50).optional(),
    history: z
      .array(z.object({ role: z.enum(["user", "assistant"]), content: z.string().min(1).max(100_000) }).strict())
      .max(50)
      .optional(),
  })
  .strict();

// What export writes is what import reads (the agent's name is informational).
const importSchema = z
  .object({
    format: z.literal("ash-evals/1").optional(),
    agent: z.string().optional(),
    cases: z.array(caseSchema).min(1, "must list at least one case").max(1000),
    replace: z.boolean().optional(),
  })
  .strict();

const runSchema = z
  .object({
    version: z.number().int().min(1).optional(),
    concurrency: z.number().int().min(1).max(100).optional(),
    grade: z.boolean().optional(),
    category: z.string().min(1).max(200).optional(),
    tags: z.array(z.string().min(1).max(100)).max(50).optional(),
  })
  .strict();

const humanSchema = z
  .object({
    humanScore: z.number().min(0).max(1).nullable(),
    notes: z.string().max(10_000).nullable().optional(),
  })
  .strict();

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

function caseFields(c: EvalCaseRecord) {
  return {
    question: c.question,
    expectedTopics: c.expectedTopics,
    unexpectedTopics: c.unexpectedTopics,
    referenceAnswer: c.referenceAnswer,
    category: c.category,
    tags: c.tags,
    history: c.history,
  };
}

export function presentCase(c: EvalCaseRecord) {
  return { id: c.id, agent: c.agentName, ...caseFields(c), createdAt: iso(c.createdAt) };
}

export function presentResult(r: EvalResultRecord) {
  return {
    caseId: r.caseId,
    question: r.question,
    status: r.status,
    sessionId: r.sessionId,
    answer: r.answer,
    error: r.error,
    score: caseScore(r),
    autoScore: r.auto?.score ?? null,
    pass: r.auto?.pass ?? null,
    checks: r.auto ? { expectedFound: r.auto.expectedFound, expectedMissing: r.auto.expectedMissing, unexpectedFound: r.auto.unexpectedFound } : null,
    gradeScore: r.grade?.score ?? null,
    grade: r.grade,
    humanScore: r.human?.score ?? null,
    humanNotes: r.human?.notes ?? null,
    startedAt: iso(r.startedAt),
    completedAt: iso(r.completedAt),
  };
}

export function presentRun(run: EvalRunRecord, results: EvalResultRecord[]) {
  return {
    id: run.id,
    agent: run.agentName,
    agentVersion: run.agentVersion,
    status: run.status,
    grade: run.grade,
    error: run.error,
    createdAt: iso(run.createdAt),
    completedAt: iso(run.completedAt),
    summary: summarize(results),
  };
}

const name = (event: H3Event) => getRouterParam(event, "name")!;
const param = (event: H3Event, key: string) => getRouterParam(event, key)!;

/** Evaluation cases per agent, runs against an agent version, scores, comparisons. */
export function registerEvals(app: H3, ctx: AppContext): void {
  const requireAgent = async (event: H3Event) => {
    const agent = await getAgent(ctx.db, principalOf(event).tenantId, name(event));
    if (!agent) throw notFound(`No agent named "${name(event)}".`);
    return agent;
  };
  const requireRun = async (event: H3Event, id: string) => {
    const run = await getEvalRun(ctx.db, id);
    if (!run || run.tenantId !== principalOf(event).tenantId) throw notFound(`No evaluation run with id "${id}".`);
    return run;
  };
  const insertCases = async (agent: { tenantId: string; name: string }, cases: z.infer<typeof caseSchema>[], replace: boolean) => {
    const agentName = agent.name;
    const now = Date.now();
    const ids: string[] = cases.map(() => randomUUID());
    await ctx.db.transaction(async (tx) => {
      if (replace) await deleteEvalCasesOf(tx, agent.tenantId, agentName);
      for (const [i, c] of cases.entries()) {
        await insertEvalCase(tx, {
          id: ids[i]!,
          tenantId: agent.tenantId,
          agentName,
          // Listed in the order given: each case a millisecond after the one before.
          createdAt: now + i,
          question: c.question,
          expectedTopics: c.expectedTopics ?? [],
          unexpectedTopics: c.unexpectedTopics ?? [],
          referenceAnswer: c.referenceAnswer ?? null,
          category: c.category ?? null,
          tags: c.tags ?? [],
          history: c.history ?? [],
        });
      }
    });
    return ids;
  };

  app.get("/api/agents/:name/evals/cases", async (event) => {
    const agent = await requireAgent(event);
    return { cases: (await listEvalCases(ctx.db, agent.tenantId, agent.name)).map(presentCase) };
  });

  app.post("/api/agents/:name/evals/cases", async (event) => {
    const body = validate(caseSchema, await readJsonBody(event, ctx.config.maxBodyBytes));
    const agent = await requireAgent(event);
    const [id] = await insertCases(agent, [body], false);
    return json(201, { case: presentCase((await listEvalCases(ctx.db, agent.tenantId, agent.name)).find((c) => c.id === id)!) });
  });

  app.delete("/api/agents/:name/evals/cases/:caseId", async (event) => {
    const agent = await requireAgent(event);
    if (!(await deleteEvalCase(ctx.db, agent.tenantId, agent.name, param(event, "caseId")))) throw notFound(`Agent "${agent.name}" has no evaluation case "${param(event, "caseId")}".`);
    return { deleted: param(event, "caseId") };
  });

  app.post("/api/agents/:name/evals/import", async (event) => {
    const body = validate(importSchema, await readJsonBody(event, ctx.config.maxBodyBytes));
    const agent = await requireAgent(event);
    const ids = await insertCases(agent, body.cases, body.replace ?? false);
    const all = await listEvalCases(ctx.db, agent.tenantId, agent.name);
    return json(201, { imported: ids.length, total: all.length, cases: all.filter((c) => ids.includes(c.id)).map(presentCase) });
  });

  app.get("/api/agents/:name/evals/export", async (event) => {
    const agent = await requireAgent(event);
    return { format: "ash-evals/1", agent: agent.name, cases: (await listEvalCases(ctx.db, agent.tenantId, agent.name)).map(caseFields) };
  });

  // 202: the run goes on in the background; follow it at GET /api/eval-runs/:id.
  app.post("/api/agents/:name/evals/runs", async (event) => {
    const body = await readJsonBody(event, ctx.config.maxBodyBytes, { optional: true });
    const input = body === undefined ? {} : validate(runSchema, body);
    const caller = principalOf(event);
    await ctx.limits.admitQueued(caller);
    const run = await ctx.evals.startRun({ agent: name(event), tenantId: caller.tenantId, apiKeyId: caller.keyId, ...input });
    return json(202, { run: presentRun(run, await listEvalResults(ctx.db, run.id)) });
  });

  app.get("/api/agents/:name/evals/runs", async (event) => {
    const agent = await requireAgent(event);
    const q = singleQuery(event);
    const limit = q.limit === undefined ? 20 : parseWholeNumber(typeof q.limit === "string" ? q.limit : "", 'The query parameter "limit"', 1, 200);
    const runs = await listEvalRuns(ctx.db, agent.tenantId, agent.name, limit);
    return { runs: await Promise.all(runs.map(async (run) => presentRun(run, await listEvalResults(ctx.db, run.id)))) };
  });

  app.get("/api/eval-runs/:id", async (event) => {
    const run = await requireRun(event, param(event, "id"));
    const results = await listEvalResults(ctx.db, run.id);
    return { run: presentRun(run, results), results: results.map(presentResult) };
  });

  // A person's score (0 to 1, or null to take it back) and notes; it becomes the case's score.
  app.patch("/api/eval-runs/:id/results/:caseId", async (event) => {
    const body = validate(humanSchema, await readJsonBody(event, ctx.config.maxBodyBytes));
    const run = await requireRun(event, param(event, "id"));
    const caseId = param(event, "caseId");
    if (!(await getEvalResult(ctx.db, run.id, caseId))) throw notFound(`Evaluation run ${run.id} has no case "${caseId}".`);
    const human = body.humanScore === null && !body.notes ? null : { score: body.humanScore, notes: body.notes ?? null, at: Date.now() };
    await setHumanScore(ctx.db, run.id, caseId, human);
    return { result: presentResult((await getEvalResult(ctx.db, run.id, caseId))!) };
  });

  // Case by case: the other run's score minus this one's.
  app.get("/api/eval-runs/:id/compare/:other", async (event) => {
    const base = await requireRun(event, param(event, "id"));
    const other = await requireRun(event, param(event, "other"));
    const [a, b] = await Promise.all([listEvalResults(ctx.db, base.id), listEvalResults(ctx.db, other.id)]);
    const byCase = new Map(b.map((r) => [r.caseId, r]));
    const ids = [...a.map((r) => r.caseId), ...b.filter((r) => !a.some((x) => x.caseId === r.caseId)).map((r) => r.caseId)];
    const cases = ids.map((caseId) => {
      const x = a.find((r) => r.caseId === caseId);
      const y = byCase.get(caseId);
      const before = x ? caseScore(x) : null;
      const after = y ? caseScore(y) : null;
      const delta = before !== null && after !== null ? Math.round((after - before) * 10_000) / 10_000 : null;
      return { caseId, question: (x ?? y)!.question, base: before, other: after, delta, change: delta === null ? "missing" : delta > 0 ? "improved" : delta < 0 ? "regressed" : "same" };
    });
    const count = (change: string) => cases.filter((c) => c.change === change).length;
    const [sa, sb] = [summarize(a), summarize(b)];
    return {
      base: presentRun(base, a),
      other: presentRun(other, b),
      cases,
      summary: {
        improved: count("improved"),
        regressed: count("regressed"),
        same: count("same"),
        missing: count("missing"),
        delta: sa.score !== null && sb.score !== null ? Math.round((sb.score - sa.score) * 10_000) / 10_000 : null,
      },
    };
  });
}
