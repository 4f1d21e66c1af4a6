// The process-wide policy for errors nothing handled: logged, counted, and
// the process goes on.
import { describe, expect, it } from "vitest";
import { spawn } from "node:child_process";
import { EventEmitter } from "node:events";
import { join, resolve } from "node:path";
import { Metrics } from "../../src/observability/metrics";
import { installUnexpectedErrorHandlers } from "../../src/observability/unexpected-errors";
import { startTestServer } from "../helpers/server";

const ROOT = resolve(import.meta.dirname, "../..");

describe("errors nothing handled", () => {
  it("keeps a process running through an unhandled rejection and an uncaught exception, logging and counting both", async () => {
    // A real process: without the handlers either error would end it.
    const script = `
      import { Metrics } from ${JSON.stringify(join(ROOT, "src/observability/metrics.ts"))};
      import { installUnexpectedErrorHandlers } from ${JSON.stringify(join(ROOT, "src/observability/unexpected-errors.ts"))};
      const metrics = new Metrics();
      installUnexpectedErrorHandlers({ metrics, log: (m) => console.log("LOG " + m.split("\\n")[0]), redact: (t) => t.replaceAll("sk-ant-secret", "***") });
      Promise.reject(new Error("a rejection nobody awaited sk-ant-secret"));
      setTimeout(() => { throw new Error("an exception nobody caught"); }, 10);
      setTimeout(async () => {
        console.log("STILL RUNNING");
        console.log(await metrics.render());
      }, 200);
    `;
    const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    const code = await new Promise<number | null>((r) => child.once("exit", r));
    expect(code).toBe(0);
    expect(out).toContain("STILL RUNNING");
    expect(out).toMatch(/LOG unhandled promise rejection; the server keeps serving: Error: a rejection nobody awaited \*\*\*/);
    expect(out).toMatch(/LOG uncaught exception; the server keeps serving: Error: an exception nobody caught/);
    expect(out).not.toContain("sk-ant-secret");
    expect(out).toMatch(/^ash_unhandled_errors_total\{kind="rejection"\} 1$/m);
    expect(out).toMatch(/^ash_unhandled_errors_total\{kind="exception"\} 1$/m);
  });

  it("logs a flood only up to its budget, and counts all of it", async () => {
    const emitter = new EventEmitter();
    const metrics = new Metrics();
    const lines: string[] = [];
    const uninstall = installUnexpectedErrorHandlers({ metrics, log: (m) => lines.push(m), logsPerMinute: 5, on: emitter as any });
    for (let i = 0; i < 1000; i++) emitter.emit("unhandledRejection", new Error(`flood ${i}`));
    expect(lines).toHaveLength(5);
    await expect(metrics.registry.render()).resolves.toMatch(/ash_unhandled_errors_total\{kind="rejection"\} 1000/);
    uninstall();
    expect(emitter.listenerCount("unhandledRejection")).toBe(0);
    expect(emitter.listenerCount("uncaughtException")).toBe(0);
  });

  it("shows the counter, at zero, on a running server's /metrics", async () => {
    const server = await startTestServer();
    try {
      const text = await (await server.api("/metrics")).text();
      for (const kind of ["rejection", "exception", "request"]) expect(text).toMatch(new RegExp(`^ash_unhandled_errors_total\\{kind="${kind}"\\} 0$`, "m"));
    } finally {
      await server.dispose();
    }
  });
});
