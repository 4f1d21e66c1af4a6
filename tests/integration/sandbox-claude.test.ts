import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync, statSync } from "node:fs";
import { MAX_STDOUT_LINE_BYTES } from "../../src/sandbox/sandbox-process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { query, type SDKMessage } from "@anthropic-ai/claude-agent-sdk";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cgroup1Mounts } from "../../src/sandbox/cgroup1";
import { createSandbox, describeSandboxHost, sweepResourceGroups, type Sandbox } from "../../src/sandbox";
import { startFakeModel } from "../fake-model/fake-model.mjs";
import { createForward } from "../../src/sandbox/egress-proxy";
import { sandboxProblem, skipUnlessReady } from "../helpers/requirements";

// The real Claude Code CLI, spawned by the real Agent SDK through the
// sandbox; only the model is faked.
// (allowUnisolated: the probe reports a missing bwrap instead of throwing, so the rule below decides.)
const host = await describeSandboxHost({ allowUnisolated: true });
const skip = skipUnlessReady("Claude Code CLI in a sandbox", sandboxProblem(host));
const cgroupParent = `ash-test-cli-${process.pid}`;

describe.skipIf(skip)("Claude Code CLI inside a sandbox", () => {
  let dataDir: string;
  let model: Awaited<ReturnType<typeof startFakeModel>>;
  let box: Sandbox;

  beforeAll(async () => {
    process.env.ASH_API_KEY = "server-api-key-must-not-leak";
    dataDir = mkdtempSync(join(tmpdir(), "ash-cli-"));
    chmodSync(dataDir, 0o711);
    model = await startFakeModel();
    // The sandbox has no network of its own: the model is reached through a service on its loopback.
    box = await createSandbox({
      dataDir,
      cgroup1Parent: cgroupParent,
      env: { AGENT_FLAVOR: "sandboxed" },
      network: {
        services: [{ name: "model", port: 4141, accept: createForward("127.0.0.1", model.port) }],
        env: (addresses) => ({ ANTHROPIC_BASE_URL: `http://${addresses.model!.host}:${addresses.model!.port}` }),
      },
    });
  });

  afterAll(async () => {
    await box?.destroy();
    await model?.close();
    await sweepResourceGroups("cgroup1", [], { cgroup1Parent: cgroupParent });
    for (const mount of Object.values(cgroup1Mounts())) if (existsSync(join(mount!, cgroupParent))) rmdirSync(join(mount!, cgroupParent));
    rmSync(dataDir, { recursive: true, force: true });
    delete process.env.ASH_API_KEY;
  });

  async function turn(prompt: string): Promise<SDKMessage[]> {
    const messages: SDKMessage[] = [];
    for await (const message of query({
      prompt,
      options: {
        cwd: box.workspaceDir,
        spawnClaudeCodeProcess: box.spawnClaudeCode,
        permissionMode: "bypassPermissions",
        allowDangerouslySkipPermissions: true,
        settingSources: [],
        // What a runtime might hand over, server secret included by mistake.
        env: {
          ...process.env,
          ANTHROPIC_BASE_URL: model.url,
          ANTHROPIC_API_KEY: "model-key",
          CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: "1",
          CLAUDE_CODE_MAX_RETRIES: "0",
          CLAUDE_CONFIG_DIR: box.configDir,
        },
      },
    })) {
      messages.push(message);
    }
    return messages;
  }

  it("runs a turn with a tool call as the sandbox user, in the workspace, without server secrets", { timeout: 120_000 }, async () => {
    const messages = await turn("#bash id -u; pwd; echo key=${ASH_API_KEY:-absent} flavor=$AGENT_FLAVOR; echo made > made.txt");
    const result = messages.find((m) => m.type === "result");
    expect(result).toMatchObject({ subtype: "success", is_error: false });
    const text = (result as { result: string }).result;
    expect(text).toContain(`Tool result: ${box.user!.uid}`);
    expect(text).toContain(box.workspaceDir);
    expect(text).toContain("key=absent flavor=sandboxed");

    expect(statSync(join(box.workspaceDir, "made.txt")).uid).toBe(box.user!.uid);
    // The model key arrived at the model; the transcript went to the sandbox's own config dir.
    expect(model.requests.at(-1)?.headers["x-api-key"]).toBe("model-key");
    const projects = join(box.configDir, "projects");
    expect(readdirSync(projects).length).toBeGreaterThan(0);
    expect(box.limitKillReason()).toBeNull();
  });

  it("hands the SDK a process whose pipes and signals work", { timeout: 30_000 }, async () => {
    const controller = new AbortController();
    const child = box.spawnClaudeCode({ command: "/bin/cat", args: [], env: {}, cwd: box.workspaceDir, signal: controller.signal });
    const echoed = new Promise<string>((resolve) => child.stdout.once("data", (chunk: Buffer) => resolve(chunk.toString())));
    child.stdin.write('{"type":"ping"}\n');
    expect(await echoed).toBe('{"type":"ping"}\n');
    expect(child.exitCode).toBeNull();
    const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.once("exit", (code, signal) => resolve([code, signal])));
    expect(child.kill("SIGTERM")).toBe(true);
    const [code] = await exited;
    expect(code).toBe(128 + 15); // cat itself got SIGTERM inside the sandbox
    expect(child.killed).toBe(true);
    expect(child.kill("SIGTERM")).toBe(false);
  });

  it("stops an agent process that writes a line longer than the server reads, passing no more than the limit on", { timeout: 60_000 }, async () => {
    const child = box.spawnClaudeCode({
      command: "/bin/sh",
      args: ["-c", `echo '{"type":"first"}'; head -c ${MAX_STDOUT_LINE_BYTES + 1024 * 1024} /dev/zero; sleep 60`],
      env: {},
      cwd: box.workspaceDir,
      signal: new AbortController().signal,
    });
    let passed = "";
    let bytes = 0;
    child.stdout.on("data", (chunk: Buffer) => {
      bytes += chunk.length;
      if (passed.length < 100) passed += chunk.toString("latin1");
    });
    const [, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.once("exit", (code, sig) => resolve([code, sig])));
    expect(signal).toBe("SIGKILL");
    expect(passed.startsWith('{"type":"first"}\n')).toBe(true);
    expect(bytes).toBeLessThanOrEqual('{"type":"first"}\n'.length + MAX_STDOUT_LINE_BYTES);
    expect(box.logs().some((l) => l.line.includes("wrote a line of more than"))).toBe(true);
  });

  it("kills the whole sandboxed tree when the SDK aborts", { timeout: 30_000 }, async () => {
    const controller = new AbortController();
    const marker = `3597.${process.pid}`;
    const child = box.spawnClaudeCode({
      command: "/bin/sh",
      args: ["-c", `sleep ${marker} & sleep ${marker}`],
      env: {},
      cwd: box.workspaceDir,
      signal: controller.signal,
    });
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    for (let i = 0; i < 100 && (await box.processCount()) < 2; i++) await new Promise((r) => setTimeout(r, 20));
    controller.abort();
    await exited;
    const left = readdirSync("/proc").filter((p) => /^\d+$/.test(p) && safeRead(`/proc/${p}/cmdline`).includes(marker));
    expect(left).toEqual([]);
  });

  it("refuses a working directory outside the workspace", () => {
    expect(() =>
      box.spawnClaudeCode({ command: "/bin/true", args: [], env: {}, cwd: dataDir, signal: new AbortController().signal }),
    ).toThrow(/outside the sandbox workspace/);
  });
});

function safeRead(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}
