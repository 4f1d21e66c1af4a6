import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cgroup1Mounts } from "../../src/sandbox/cgroup1";
import { createSandbox, describeSandboxHost, sweepResourceGroups, type Sandbox } from "../../src/sandbox";
import { createForward } from "../../src/sandbox/egress-proxy";
import { sandboxProblem, skipUnlessReady } from "../helpers/requirements";

// An idle sandbox's loopback bridges (socat, one per service) are stopped and
// started again: while stopped, no process of the sandbox is left; started
// again, the same ports answer in the same namespace.
const host = await describeSandboxHost({ allowUnisolated: true });
const skip = skipUnlessReady("sandbox network bridges", sandboxProblem(host));
const cgroupParent = `ash-test-netsuspend-${process.pid}`;

/** Processes on this machine whose command line names this sandbox's socket folder. */
function bridgeProcesses(box: Sandbox): number {
  let n = 0;
  for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(join(box.rootDir, "net"))) n++;
    } catch {
      // gone
    }
  }
  return n;
}

describe.skipIf(skip)("a sandbox's network bridges", () => {
  let dataDir: string;
  let echo: Server;
  let box: Sandbox;
  const connect = (port: number) =>
    `node -e 'const s=require("net").connect(${port},"127.0.0.1",()=>s.write("ping"));s.on("data",c=>{console.log(String(c));s.destroy()});s.on("error",e=>console.log(e.code))'`;

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), "ash-netsuspend-"));
    chmodSync(dataDir, 0o711);
    echo = createServer((socket) => socket.on("data", (d) => socket.write(`pong:${d}`)));
    await new Promise<void>((resolve) => echo.listen(0, "127.0.0.1", () => resolve()));
    box = await createSandbox({
      dataDir,
      cgroup1Parent: cgroupParent,
      network: { services: [{ name: "echo", port: 4242, accept: createForward("127.0.0.1", (echo.address() as { port: number }).port) }] },
    });
  });
  afterAll(async () => {
    await box?.destroy();
    echo?.close();
    await sweepResourceGroups("cgroup1", [], { cgroup1Parent: cgroupParent });
    for (const mount of Object.values(cgroup1Mounts())) if (existsSync(join(mount!, cgroupParent))) rmdirSync(join(mount!, cgroupParent));
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("are stopped while idle, leave no process, and answer again after a resume, three times over", async () => {
    expect((await box.exec(connect(4242))).stdout.trim()).toBe("pong:ping");
    expect(bridgeProcesses(box)).toBeGreaterThan(0);
    for (let round = 0; round < 3; round++) {
      await box.suspendNetwork();
      expect(bridgeProcesses(box)).toBe(0);
      // The agent cannot be started on a sandbox whose bridges are stopped.
      expect(() => box.spawnClaudeCode({ command: "/bin/true", args: [], env: {}, signal: new AbortController().signal } as any)).toThrow(/resume them/);
      await box.resumeNetwork();
      expect(bridgeProcesses(box)).toBeGreaterThan(0);
      expect((await box.exec(connect(4242))).stdout.trim()).toBe("pong:ping");
    }
  });

  it("are started again by an exec on its own", async () => {
    await box.suspendNetwork();
    expect(bridgeProcesses(box)).toBe(0);
    expect((await box.exec(connect(4242))).stdout.trim()).toBe("pong:ping");
  });
});
