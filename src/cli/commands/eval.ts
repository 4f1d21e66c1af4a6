import { readFile, writeFile } from "node:fs/promises";
import { defineCommand } from "citty";
import type { EvalCaseInput, EvalResult, EvalRun } from "../../client/types";
import { CliError, EXIT, jsonArg, serverArgs, usageError, withServer } from "../errors";
import { line, note, printJson, printTable, style, timeAgo } from "../output";
import { parsePositiveInt } from "./chat";

const agentArg = { agent: { type: "positional", description: "Agent name", required: true } } as const;

const score = (value: number | null | undefined) => (value === null || value === undefined ? "-" : value.toFixed(2));

/** A score from 0 to 1 given on the command line. */
function parseScore(value: string | undefined, flag: string): number | undefined {
  if (value === undefined || value === "") return undefined;
  const n = /^(0|1|0?\.\d+|0\.\d*|1\.0*)$/.test(value.trim()) ? Number(value) : NaN;
  if (!Number.isFinite(n) || n < 0 || n > 1) throw usageError(`${flag} takes a score from 0 to 1, not "${value}".`);
  return n;
}

function printResults(run: EvalRun, results: EvalResult[]): void {
  printTable(
    ["CASE", "STATUS", "AUTO", "GRADE", "HUMAN", "SCORE", "QUESTION"],
    results.map((r) => [r.caseId.slice(0, 8), r.status, score(r.autoScore), score(r.gradeScore), score(r.humanScore), score(r.score), r.question.replace(/\s+/g, " ")]),
  );
  const s = run.summary;
  note(
    `Run ${run.id} of ${run.agent} v${run.agentVersion}: ${run.status}; score ${score(s.score)} (automatic ${score(s.autoScore)}, graded ${score(s.gradeScore)}); ` +
      `${s.passed} of ${s.cases} passed the topic checks${s.failed ? `, ${s.failed} failed to run` : ""}.`,
  );
}

const importCmd = defineCommand({
  meta: { name: "import", description: "Add evaluation cases to an agent from a JSON file (what `ash eval export` writes, or a list of cases)" },
  args: {
    ...agentArg,
    file: { type: "positional", description: "JSON file", required: true },
    replace: { type: "boolean", description: "Replace the agent's cases instead of adding to them" },
    ...serverArgs,
    ...jsonArg,
  },
  run: ({ args }) =>
    withServer(args, async ({ client }) => {
      let parsed: unknown;
      try {
        parsed = JSON.parse(await readFile(args.file, "utf8"));
      } catch (error) {
        throw usageError(`Cannot read ${args.file} as JSON: ${(error as Error).message}`);
      }
      const cases = Array.isArray(parsed) ? parsed : (parsed as { cases?: unknown })?.cases;
      if (!Array.isArray(cases)) throw usageError(`${args.file} holds neither a list of cases nor an object with "cases".`);
      const answer = await client.importEvalCases(args.agent, cases as EvalCaseInput[], { replace: args.replace });
      if (args.json) return printJson(answer);
      line(`Imported ${answer.imported} case${answer.imported === 1 ? "" : "s"}; ${args.agent} has ${answer.total}.`);
    }),
});

const exportCmd = defineCommand({
  meta: { name: "export", description: "Write an agent's evaluation cases as JSON (stdout, or --out)" },
  args: { ...agentArg, out: { type: "string", description: "File to write", valueHint: "file" }, ...serverArgs },
  run: ({ args }) =>
    withServer(args, async ({ client }) => {
      const text = JSON.stringify(await client.exportEvalCases(args.agent), null, 2) + "\n";
      if (!args.out) return void process.stdout.write(text);
      await writeFile(args.out, text);
      note(`Wrote ${args.out}.`);
    }),
});

const list = defineCommand({
  meta: { name: "list", description: "List an agent's evaluation cases, or with --runs its runs" },
  args: { ...agentArg, runs: { type: "boolean", description: "List runs instead of cases" }, ...serverArgs, ...jsonArg },
  run: ({ args }) =>
    withServer(args, async ({ client }) => {
      if (args.runs) {
        const runs = await client.listEvalRuns(args.agent);
        if (args.json) return printJson(runs);
        if (runs.length === 0) return note(`No runs yet; start one with \`ash eval run ${args.agent}\`.`);
        printTable(
          ["RUN", "VERSION", "STATUS", "SCORE", "PASSED", "CREATED"],
          runs.map((r) => [r.id, String(r.agentVersion), r.status, score(r.summary.score), `${r.summary.passed}/${r.summary.cases}`, timeAgo(r.createdAt)]),
        );
        return;
      }
      const cases = await client.listEvalCases(args.agent);
      if (args.json) return printJson(cases);
      if (cases.length === 0) return note(`No cases yet; add some with \`ash eval import ${args.agent} <file>\`.`);
      printTable(
        ["ID", "CATEGORY", "TAGS", "QUESTION"],
        cases.map((c) => [c.id, c.category ?? "", c.tags.join(" "), c.question.replace(/\s+/g, " ")]),
      );
    }),
});

