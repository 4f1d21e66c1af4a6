import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cgroup1Mounts } from "../../src/sandbox/cgroup1";
import { createSandbox, describeSandboxHost, sweepResourceGroups, type Sandbox } from "../../src/sandbox";
import { sandboxProblem, skipUnlessReady } from "../helpers/requirements";

// Real bwrap, real setpriv, real cgroups: this needs root on a host where
// bwrap can build namespaces.
// (allowUnisolated: the probe reports a missing bwrap instead of throwing, so the rule below decides.)
const host = await describeSandboxHost({ allowUnisolated: true });
const skip = skipUnlessReady("sandbox isolation", sandboxProblem(host));
const cgroupParent = `ash-test-iso-${process.pid}`;

describe.skipIf(skip)("sandbox isolation (bwrap, as root)", () => {
  let dataDir: string;
  let a: Sandbox;
  let b: Sandbox;

  beforeAll(async () => {
    process.env.ASH_API_KEY = "server-api-key-must-not-leak";
    process.env.ASH_DATABASE_URL = "postgresql://ash:secret@db:5432/ash";
    dataDir = mkdtempSync(join(tmpdir(), "ash-iso-"));
    // Traversable, as the data dir must be for the no-bwrap fallback.
    chmodSync(dataDir, 0o711);
    writeFileSync(join(dataDir, "ash.db"), "database bytes");
    mkdirSync(join(dataDir, "agents", "my-agent"), { recursive: true });
    writeFileSync(join(dataDir, "agents", "my-agent", "CLAUDE.md"), "agent instructions");
    a = await createSandbox({ dataDir, cgroup1Parent: cgroupParent, env: { AGENT_GREETING: "hello from the agent" } });
    b = await createSandbox({ dataDir, cgroup1Parent: cgroupParent });
    writeFileSync(join(b.workspaceDir, "b-secret.txt"), "only for b");
  });

  afterAll(async () => {
    await a?.destroy();
    await b?.destroy();
    await sweepResourceGroups("cgroup1", [], { cgroup1Parent: cgroupParent });
    for (const mount of Object.values(cgroup1Mounts())) if (existsSync(join(mount!, cgroupParent))) rmdirSync(join(mount!, cgroupParent));
    rmSync(dataDir, { recursive: true, force: true });
    delete process.env.ASH_API_KEY;
    delete process.env.ASH_DATABASE_URL;
  });

  it("reports bwrap isolation", () => {
    expect(a.isolation).toMatchObject({ isolation: "bwrap", seccomp: true, allowUnisolated: false });
    expect(a.user?.uid).toBeGreaterThan(0);
  });

  it("runs as the unprivileged sandbox user with no capabilities", async () => {
    const result = await a.exec("id -u; id -g; grep CapEff /proc/self/status");
    expect(result.exitCode).toBe(0);
    const [uid, gid, caps] = result.stdout.trim().split("\n");
    expect(Number(uid)).toBe(a.user!.uid);
    expect(Number(gid)).toBe(a.user!.gid);
    expect(caps).toMatch(/CapEff:\s+0+$/);
  });

  it("starts in its workspace, which it can write; files there belong to the sandbox user", async () => {
    const result = await a.exec("pwd; echo data > made.txt");
    expect(result.stdout.trim()).toBe(a.workspaceDir);
    expect(statSync(join(a.workspaceDir, "made.txt")).uid).toBe(a.user!.uid);
  });

  it("cannot read a sibling sandbox's workspace or even see its folder", async () => {
    const read = await a.exec(`cat ${join(b.workspaceDir, "b-secret.txt")}`);
    expect(read.exitCode).not.toBe(0);
    expect(read.stdout).not.toContain("only for b");
    const listing = await a.exec(`ls ${join(dataDir, "sandboxes")}`);
    expect(listing.stdout.trim().split("\n")).toEqual([a.id]);
  });

  it("cannot read the database file or the agents folder", async () => {
    const db = await a.exec(`cat ${join(dataDir, "ash.db")}`);
    expect(db.exitCode).not.toBe(0);
    expect(db.stdout).not.toContain("database bytes");
    const agents = await a.exec(`cat ${join(dataDir, "agents", "my-agent", "CLAUDE.md")}; ls ${join(dataDir, "agents")}`);
    expect(agents.stdout).not.toContain("agent instructions");
    expect(agents.stdout).not.toContain("my-agent");
  });

  it("does not see the server's environment, only the allowlist and its declared variables", async () => {
    const result = await a.exec("env");
    expect(result.stdout).not.toContain("ASH_API_KEY");
    expect(result.stdout).not.toContain("server-api-key-must-not-leak");
    expect(result.stdout).not.toContain("ASH_DATABASE_URL");
    expect(result.stdout).toContain("AGENT_GREETING=hello from the agent");
    expect(result.stdout).toContain(`HOME=${a.homeDir}`);
    expect(result.stdout).toContain(`CLAUDE_CONFIG_DIR=${a.configDir}`);
  });

  it("cannot see or signal the server's processes", async () => {
    const result = await a.exec(`test -e /proc/${process.pid}/status && echo visible; kill -0 ${process.pid} && echo signalled; ls /proc | grep -c '^[0-9]'`);
    expect(result.stdout).not.toContain("visible");
    expect(result.stdout).not.toContain("signalled");
    // bwrap's init, sh, ls, grep: a handful, not the host's process table.
    expect(Number(result.stdout.trim().split("\n").pop())).toBeLessThan(10);
    expect(process.kill(process.pid, 0)).toBe(true); // and this process is still fine
  });

  it("has a private /tmp: not the host's, not another sandbox's", async () => {
    const marker = `marker-${process.pid}`;
    await a.exec(`echo a > /tmp/${marker}`);
    expect(existsSync(join(tmpdir(), marker))).toBe(false);
    const fromB = await b.exec(`cat /tmp/${marker}`);
    expect(fromB.exitCode).not.toBe(0);
    // Each exec gets its own /tmp, too: nothing lingers between commands.
    const later = await a.exec(`cat /tmp/${marker}`);
    expect(later.exitCode).not.toBe(0);
  });

  it("sees the system read-only", async () => {
    const result = await a.exec("touch /usr/ash-probe 2>&1; touch /etc/ash-probe 2>&1; echo done");
    expect(result.stdout).toMatch(/Read-only file system|Permission denied/);
    expect(existsSync("/usr/ash-probe")).toBe(false);
    expect(existsSync("/etc/ash-probe")).toBe(false);
  });

  it("reaps orphaned children: no zombies pile up", async () => {
    const result = await a.exec(
      "for i in $(seq 1 20); do (sleep 0.05 &) ; done; sleep 0.5; grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l",
    );
    expect(result.exitCode).toBe(0);
    expect(Number(result.stdout.trim())).toBe(0);
  });

  it("kills a timed-out command together with everything it started", async () => {
    // A unique sleep length marks the processes on the host's process table.
    const marker = `3599.${process.pid}`;
    const result = await a.exec(`(sleep ${marker}) & sleep ${marker} & sleep ${marker}`, { timeoutMs: 300 });
    expect(result.timedOut).toBe(true);
    expect(result.exitCode).toBeNull();
    expect(hostProcessesWith(marker)).toEqual([]);
  });

  it("caps captured output", async () => {
    const result = await a.exec("head -c 100000 /dev/zero | tr '\\0' x", { maxOutputBytes: 1000 });
    expect(result.stdout.length).toBe(1000);
    expect(result.truncated).toBe(true);
  });

  it("passes stdin and keeps recent output lines in logs()", async () => {
    const result = await a.exec("cat; echo to-stderr >&2", { stdin: "line one\nline two\n" });
    expect(result.stdout).toBe("line one\nline two\n");
    const lines = a.logs(10).map((l) => `${l.stream}:${l.line}`);
    expect(lines).toEqual(expect.arrayContaining(["stdout:line one", "stdout:line two", "stderr:to-stderr"]));
  });

  it("refuses bad input with a clear error", async () => {
    await expect(a.exec("")).rejects.toThrow(/non-empty command/);
    await expect(a.exec("pwd", { cwd: "../../.." })).rejects.toThrow(/outside the sandbox workspace/);
    await expect(a.exec("pwd", { timeoutMs: 0 })).rejects.toThrow(/timeoutMs/);
    await expect(createSandbox({ dataDir, id: "../escape" })).rejects.toThrow(/Invalid sandbox id/);
    await expect(createSandbox({ dataDir, id: "bad-limits", limits: { memoryMb: -1 } })).rejects.toThrow(/memoryMb/);
    await expect(createSandbox({ dataDir, id: "bad-env", env: { "NOT VALID": "x" } })).rejects.toThrow(/Invalid environment variable name/);
    expect(readdirSync(join(dataDir, "sandboxes")).sort()).toEqual([a.id, b.id].sort());
  });

  it("by default refuses to create a sandbox without bwrap, and creates nothing", async () => {
    await expect(createSandbox({ dataDir, id: "strict-one", isolation: "none", cgroup1Parent: cgroupParent })).rejects.toThrow(
      /isolation is required but unavailable/,
    );
    expect(existsSync(join(dataDir, "sandboxes", "strict-one"))).toBe(false);
  });

  it("with unisolated sandboxes allowed, runs as the non-root user with the allowlisted env when bwrap is off (and says so)", async () => {
    const plain = await createSandbox({ dataDir, isolation: "none", allowUnisolated: true, cgroup1Parent: cgroupParent });
    try {
      expect(plain.isolation).toMatchObject({ isolation: "none", allowUnisolated: true, seccomp: false });
      expect(plain.isolation.detail).toMatch(/UNISOLATED: no filesystem, process or system-call isolation/);
      const result = await plain.exec("id -u; env");
      expect(Number(result.stdout.split("\n")[0])).toBe(plain.user!.uid);
      expect(result.stdout).not.toContain("ASH_API_KEY");
      expect(result.stdout).toContain(`HOME=${plain.homeDir}`);
    } finally {
      await plain.destroy();
    }
  });

  it("exec after destroy fails clearly", async () => {
    const gone = await createSandbox({ dataDir, cgroup1Parent: cgroupParent });
    await gone.destroy();
    expect(gone.destroyed).toBe(true);
    expect(existsSync(gone.rootDir)).toBe(false);
    await expect(gone.exec("true")).rejects.toThrow(/is destroyed/);
  });
});

/** Host pids whose command line contains `text`. */
function hostProcessesWith(text: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8");
      if (cmdline.includes(text)) found.push(Number(entry));
    } catch {
      // exited meanwhile
    }
  }
  return found;
}
