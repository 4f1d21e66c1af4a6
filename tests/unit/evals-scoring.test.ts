import { describe, expect, it } from "vitest";
import { autoScore, caseScore, summarize } from "../../src/evals/scoring";
import { readGrade } from "../../src/evals/grader";
import type { EvalResultRecord } from "../../src/db/queries/evals";

const result = (over: Partial<EvalResultRecord>): EvalResultRecord => ({
  runId: "r",
  caseId: "c",
  position: 0,
  question: "q",
  status: "completed",
  sessionId: null,
  answer: "",
  error: null,
  auto: null,
  grade: null,
  human: null,
  startedAt: null,
  completedAt: null,
  ...over,
});

describe("evaluation scores", () => {
  it("counts each expected topic present and each unexpected one absent, ignoring case and blanks", () => {
    expect(autoScore("Paris is the  capital of FRANCE", ["paris", "capital of france"], ["london"])).toEqual({
      score: 1,
      pass: true,
      expectedFound: ["paris", "capital of france"],
      expectedMissing: [],
      unexpectedFound: [],
    });
    expect(autoScore("London, probably", ["Paris"], ["london", "berlin"])).toMatchObject({ score: 0.3333, pass: false, expectedMissing: ["Paris"], unexpectedFound: ["london"] });
    expect(autoScore("anything", [], [])).toMatchObject({ score: 1, pass: true });
  });

  it("takes the human score first, then the mean of automatic and graded, and 0 for a failed case", () => {
    const auto = autoScore("a", ["a"], ["b"]);
    expect(caseScore(result({ auto }))).toBe(1);
    expect(caseScore(result({ auto, grade: { score: 0.5, reason: null, model: "m" } }))).toBe(0.75);
    expect(caseScore(result({ auto, grade: { score: 0.5, reason: null, model: "m" }, human: { score: 0.1, notes: null, at: 1 } }))).toBe(0.1);
    expect(caseScore(result({ status: "failed" }))).toBe(0);
    expect(caseScore(result({ status: "running" }))).toBeNull();
    expect(summarize([result({ auto }), result({ status: "failed" }), result({ status: "pending" })])).toMatchObject({ cases: 3, completed: 1, failed: 1, passed: 1, score: 0.5 });
  });

  it("reads the grader's score from JSON in its answer, or a loose 'score: n', or says it found none", () => {
    expect(readGrade('Sure. {"score": 0.7, "reason": "ok"}', "m")).toEqual({ score: 0.7, reason: "ok", model: "m" });
    expect(readGrade("Score: 1", "m")).toMatchObject({ score: 1 });
    expect(readGrade('{"score": 7}', "m").score).toBeNull();
    expect(readGrade("Echo: nothing", "m")).toMatchObject({ score: null, error: expect.stringContaining("no score") });
  });
});
