import type { Queryable } from "../types";
import type { EvalResultStatus, EvalRunStatus } from "../../contract";

/** One turn of a conversation that comes before a case's question. */
export interface PriorTurn {
  role: "user" | "assistant";
  content: string;
}

export interface EvalCaseInput {
  question: string;
  expectedTopics: string[];
  unexpectedTopics: string[];
  referenceAnswer: string | null;
  category: string | null;
  tags: string[];
  history: PriorTurn[];
}

export interface EvalCaseRecord extends EvalCaseInput {
  id: string;
  agentName: string;
  createdAt: number;
  updatedAt: number;
}

export interface EvalRunRecord {
  id: string;
  /** The tenant of its agent; only that tenant sees it. */
  tenantId: string;
  agentName: string;
  agentVersion: number;
  status: EvalRunStatus;
  /** The server that runs it. */
  serverId: string;
  /** Whether answers are graded by the model. */
  grade: boolean;
  caseCount: number;
  error: string | null;
  createdAt: number;
  completedAt: number | null;
}

/** What the automatic checks found in an answer. */
export interface AutoScore {
  score: number;
  pass: boolean;
  expectedFound: string[];
  expectedMissing: string[];
  unexpectedFound: string[];
}

export interface GradeScore {
  score: number | null;
  reason: string | null;
  model: string;
  error?: string;
}

export interface HumanScore {
  score: number | null;
  notes: string | null;
  at: number;
}

export interface EvalResultRecord {
  runId: string;
  caseId: string;
  position: number;
  question: string;
  status: EvalResultStatus;
  sessionId: string | null;
  answer: string | null;
  error: string | null;
  auto: AutoScore | null;
  grade: GradeScore | null;
  human: HumanScore | null;
  startedAt: number | null;
  completedAt: number | null;
}

const parse = <T>(text: unknown): T | null => (typeof text === "string" && text ? (JSON.parse(text) as T) : null);
const num = (v: unknown) => (v === null || v === undefined ? null : Number(v));

const CASE_COLUMNS = `id, agent_name, question, expected_topics, unexpected_topics, reference_answer, category, tags, history, created_at, updated_at`;

function toCase(row: any): EvalCaseRecord {
  return {
    id: row.id,
    agentName: row.agent_name,
    question: row.question,
    expectedTopics: parse<string[]>(row.expected_topics) ?? [],
    unexpectedTopics: parse<string[]>(row.unexpected_topics) ?? [],
    referenceAnswer: row.reference_answer ?? null,
    category: row.category ?? null,
    tags: parse<string[]>(row.tags) ?? [],
    history: parse<PriorTurn[]>(row.history) ?? [],
    createdAt: Number(row.created_at),
    updatedAt: Number(row.updated_at),
  };
}

