import { execFile } from "node:child_process";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { chromiumProblem, haproxyProblem, sandboxProblem, skipUnlessReady } from "../helpers/requirements";

const root = resolve(import.meta.dirname, "../..");

function run(command: string, args: string[], env: Record<string, string | undefined>): Promise<{ code: number; output: string }> {
  return new Promise((done) => {
    execFile(command, args, { cwd: root, env: { ...process.env, ...env }, timeout: 300_000, maxBuffer: 16 << 20 }, (error: any, stdout, stderr) =>
      done({ code: error ? (typeof error.code === "number" ? error.code : 1) : 0, output: stdout + stderr }),
    );
  });
}

describe("what the suites need", () => {
  it("names a missing bubblewrap as a problem, and the full test command turns it into a failure", () => {
    const problem = sandboxProblem({ isolation: "none", detail: "bwrap is not installed" });
    if (process.getuid?.() === 0) expect(problem).toMatch(/bubblewrap is not usable: bwrap is not installed/);
    expect(sandboxProblem({ isolation: "bwrap", detail: "" })).toBe(process.getuid?.() === 0 ? undefined : expect.any(String));
    const saved = process.env.ASH_TEST_REQUIRE_ALL;
    try {
      process.env.ASH_TEST_REQUIRE_ALL = "1";
      expect(() => skipUnlessReady("sandbox isolation", "bubblewrap is not usable")).toThrow(/sandbox isolation cannot run: bubblewrap is not usable/);
      delete process.env.ASH_TEST_REQUIRE_ALL;
      expect(skipUnlessReady("sandbox isolation", "bubblewrap is not usable")).toBe("bubblewrap is not usable");
    } finally {
      if (saved === undefined) delete process.env.ASH_TEST_REQUIRE_ALL;
      else process.env.ASH_TEST_REQUIRE_ALL = saved;
    }
  });

  it("names a missing Chromium as a problem, so the browser suite fails under the full test command", () => {
    expect(chromiumProblem("/nonexistent/chromium")).toMatch(/no working Chromium at \/nonexistent\/chromium \(infra\/host-packages.sh test installs it\)/);
    const saved = process.env.ASH_TEST_REQUIRE_ALL;
    try {
      process.env.ASH_TEST_REQUIRE_ALL = "1";
      expect(() => skipUnlessReady("The web console's browser tests", chromiumProblem("/nonexistent/chromium"))).toThrow(/browser tests cannot run: no working Chromium/);
    } finally {
      if (saved === undefined) delete process.env.ASH_TEST_REQUIRE_ALL;
      else process.env.ASH_TEST_REQUIRE_ALL = saved;
    }
  });

  it("names a missing HAProxy as a problem, so the load-balanced suites fail under the full test command", () => {
    expect(haproxyProblem("/nonexistent/haproxy")).toMatch(/no working HAProxy at \/nonexistent\/haproxy \(infra\/host-packages.sh test installs it\)/);
    const saved = process.env.ASH_TEST_REQUIRE_ALL;
    try {
      process.env.ASH_TEST_REQUIRE_ALL = "1";
      expect(() => skipUnlessReady("the load balancer helper", haproxyProblem("/nonexistent/haproxy"))).toThrow(/load balancer helper cannot run: no working HAProxy/);
    } finally {
      if (saved === undefined) delete process.env.ASH_TEST_REQUIRE_ALL;
      else process.env.ASH_TEST_REQUIRE_ALL = saved;
    }
  });

  // A machine without bubblewrap, made for real: a private mount namespace in
  // which bwrap, when installed, is covered by a file nobody may execute.
  const rootSkip = skipUnlessReady("a machine without bwrap, made in a mount namespace", process.getuid?.() === 0 ? undefined : "it needs root (unshare -m, mount --bind)");
  it.skipIf(rootSkip)("fails the sandbox suite, instead of skipping it, on a machine without bwrap under the full test command", async () => {
    // Where bwrap is not installed at all, the machine is already one without it.
    const script = 'b="$(command -v bwrap)"; if [ -n "$b" ]; then mount --bind /dev/null "$b" || exit 1; fi; exec node node_modules/vitest/vitest.mjs run tests/integration/sandbox-isolation.test.ts';
    const required = await run("unshare", ["-m", "--propagation", "private", "sh", "-c", script], { ASH_TEST_REQUIRE_ALL: "1" });
    expect(required.code).not.toBe(0);
    expect(required.output).toMatch(/sandbox isolation cannot run: bubblewrap is not usable/);

    const optional = await run("unshare", ["-m", "--propagation", "private", "sh", "-c", script], { ASH_TEST_REQUIRE_ALL: undefined });
    expect(optional.output).toMatch(/sandbox isolation skipped: bubblewrap is not usable/);
    expect(optional.output).toMatch(/skipped/);
  });
});
