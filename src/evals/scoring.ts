import type { EvalRunSummary } from "../contract";
import type { AutoScore, EvalResultRecord } from "../db/queries/evals";

const normal = (text: string) => text.toLowerCase().replace(/\s+/g, " ").trim();
const round = (n: number) => Math.round(n * 10_000) / 10_000;

/**
 * The automatic checks: which expected topics the answer mentions and which
 * unexpected ones it does (case-insensitive, blanks folded). The score is the
 * share of checks passed: each expected topic present and each unexpected one
 * absent counts one; with no topics at all it is 1.
 */
export function autoScore(answer: string, expected: string[], unexpected: string[]): AutoScore {
  const text = normal(answer);
  const has = (topic: string) => normal(topic) !== "" && text.includes(normal(topic));
  const expectedFound = expected.filter(has);
  const expectedMissing = expected.filter((t) => !has(t));
  const unexpectedFound = unexpected.filter(has);
  const checks = expected.length + unexpected.length;
  const passed = expectedFound.length + unexpected.length - unexpectedFound.length;
  return {
    score: checks === 0 ? 1 : round(passed / checks),
    pass: expectedMissing.length === 0 && unexpectedFound.length === 0,
    expectedFound,
    expectedMissing,
    unexpectedFound,
  };
}

/**
 * One case's score: a person's score when one was given; else the mean of the
 * automatic score and the model's grade (the automatic score alone when there is
 * no grade); 0 for a case that failed to run; null while it has not finished.
 */
export function caseScore(r: EvalResultRecord): number | null {
  if (r.human && r.human.score !== null) return r.human.score;
  if (r.status === "failed") return 0;
  if (r.status !== "completed" || !r.auto) return null;
  if (r.grade && r.grade.score !== null) return round((r.auto.score + r.grade.score) / 2);
  return r.auto.score;
}

export type RunSummary = EvalRunSummary;

const mean = (values: number[]) => (values.length ? round(values.reduce((a, b) => a + b, 0) / values.length) : null);

export function summarize(results: EvalResultRecord[]): RunSummary {
  const scores = results.map(caseScore).filter((s): s is number => s !== null);
  return {
    cases: results.length,
    completed: results.filter((r) => r.status === "completed").length,
    failed: results.filter((r) => r.status === "failed").length,
    passed: results.filter((r) => r.auto?.pass).length,
    score: mean(scores),
    autoScore: mean(results.flatMap((r) => (r.auto ? [r.auto.score] : []))),
    gradeScore: mean(results.flatMap((r) => (r.grade && r.grade.score !== null ? [r.grade.score] : []))),
    humanScored: results.filter((r) => r.human && r.human.score !== null).length,
  };
}