const run = defineCommand({
  meta: { name: "run", description: "Run an agent's evaluation cases, print the scores, and exit 1 when the score is below --threshold" },
  args: {
    ...agentArg,
    version: { type: "string", description: "Agent version (default: the latest)", valueHint: "n" },
    threshold: { type: "string", description: "Lowest acceptable run score, 0 to 1", valueHint: "x" },
    concurrency: { type: "string", description: "Cases at once (at most the server's ASH_EVAL_CONCURRENCY)", valueHint: "n" },
    category: { type: "string", description: "Only cases of this category", valueHint: "name" },
    grade: { type: "boolean", default: true, description: "Have the model grade each answer (--no-grade: automatic checks only)" },
    ...serverArgs,
    ...jsonArg,
  },
  run: ({ args }) =>
    withServer(args, async ({ client }) => {
      const threshold = parseScore(args.threshold, "--threshold");
      const started = await client.startEvalRun(args.agent, {
        version: parsePositiveInt(args.version, "--version"),
        concurrency: parsePositiveInt(args.concurrency, "--concurrency"),
        category: args.category || undefined,
        ...(args.grade === false ? { grade: false } : {}),
      });
      if (!args.json) note(style.dim(`Running ${started.summary.cases} case(s) of ${started.agent} v${started.agentVersion} (run ${started.id})…`, process.stderr));
      let current = await client.getEvalRun(started.id);
      while (current.run.status === "running") {
        await new Promise((resolve) => setTimeout(resolve, 500));
        current = await client.getEvalRun(started.id);
      }
      if (args.json) printJson(current);
      else printResults(current.run, current.results);
      if (current.run.status === "failed") throw new CliError(`The run failed: ${current.run.error ?? "see its cases"}`, EXIT.FAILED);
      const total = current.run.summary.score ?? 0;
      if (threshold !== undefined && total < threshold) {
        note(style.red(`Score ${score(total)} is below the threshold ${score(threshold)}.`, process.stderr));
        return EXIT.FAILED;
      }
      return 0;
    }),
});

const scoreCmd = defineCommand({
  meta: { name: "score", description: "Give one case of a run a human score (0 to 1) and notes" },
  args: {
    run: { type: "positional", description: "Run id", required: true },
    case: { type: "positional", description: "Case id", required: true },
    score: { type: "positional", description: "Score from 0 to 1", required: true },
    notes: { type: "string", description: "Notes on the answer", valueHint: "text" },
    ...serverArgs,
    ...jsonArg,
  },
  run: ({ args }) =>
    withServer(args, async ({ client }) => {
      const result = await client.scoreEvalResult(args.run, args.case, parseScore(args.score, "The score")!, args.notes ?? undefined);
      if (args.json) return printJson(result);
      line(`Case ${result.caseId} now scores ${score(result.score)}.`);
    }),
});

const compare = defineCommand({
  meta: { name: "compare", description: "Compare two runs case by case" },
  args: {
    base: { type: "positional", description: "The earlier run's id", required: true },
    other: { type: "positional", description: "The later run's id", required: true },
    ...serverArgs,
    ...jsonArg,
  },
  run: ({ args }) =>
    withServer(args, async ({ client }) => {
      const c = await client.compareEvalRuns(args.base, args.other);
      if (args.json) return printJson(c);
      printTable(
        ["CASE", "BASE", "OTHER", "DELTA", "CHANGE", "QUESTION"],
        c.cases.map((x) => [x.caseId.slice(0, 8), score(x.base), score(x.other), x.delta === null ? "-" : (x.delta > 0 ? "+" : "") + x.delta.toFixed(2), x.change, x.question.replace(/\s+/g, " ")]),
      );
      note(
        `Score ${score(c.base.summary.score)} → ${score(c.other.summary.score)}: ${c.summary.improved} improved, ${c.summary.regressed} regressed, ${c.summary.same} the same` +
          (c.summary.missing ? `, ${c.summary.missing} in one run only` : "") +
          ".",
      );
    }),
});

export default defineCommand({
  meta: { name: "eval", description: "Evaluation cases for agents: import, export, run against a version, score, compare" },
  subCommands: { import: importCmd, export: exportCmd, list, run, score: scoreCmd, compare },
});
