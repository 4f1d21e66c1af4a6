// Sandbox isolation is required: without a working bwrap the server does not
// start, unless ASH_SANDBOX_ALLOW_UNISOLATED=true says so, and then it says
// so in its log and in /health.
import { chmod, mkdir, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { agentUpload, runServerExpectingFailure, startTestServer, type TestServer } from "../helpers/server";

describe("sandbox isolation is required by default", () => {
  let scratch: string;
  /** A PATH whose first entry holds a bwrap that always fails (the server looks there first). */
  let brokenPath: string;

  beforeAll(async () => {
    scratch = await mkdtemp(join(tmpdir(), "ash-required-"));
    const bin = join(scratch, "bin");
    await mkdir(bin);
    await writeFile(join(bin, "bwrap"), "#!/bin/sh\necho 'bwrap: Creating new namespace failed: Operation not permitted' >&2\nexit 1\n");
    await chmod(join(bin, "bwrap"), 0o755);
    brokenPath = `${bin}:${process.env.PATH ?? "/usr/bin:/bin"}`;
  });
  afterAll(async () => {
    await rm(scratch, { recursive: true, force: true });
  });

  it("refuses to start when bwrap cannot be used, saying what is missing and both ways out", async () => {
    const dataDir = join(scratch, "refused");
    const { code, output } = await runServerExpectingFailure({ PATH: brokenPath, ASH_DATA_DIR: dataDir, ASH_API_KEY: "k".repeat(16) });
    expect(code).toBe(2);
    expect(output).toContain("Sandbox isolation is required but bubblewrap cannot be used");
    expect(output).toContain("Creating new namespace failed");
    expect(output).toContain("run the server as root");
    expect(output).toContain("--cap-add SYS_ADMIN");
    expect(output).toContain("ASH_SANDBOX_ALLOW_UNISOLATED=true");
    expect(output).not.toMatch(/listening/i);
  });

  it("treats the retired ASH_SANDBOX_STRICT=false as no opt-out", async () => {
    const { code, output } = await runServerExpectingFailure({ PATH: brokenPath, ASH_DATA_DIR: join(scratch, "strict-false"), ASH_API_KEY: "k".repeat(16), ASH_SANDBOX_STRICT: "false" });
    expect(code).toBe(2);
    expect(output).toContain("Sandbox isolation is required");
  });

  it("refuses ASH_SANDBOX_STRICT=true together with ASH_SANDBOX_ALLOW_UNISOLATED=true", async () => {
    const { code, output } = await runServerExpectingFailure({
      ASH_DATA_DIR: join(scratch, "both"),
      ASH_API_KEY: "k".repeat(16),
      ASH_SANDBOX_STRICT: "true",
      ASH_SANDBOX_ALLOW_UNISOLATED: "true",
    });
    expect(code).toBe(2);
    expect(output.trim().split("\n")).toHaveLength(1);
    expect(output).toContain("ASH_SANDBOX_ALLOW_UNISOLATED");
    await expect(stat(join(scratch, "both", "ash.db"))).rejects.toThrow();
  });

  describe("with ASH_SANDBOX_ALLOW_UNISOLATED=true", () => {
    let server: TestServer;
    beforeAll(async () => {
      server = await startTestServer({ env: { PATH: brokenPath, ASH_SANDBOX_ALLOW_UNISOLATED: "true", ASH_DATABASE_URL: "" } });
    });
    afterAll(async () => {
      await server?.dispose();
    });

    it("starts, warns in its log, and /health says sandboxes run unisolated", async () => {
      expect(server.output()).toMatch(/sandboxes run UNISOLATED because ASH_SANDBOX_ALLOW_UNISOLATED=true/);
      const health = (await (await fetch(`${server.url}/health`)).json()) as any;
      expect(health.isolation).toEqual({ mode: "none", seccomp: false, unisolatedAllowed: true });
    });

    it("runs a session's commands (as the sandbox user, without namespaces)", async () => {
      await server.api("/api/agents", { method: "POST", json: agentUpload("plain") });
      const session = (await (await server.api("/api/sessions", { method: "POST", json: { agent: "plain" } })).json()).session;
      const r = await (await server.api(`/api/sessions/${session.id}/exec`, { method: "POST", json: { command: "id -u; grep -E '^Seccomp:' /proc/self/status" } })).json();
      expect(r.exitCode).toBe(0);
      const [uid, seccomp] = r.stdout.trim().split("\n");
      expect(Number(uid)).toBeGreaterThan(0);
      expect(seccomp).toMatch(/Seccomp:\s*0/);
    });
  });

  describe("by default, where bwrap works", () => {
    let server: TestServer;
    beforeAll(async () => {
      server = await startTestServer({ env: { ASH_DATABASE_URL: "" } });
    });
    afterAll(async () => {
      await server?.dispose();
    });

    it("logs and reports bwrap with the seccomp filter", async () => {
      expect(server.output()).toMatch(/sandboxes: isolation bwrap\+seccomp/);
      const health = (await (await fetch(`${server.url}/health`)).json()) as any;
      expect(health.isolation).toEqual({ mode: "bwrap", seccomp: true, unisolatedAllowed: false });
    });
  });
});
