import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { agentUpload, startTestServer, type TestServer } from "../helpers/server";
import { ashInProcess } from "../helpers/cli";
import { startFakeModel, type FakeModel } from "../fake-model/fake-model.mjs";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const CASES = [
  { question: "tell me about apples and pears", expectedTopics: ["Apples", "pears"], unexpectedTopics: ["bananas"], referenceAnswer: "Both are fruit.", category: "fruit", tags: ["easy"] },
  { question: "name a fruit", expectedTopics: ["kiwi"], unexpectedTopics: ["fruit"], category: "fruit", tags: ["hard"] },
  {
    question: "what did I say first",
    expectedTopics: ["turns seen: 2"],
    history: [
      { role: "user", content: "my name is Ada" },
      { role: "assistant", content: "Hello Ada." },
    ],
  },
];

describe("evaluations", () => {
  let model: FakeModel;
  let server: TestServer;
  let dir: string;
  let flags: string[];
  const graded: string[] = [];

  const waitForRun = async (id: string) => {
    for (let i = 0; i < 900; i++) {
      const body = await (await server.api(`/api/eval-runs/${id}`)).json();
      if (body.run.status !== "running") return body;
      await sleep(100);
    }
    throw new Error(`run ${id} did not finish`);
  };

  beforeAll(async () => {
    model = await startFakeModel({
      respond: (request) => {
        // The grader's calls carry its own system prompt; everything else is the agent's.
        if (typeof request.system === "string" && request.system.startsWith("You grade answers")) {
          graded.push(JSON.stringify(request.messages));
          return { text: 'Here is my verdict: {"score": 0.8, "reason": "Close enough."}' };
        }
        return undefined;
      },
    });
    server = await startTestServer({ modelUrl: model.url, env: { ASH_EVAL_CONCURRENCY: "2", ASH_EVAL_GRADER_MODEL: "grader-model" } });
    dir = mkdtempSync(join(tmpdir(), "ash-evals-"));
    flags = ["--url", server.url, "--api-key", server.apiKey];
    expect((await server.api("/api/agents", { method: "POST", json: agentUpload("quiz") })).status).toBe(201);
    expect((await server.api("/api/agents", { method: "POST", json: agentUpload("quiz", { "notes.md": "version two" }) })).status).toBe(201);
  }, 180_000);
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  let first: any;

  it("imports cases from a file and exports them in the same shape", async () => {
    const file = join(dir, "cases.json");
    writeFileSync(file, JSON.stringify({ cases: CASES }));
    const imported = await ashInProcess(["eval", "import", "quiz", file, ...flags]);
    expect(imported.code, imported.stderr).toBe(0);
    expect(imported.stdout).toContain("Imported 3 cases; quiz has 3.");
    const out = join(dir, "export.json");
    expect((await ashInProcess(["eval", "export", "quiz", "--out", out, ...flags])).code).toBe(0);
    const exported = JSON.parse(readFileSync(out, "utf8"));
    expect(exported).toMatchObject({ format: "ash-evals/1", agent: "quiz" });
    expect(exported.cases).toEqual([
      { history: [], ...CASES[0] },
      { unexpectedTopics: [], referenceAnswer: null, tags: [], history: [], ...CASES[1] },
      { unexpectedTopics: [], referenceAnswer: null, category: null, tags: [], ...CASES[2] },
    ]);
    const listed = await ashInProcess(["eval", "list", "quiz", ...flags]);
    expect(listed.stdout).toContain("name a fruit");
  });

  it("runs every case as a session of the chosen version, with automatic checks and the model's grade", async () => {
    const started = await server.api("/api/agents/quiz/evals/runs", { method: "POST", json: { version: 1 } });
    expect(started.status).toBe(202);
    const { run } = await started.json();
    expect(run).toMatchObject({ agent: "quiz", agentVersion: 1, status: "running", grade: true });
    first = await waitForRun(run.id);
    expect(first.run.status).toBe("completed");
    const [apples, fruit, memory] = first.results;
    // The echo names both expected topics (case does not matter) and no unexpected one.
    expect(apples).toMatchObject({ status: "completed", answer: "Echo: tell me about apples and pears [turns seen: 1]", autoScore: 1, pass: true, gradeScore: 0.8, score: 0.9 });
    // No kiwi, and "fruit" was not to be mentioned: both checks fail.
    expect(fruit).toMatchObject({ autoScore: 0, pass: false, gradeScore: 0.8, score: 0.4 });
    expect(fruit.checks).toEqual({ expectedFound: [], expectedMissing: ["kiwi"], unexpectedFound: ["fruit"] });
    // The prior user turn ran first, in the same session.
    expect(memory).toMatchObject({ answer: "Echo: what did I say first [turns seen: 2]", autoScore: 1, score: 0.9 });
    expect(first.run.summary).toMatchObject({ cases: 3, completed: 3, failed: 0, passed: 2, score: 0.7333, autoScore: 0.6667, gradeScore: 0.8, humanScored: 0 });
    expect(graded).toHaveLength(3);
    expect(graded.join("\n")).toContain("Both are fruit.");
    expect(model.requests.filter((r) => r.body.model === "grader-model")).toHaveLength(3);
    for (const result of first.results) {
      const { session } = await (await server.api(`/api/sessions/${result.sessionId}`)).json();
      expect(session).toMatchObject({ agentName: "quiz", agentVersion: 1, status: "ended" });
    }
  });

  it("takes a human score with notes, which becomes the case's score", async () => {
    const fruit = first.results[1];
    const patched = await server.api(`/api/eval-runs/${first.run.id}/results/${fruit.caseId}`, { method: "PATCH", json: { humanScore: 1, notes: "A fine fruit." } });
    expect(patched.status).toBe(200);
    expect((await patched.json()).result).toMatchObject({ humanScore: 1, humanNotes: "A fine fruit.", score: 1, autoScore: 0 });
    const now = await (await server.api(`/api/eval-runs/${first.run.id}`)).json();
    expect(now.run.summary).toMatchObject({ score: 0.9333, humanScored: 1 });
  });

  it("gates on a threshold from the CLI and compares two runs case by case", async () => {
    // Automatic checks only: 1, 0 and 1.
    const failing = await ashInProcess(["eval", "run", "quiz", "--no-grade", "--threshold", "0.9", ...flags]);
    expect(failing.code).toBe(1);
    expect(failing.stdout).toMatch(/CASE\s+STATUS\s+AUTO\s+GRADE\s+HUMAN\s+SCORE\s+QUESTION/);
    expect(failing.stdout).toContain("name a fruit");
    expect(failing.stderr).toContain("score 0.67");
    expect(failing.stderr).toContain("below the threshold 0.90");
    const passing = await ashInProcess(["eval", "run", "quiz", "--no-grade", "--threshold", "0.6", "--version", "2", "--json", ...flags]);
    expect(passing.code).toBe(0);
    const second = JSON.parse(passing.stdout);
    expect(second.run).toMatchObject({ agentVersion: 2, grade: false, status: "completed" });
    expect(second.results.map((r: any) => r.gradeScore)).toEqual([null, null, null]);

    const compared = await (await server.api(`/api/eval-runs/${first.run.id}/compare/${second.run.id}`)).json();
    expect(compared.cases.map((c: any) => [c.base, c.other, c.change])).toEqual([
      [0.9, 1, "improved"],
      [1, 0, "regressed"],
      [0.9, 1, "improved"],
    ]);
    expect(compared.summary).toEqual({ improved: 2, regressed: 1, same: 0, missing: 0, delta: -0.2666 });
    const cli = await ashInProcess(["eval", "compare", first.run.id, second.run.id, ...flags]);
    expect(cli.code).toBe(0);
    expect(cli.stdout).toContain("regressed");
    expect(cli.stderr).toContain("2 improved, 1 regressed");
    const runs = await ashInProcess(["eval", "list", "quiz", "--runs", "--json", ...flags]);
    expect(JSON.parse(runs.stdout)).toHaveLength(3);
    expect((await ashInProcess(["eval", "run", "quiz", "--threshold", "2", ...flags])).code).toBe(2);
  });

  it("refuses bad input with a clear 4xx", async () => {
    const before = (await (await server.api("/api/agents/quiz/evals/cases")).json()).cases.length;
    const cases: Array<[string, string, unknown, number, RegExp]> = [
      ["POST", "/api/agents/quiz/evals/import", { cases: [{ expectedTopics: ["x"] }] }, 400, /question" is required/],
      ["POST", "/api/agents/quiz/evals/import", { cases: [] }, 400, /at least one case/],
      ["POST", "/api/agents/quiz/evals/import", { cases: [{ question: "q", history: [{ role: "system", content: "x" }] }] }, 400, /history/],
      ["POST", "/api/agents/nobody/evals/import", { cases: [{ question: "q" }] }, 404, /No agent named "nobody"/],
      ["POST", "/api/agents/quiz/evals/runs", { version: 9 }, 404, /no version 9/],
      ["POST", "/api/agents/quiz/evals/runs", { category: "none such" }, 422, /no evaluation cases that match/],
      ["POST", "/api/agents/quiz/evals/runs", { speed: "fast" }, 400, /Unknown field: speed/],
      ["PATCH", `/api/eval-runs/${first.run.id}/results/${first.results[0].caseId}`, { humanScore: 2 }, 400, /humanScore/],
      ["PATCH", `/api/eval-runs/${first.run.id}/results/nope`, { humanScore: 1 }, 404, /no case "nope"/],
      ["GET", "/api/eval-runs/nope", undefined, 404, /No evaluation run/],
    ];
    for (const [method, path, json, status, message] of cases) {
      const response = await server.api(path, { method, json });
      expect(response.status, `${method} ${path}`).toBe(status);
      expect((await response.json()).error).toMatch(message);
    }
    expect((await (await server.api("/api/agents/quiz/evals/cases")).json()).cases).toHaveLength(before);
  });
});
