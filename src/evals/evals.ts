import { randomUUID } from "node:crypto";
import type { ConsolaInstance } from "consola";
import type { ServerConfig } from "../config";
import type { AshDatabase } from "../db/types";
import { getAgent, getAgentVersion } from "../db/queries/agents";
import { insertUsage } from "../db/queries/usage";
import {
  failInterruptedRuns,
  finishEvalResult,
  finishEvalRun,
  getEvalRun,
  insertEvalRun,
  listEvalCases,
  listEvalResults,
  setEvalResultSession,
  startEvalResult,
  type EvalCaseRecord,
  type EvalRunRecord,
  type GradeScore,
} from "../db/queries/evals";
import { notFound, unprocessable } from "../errors";
import type { SessionManager } from "../sessions/session-manager";
import { modelUpstreamOf } from "../sessions/agent-env";
import { runTurnToEnd } from "../queue/turn";
import { autoScore } from "./scoring";
import { gradeAnswer } from "./grader";

export interface EvalsOptions {
  config: ServerConfig;
  db: AshDatabase;
  sessions: SessionManager;
  serverId: string;
  log: ConsolaInstance;
}

export interface StartRunInput {
  agent: string;
  /** The tenant whose agent it is (default: the default tenant). */
  tenantId?: string;
  /** The key that started it. */
  apiKeyId?: string | null;
  /** Unset: the agent's latest version. */
  version?: number;
  /** Cases at once, at most ASH_EVAL_CONCURRENCY. */
  concurrency?: number;
  /** Grade answers by the model (default true). */
  grade?: boolean;
  /** Only cases of this category / with all these tags. */
  category?: string;
  tags?: string[];
}

/**
 * Evaluation runs: each case of an agent runs as a real session of the chosen
 * agent version on this server (its prior user turns first, then its question),
 * a few at a time; each answer gets the automatic checks and, unless turned off,
 * a grade from the model.
 */
export class Evals {
  private readonly running = new Map<string, Promise<void>>();
  private stopping = false;

  constructor(private readonly o: EvalsOptions) {}

  /** Runs this server left unfinished when it last stopped are failed. */
  async start(): Promise<void> {
    await failInterruptedRuns(this.o.db, this.o.serverId, Date.now());
  }

  async startRun(input: StartRunInput): Promise<EvalRunRecord> {
    const { db, config, serverId } = this.o;
    const tenantId = input.tenantId ?? "default";
    const agent = await getAgent(db, tenantId, input.agent);
    if (!agent) throw notFound(`No agent named "${input.agent}".`);
    const version = input.version ?? agent.version;
    if (version !== agent.version && !(await getAgentVersion(db, agent.id, version))) {
      throw notFound(`Agent "${agent.name}" has no version ${version}; its latest is ${agent.version}.`);
    }
    const cases = (await listEvalCases(db, tenantId, agent.name)).filter(
      (c) => (input.category === undefined || c.category === input.category) && (input.tags ?? []).every((t) => c.tags.includes(t)),
    );
    if (cases.length === 0) throw unprocessable(`Agent "${agent.name}" has no evaluation cases${input.category || input.tags?.length ? " that match" : ""}; import some first.`);
    const run = { id: randomUUID(), tenantId, agentName: agent.name, agentVersion: version, serverId, grade: input.grade ?? true, createdAt: Date.now() };
    await db.transaction((tx) => insertEvalRun(tx, run, cases));
    const concurrency = Math.min(input.concurrency ?? config.evals.concurrency, config.evals.concurrency);
    const done = this.execute(run.id, cases, concurrency)
      .catch(async (error) => {
        this.o.log.error(`evaluation run ${run.id} failed:`, error);
        await finishEvalRun(db, run.id, "failed", error instanceof Error ? error.message : String(error), Date.now()).catch(() => undefined);
      })
      .finally(() => this.running.delete(run.id));
    this.running.set(run.id, done);
    return (await getEvalRun(db, run.id))!;
  }

  /** Starts no more cases; runs in progress end as failed (their turns end with the server's sessions). */
  stop(): void {
    this.stopping = true;
  }

  /** Resolves when every run of this server has stopped (after the sessions shut down). */
  async drain(): Promise<void> {
    this.stop();
    await Promise.all(this.running.values());
  }

  private async execute(runId: string, cases: EvalCaseRecord[], concurrency: number): Promise<void> {
    const run = (await getEvalRun(this.o.db, runId))!;
    let next = 0;
    const worker = async () => {
      while (next < cases.length && !this.stopping) {
        const c = cases[next++]!;
        await this.runCase(run, c);
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, cases.length)) }, worker));
    if (this.stopping) {
      await failInterruptedRuns(this.o.db, this.o.serverId, Date.now());
      return;
    }
    const results = await listEvalResults(this.o.db, runId);
    const allFailed = results.every((r) => r.status === "failed");
    await finishEvalRun(this.o.db, runId, allFailed ? "failed" : "completed", allFailed ? "Every case failed to run; see each case's error." : null, Date.now());
  }

  private async runCase(run: EvalRunRecord, c: EvalCaseRecord): Promise<void> {
    const { db, sessions, log } = this.o;
    await startEvalResult(db, run.id, c.id, Date.now());
    let sessionId: string | undefined;
    try {
      sessionId = (await sessions.createSession({ agent: run.agentName, tenantId: run.tenantId, agentVersion: run.agentVersion, settings: {} })).id;
      await setEvalResultSession(db, run.id, c.id, sessionId);
      // The conversation so far: each prior user turn is a real turn of the session.
      for (const turn of c.history) {
        if (turn.role !== "user") continue;
        const prior = await runTurnToEnd(sessions, sessionId, turn.content);
        if (prior.error) throw new Error(`A prior turn failed: ${prior.error.message}`);
      }
      const result = await runTurnToEnd(sessions, sessionId, c.question);
      if (result.error) throw new Error(result.error.message);
      const answer = result.text ?? "";
      const auto = autoScore(answer, c.expectedTopics, c.unexpectedTopics);
      const grade = run.grade ? await this.grade(run, c, answer) : null;
      await finishEvalResult(db, run.id, c.id, { status: "completed", answer, error: null, auto, grade }, Date.now());
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      log.debug(`evaluation run ${run.id}, case ${c.id}: ${message}`);
      await finishEvalResult(db, run.id, c.id, { status: "failed", answer: null, error: message, auto: null, grade: null }, Date.now());
    } finally {
      // The session's history stays readable; its sandbox is freed for the next case.
      if (sessionId) await sessions.end(sessionId).catch(() => undefined);
    }
  }

  private async grade(run: EvalRunRecord, c: EvalCaseRecord, answer: string): Promise<GradeScore> {
    const { db, config } = this.o;
    const agent = await getAgent(db, run.tenantId, run.agentName);
    const version = agent ? await getAgentVersion(db, agent.id, run.agentVersion) : undefined;
    const upstream = modelUpstreamOf({ config, agentEnv: version?.env ?? {}, extraEnv: {} });
    return gradeAnswer(
      { upstream, model: config.evals.graderModel, question: c.question, referenceAnswer: c.referenceAnswer, expectedTopics: c.expectedTopics, answer },
      (usage) => {
        insertUsage(db, { tenantId: run.tenantId, id: randomUUID(), sessionId: null, agentName: run.agentName, turnId: null, keyId: upstream.keyId, ...usage, createdAt: Date.now() }).catch(() => undefined);
      },
    );
  }
}