export async function insertEvalCase(db: Queryable, c: EvalCaseInput & { id: string; tenantId: string; agentName: string; createdAt: number }): Promise<void> {
  await db.run(`INSERT INTO eval_cases (tenant_id, ${CASE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, [
    c.tenantId,
    c.id,
    c.agentName,
    c.question,
    JSON.stringify(c.expectedTopics),
    JSON.stringify(c.unexpectedTopics),
    c.referenceAnswer,
    c.category,
    JSON.stringify(c.tags),
    JSON.stringify(c.history),
    c.createdAt,
    c.createdAt,
  ]);
}

/** Oldest first (the order they were added or imported in). */
export async function listEvalCases(db: Queryable, tenantId: string, agentName: string): Promise<EvalCaseRecord[]> {
  return (await db.all(`SELECT ${CASE_COLUMNS} FROM eval_cases WHERE tenant_id = ? AND agent_name = ? ORDER BY created_at, id`, [tenantId, agentName])).map(toCase);
}

export async function getEvalCase(db: Queryable, tenantId: string, agentName: string, id: string): Promise<EvalCaseRecord | undefined> {
  const row = await db.get(`SELECT ${CASE_COLUMNS} FROM eval_cases WHERE tenant_id = ? AND agent_name = ? AND id = ?`, [tenantId, agentName, id]);
  return row ? toCase(row) : undefined;
}

export async function deleteEvalCase(db: Queryable, tenantId: string, agentName: string, id: string): Promise<boolean> {
  return (await db.run(`DELETE FROM eval_cases WHERE tenant_id = ? AND agent_name = ? AND id = ?`, [tenantId, agentName, id])).changes === 1;
}

export async function deleteEvalCasesOf(db: Queryable, tenantId: string, agentName: string): Promise<number> {
  return (await db.run(`DELETE FROM eval_cases WHERE tenant_id = ? AND agent_name = ?`, [tenantId, agentName])).changes;
}

const RUN_COLUMNS = `id, tenant_id, agent_name, agent_version, status, server_id, grade, case_count, error, created_at, completed_at`;

function toRun(row: any): EvalRunRecord {
  return {
    id: row.id,
    tenantId: row.tenant_id ?? "default",
    agentName: row.agent_name,
    agentVersion: Number(row.agent_version),
    status: row.status,
    serverId: row.server_id,
    grade: Number(row.grade) === 1,
    caseCount: Number(row.case_count),
    error: row.error ?? null,
    createdAt: Number(row.created_at),
    completedAt: num(row.completed_at),
  };
}

const RESULT_COLUMNS = `run_id, case_id, position, question, status, session_id, answer, error, auto, grade, human, started_at, completed_at`;

function toResult(row: any): EvalResultRecord {
  return {
    runId: row.run_id,
    caseId: row.case_id,
    position: Number(row.position),
    question: row.question,
    status: row.status,
    sessionId: row.session_id ?? null,
    answer: row.answer ?? null,
    error: row.error ?? null,
    auto: parse<AutoScore>(row.auto),
    grade: parse<GradeScore>(row.grade),
    human: parse<HumanScore>(row.human),
    startedAt: num(row.started_at),
    completedAt: num(row.completed_at),
  };
}

/** A run and one pending result per case, together. */
export async function insertEvalRun(db: Queryable, run: Omit<EvalRunRecord, "status" | "error" | "completedAt" | "caseCount">, cases: EvalCaseRecord[]): Promise<void> {
  await db.run(`INSERT INTO eval_runs (${RUN_COLUMNS}) VALUES (?, ?, ?, ?, 'running', ?, ?, ?, NULL, ?, NULL)`, [
    run.id,
    run.tenantId,
    run.agentName,
    run.agentVersion,
    run.serverId,
    run.grade ? 1 : 0,
    cases.length,
    run.createdAt,
  ]);
  for (const [position, c] of cases.entries()) {
    await db.run(`INSERT INTO eval_results (run_id, case_id, position, question, status) VALUES (?, ?, ?, ?, 'pending')`, [run.id, c.id, position, c.question]);
  }
}

export async function getEvalRun(db: Queryable, id: string): Promise<EvalRunRecord | undefined> {
  const row = await db.get(`SELECT ${RUN_COLUMNS} FROM eval_runs WHERE id = ?`, [id]);
  return row ? toRun(row) : undefined;
}

/** Newest first. */
export async function listEvalRuns(db: Queryable, tenantId: string, agentName: string, limit: number): Promise<EvalRunRecord[]> {
  return (await db.all(`SELECT ${RUN_COLUMNS} FROM eval_runs WHERE tenant_id = ? AND agent_name = ? ORDER BY created_at DESC, id DESC LIMIT ?`, [tenantId, agentName, limit])).map(toRun);
}

export async function finishEvalRun(db: Queryable, id: string, status: EvalRunStatus, error: string | null, now: number): Promise<void> {
  await db.run(`UPDATE eval_runs SET status = ?, error = ?, completed_at = ? WHERE id = ? AND status = 'running'`, [status, error, now, id]);
}

/** Runs this server was running when it stopped without finishing them: failed, with their unfinished cases. */
export async function failInterruptedRuns(db: Queryable, serverId: string, now: number): Promise<void> {
  const message = "The server stopped during the run.";
  await db.run(
    `UPDATE eval_results SET status = 'failed', error = ?, completed_at = ?
      WHERE status IN ('pending', 'running') AND run_id IN (SELECT id FROM eval_runs WHERE status = 'running' AND server_id = ?)`,
    [message, now, serverId],
  );
  await db.run(`UPDATE eval_runs SET status = 'failed', error = ?, completed_at = ? WHERE status = 'running' AND server_id = ?`, [message, now, serverId]);
}

export async function listEvalResults(db: Queryable, runId: string): Promise<EvalResultRecord[]> {
  return (await db.all(`SELECT ${RESULT_COLUMNS} FROM eval_results WHERE run_id = ? ORDER BY position`, [runId])).map(toResult);
}

export async function getEvalResult(db: Queryable, runId: string, caseId: string): Promise<EvalResultRecord | undefined> {
  const row = await db.get(`SELECT ${RESULT_COLUMNS} FROM eval_results WHERE run_id = ? AND case_id = ?`, [runId, caseId]);
  return row ? toResult(row) : undefined;
}

export async function startEvalResult(db: Queryable, runId: string, caseId: string, now: number): Promise<void> {
  await db.run(`UPDATE eval_results SET status = 'running', started_at = ? WHERE run_id = ? AND case_id = ?`, [now, runId, caseId]);
}

export async function setEvalResultSession(db: Queryable, runId: string, caseId: string, sessionId: string): Promise<void> {
  await db.run(`UPDATE eval_results SET session_id = ? WHERE run_id = ? AND case_id = ?`, [sessionId, runId, caseId]);
}

export async function finishEvalResult(
  db: Queryable,
  runId: string,
  caseId: string,
  outcome: { status: "completed" | "failed"; answer: string | null; error: string | null; auto: AutoScore | null; grade: GradeScore | null },
  now: number,
): Promise<void> {
  await db.run(`UPDATE eval_results SET status = ?, answer = ?, error = ?, auto = ?, grade = ?, completed_at = ? WHERE run_id = ? AND case_id = ?`, [
    outcome.status,
    outcome.answer,
    outcome.error,
    outcome.auto ? JSON.stringify(outcome.auto) : null,
    outcome.grade ? JSON.stringify(outcome.grade) : null,
    now,
    runId,
    caseId,
  ]);
}

export async function setHumanScore(db: Queryable, runId: string, caseId: string, human: HumanScore | null): Promise<boolean> {
  const { changes } = await db.run(`UPDATE eval_results SET human = ? WHERE run_id = ? AND case_id = ?`, [human ? JSON.stringify(human) : null, runId, caseId]);
  return changes === 1;
}
