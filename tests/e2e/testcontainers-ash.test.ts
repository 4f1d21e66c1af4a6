/**
 * The Testcontainers module (`@ash-ai/cli/testcontainers`) starting the real image.
 *
 * Needs `docker info` to answer and ASH_TEST_IMAGE to name a local image; skipped
 * otherwise, saying why. Ryuk cannot be pulled here, so it is off and this file
 * removes its own containers by label.
 */
import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Docker from "dockerode";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dockerImageProblem, skipUnlessReady } from "../helpers/requirements";
import { AshContainer } from "../../src/testcontainers";

process.env.TESTCONTAINERS_RYUK_DISABLED = "true";
process.env.TESTCONTAINERS_HOST_OVERRIDE = "127.0.0.1";

const image = process.env.ASH_TEST_IMAGE;
const runLabel = `e2e-${process.pid}-${Date.now()}`;

const reason = skipUnlessReady("The Testcontainers tests", dockerImageProblem(image));

describe.skipIf(reason)("AshContainer with the real image", () => {
  const docker = new Docker();
  let agentDir: string;

  const ours = async () => docker.listContainers({ all: true, filters: { label: [`ai.ash.e2e-run=${runLabel}`] } });

  beforeAll(async () => {
    agentDir = await mkdtemp(join(tmpdir(), "ash-tc-agent-"));
    await writeFile(join(agentDir, "CLAUDE.md"), "You answer questions about the weather.\n");
    await mkdir(join(agentDir, ".claude"));
    await writeFile(join(agentDir, ".claude", "settings.json"), JSON.stringify({ permissions: { allow: ["Read"] } }));
    await writeFile(join(agentDir, ".env"), "WEATHER_TOKEN=secret-value\n");
  });

  afterAll(async () => {
    for (const info of await ours()) await docker.getContainer(info.Id).remove({ force: true });
    await rm(agentDir, { recursive: true, force: true });
  });

  it("starts the server, deploys the agent folder and answers with the key", async () => {
    const ash = await new AshContainer(image)
      .withApiKey("tc-e2e-key-0123456789")
      .withAnthropicApiKey("sk-ant-not-used")
      .withAgent("weather", agentDir)
      .withEnvironment({ ASH_MAX_SANDBOXES: "3" })
      .withLabels({ "ai.ash.e2e-run": runLabel })
      .start();
    try {
      expect(ash.getUrl()).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(ash.getApiKey()).toBe("tc-e2e-key-0123456789");

      const health = await fetch(`${ash.getUrl()}/health`);
      expect(health.status).toBe(200);
      const body = (await health.json()) as { status: string; limits: { mode: string } };
      expect(body.status).toBe("ok");
      // The isolation options make cgroups writable, so limits are not the rlimit fallback.
      expect(["cgroup1", "cgroup2"]).toContain(body.limits.mode);

      expect((await fetch(`${ash.getUrl()}/api/agents`)).status).toBe(401);
      expect((await fetch(`${ash.getUrl()}/api/agents`, { headers: { authorization: "Bearer wrong-key-123" } })).status).toBe(401);

      expect(ash.agents.map((a) => a.name)).toEqual(["weather"]);
      const agent = await ash.getClient().getAgent("weather");
      expect(agent.version).toBe(1);
      expect(agent.env).toEqual({ WEATHER_TOKEN: "***" });

      const info = await docker.getContainer(ash.getId()).inspect();
      expect(info.HostConfig.Privileged).toBe(false);
      expect(info.HostConfig.Init).toBe(true);
      expect((info.HostConfig as any).CgroupnsMode).toBe("host");
      expect(info.HostConfig.CapAdd).toEqual(["SYS_ADMIN"]);
      expect(info.HostConfig.SecurityOpt).toEqual(["seccomp=unconfined", "apparmor=unconfined"]);
      expect(info.HostConfig.Binds).toContain("/sys/fs/cgroup:/sys/fs/cgroup:rw");
      expect(info.Config.Env).toContain("ASH_MAX_SANDBOXES=3");
      expect(info.Config.Env).toContain("ANTHROPIC_API_KEY=sk-ant-not-used");
    } finally {
      await ash.stop();
    }
    expect(await ours()).toEqual([]);
  });

  it("makes up a key when none is given and hands out a client that uses it", async () => {
    const ash = await new AshContainer(image).withLabels({ "ai.ash.e2e-run": runLabel }).start();
    try {
      expect(ash.getApiKey()).toMatch(/^ash_test_[A-Za-z0-9_-]{43}$/);
      expect(await ash.getClient().listAgents()).toEqual([]);
    } finally {
      await ash.stop();
    }
  });

  it("refuses an agent folder without CLAUDE.md before any container exists", async () => {
    const empty = await mkdtemp(join(tmpdir(), "ash-tc-empty-"));
    try {
      await expect(new AshContainer(image).withAgent("broken", empty).withLabels({ "ai.ash.e2e-run": runLabel }).start()).rejects.toThrow(/has no CLAUDE\.md/);
      expect(await ours()).toEqual([]);
    } finally {
      await rm(empty, { recursive: true, force: true });
    }
  });

  it("refuses bad settings as it is configured", () => {
    expect(() => new AshContainer(image).withApiKey("short")).toThrow(/at least 8 characters/);
    expect(() => new AshContainer(image).withAgent("no spaces", agentDir)).toThrow(/not an agent name/);
    expect(() => new AshContainer(image).withAnthropicBaseUrl("ftp://x")).toThrow(/not an http\(s\) URL/);
  });
});
