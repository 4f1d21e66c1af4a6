/**
 * The README's test command on a machine where Ash already runs: it must leave
 * the Docker engine and the PostgreSQL cluster it found running as they were,
 * and stop only what it started itself.
 */
import { execFile, execFileSync } from "node:child_process";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { dockerImageProblem, skipUnlessReady } from "../helpers/requirements";

const root = resolve(import.meta.dirname, "../..");
const reason = skipUnlessReady("scripts/test.sh clean-up", dockerImageProblem() ?? (process.env.ASH_TEST_POSTGRES_URL ? undefined : "ASH_TEST_POSTGRES_URL is not set (infra/postgres.sh start)"));

const answers = (command: string, args: string[]) => {
  try {
    execFileSync(command, args, { stdio: "ignore", timeout: 30_000 });
    return true;
  } catch {
    return false;
  }
};

describe.skipIf(reason)("scripts/test.sh on a machine where the engine and the database already run", () => {
  it("runs the named tests, prints the summary last, and leaves the engine and the database running", async () => {
    expect(answers("docker", ["info"])).toBe(true);
    expect(answers(resolve(root, "infra/postgres.sh"), ["status"])).toBe(true);
    const run = await new Promise<{ code: number; output: string; stdout: string }>((done) => {
      execFile(
        "bash",
        [resolve(root, "scripts/test.sh"), "tests/unit/db-url.test.ts"],
        { cwd: root, env: { ...process.env, ASH_TEST_REQUIRE_ALL: undefined }, timeout: 1_200_000, maxBuffer: 64 << 20 },
        (error: any, stdout, stderr) => done({ code: error ? (typeof error.code === "number" ? error.code : 1) : 0, output: stdout + stderr, stdout }),
      );
    });
    expect(run.code, run.output.slice(-3000)).toBe(0);
    expect(run.stdout.trim().split("\n").at(-1)).toMatch(/^\d+ passed, 0 failed$/);
    expect(answers("docker", ["info"])).toBe(true);
    expect(answers(resolve(root, "infra/postgres.sh"), ["status"])).toBe(true);
  });
});
