/**
 * The whole product in containers: the real image started by the
 * Testcontainers module (with the run spec's isolation options) next to the
 * fake model in a container on the same test network, driven over HTTP.
 *
 * Needs `docker info` and ASH_TEST_IMAGE (a local image); skipped otherwise.
 */
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GenericContainer, Network, Wait, type StartedNetwork, type StartedTestContainer } from "testcontainers";
import { AshContainer, type StartedAshContainer } from "../../src/testcontainers";
import type { StreamEvent } from "../../src/client";
import { dockerImageProblem, skipUnlessReady } from "../helpers/requirements";

process.env.TESTCONTAINERS_RYUK_DISABLED = "true";
process.env.TESTCONTAINERS_HOST_OVERRIDE = "127.0.0.1";

const image = process.env.ASH_TEST_IMAGE;
const LABEL = { "ash.test": "1" };

const reason = skipUnlessReady("The agent-flow end-to-end tests", dockerImageProblem(image));

describe.skipIf(reason)("an agent served by the real image", () => {
  let network: StartedNetwork;
  let model: StartedTestContainer;
  let ash: StartedAshContainer;
  let dataDir: string;
  let agentDir: string;
  const apiKey = "e2e-key-0123456789abcdef";

  const startAsh = () =>
    new AshContainer(image)
      .withApiKey(apiKey)
      .withAnthropicApiKey("sk-ant-e2e-fake")
      .withAnthropicBaseUrl("http://model:8080")
      .withNetwork(network)
      .withBindMounts([{ source: dataDir, target: "/data" }])
      .withAgent("e2e", agentDir)
      .withLabels(LABEL)
      .start();

  const modelRequests = async () => {
    const r = await fetch(`http://${model.getHost()}:${model.getMappedPort(8080)}/_requests`);
    return (await r.json()) as Array<{ body: { messages: Array<{ role: string; content: unknown }> } }>;
  };
  const lastUserTexts = async () => {
    const requests = await modelRequests();
    return JSON.stringify(requests.at(-1)?.body.messages ?? []);
  };
  const collect = async (events: AsyncIterable<StreamEvent>) => {
    const all: StreamEvent[] = [];
    for await (const e of events) all.push(e);
    return all;
  };

  beforeAll(async () => {
    network = await new Network().start();
    model = await new GenericContainer(image!)
      .withCopyFilesToContainer([{ source: resolve(import.meta.dirname, "../fake-model/fake-model.mjs"), target: "/fake/fake-model.mjs" }])
      .withEntrypoint(["node"])
      .withCommand(["/fake/fake-model.mjs", "--port", "8080", "--host", "0.0.0.0"])
      .withExposedPorts(8080)
      .withNetwork(network)
      .withNetworkAliases("model")
      .withLabels(LABEL)
      .withWaitStrategy(Wait.forLogMessage("fake model listening"))
      .start();
    dataDir = await mkdtemp(join(tmpdir(), "ash-e2e-data-"));
    agentDir = await mkdtemp(join(tmpdir(), "ash-e2e-agent-"));
    await writeFile(join(agentDir, "CLAUDE.md"), "You are the end-to-end test agent.\n");
    await writeFile(join(agentDir, "facts.txt"), "the sky is green here\n");
    ash = await startAsh();
  }, 300_000);

  afterAll(async () => {
    await ash?.stop().catch(() => undefined);
    await model?.stop().catch(() => undefined);
    await network?.stop().catch(() => undefined);
    await rm(dataDir, { recursive: true, force: true });
    await rm(agentDir, { recursive: true, force: true });
  });

  let sessionId: string;

  it("runs a turn in which the real CLI in the container calls a tool against the model", async () => {
    const client = ash.getClient();
    expect(ash.agents.map((a) => a.name)).toEqual(["e2e"]);
    const session = await client.createSession({ agent: "e2e" });
    sessionId = session.id;
    const events = await collect(client.sendMessage(session.id, "#bash cat facts.txt && echo written > out.txt"));
    const types = events.map((e) => e.type);
    expect(types[0]).toBe("session_start");
    expect(types).toContain("tool_use");
    expect(types).toContain("turn_complete");
    expect(types.at(-1)).toBe("done");
    const result = events.find((e) => e.type === "tool_result") as Extract<StreamEvent, { type: "tool_result" }>;
    expect(JSON.stringify(result.data.content)).toContain("the sky is green here");
    expect((await modelRequests()).length).toBeGreaterThanOrEqual(2);
  });

  it("keeps history, and pause/resume keeps files and memory", async () => {
    const client = ash.getClient();
    const history = await client.listMessages(sessionId);
    expect(history[0]).toMatchObject({ role: "user" });
    expect(history.some((m) => m.role === "assistant")).toBe(true);
    expect((await client.pauseSession(sessionId)).status).toBe("paused");
    expect((await client.resumeSession(sessionId)).status).toBe("active");
    const events = await collect(client.sendMessage(sessionId, "#bash cat out.txt"));
    const result = events.find((e) => e.type === "tool_result") as Extract<StreamEvent, { type: "tool_result" }>;
    expect(JSON.stringify(result.data.content)).toContain("written");
    expect(await lastUserTexts()).toContain("cat facts.txt");
  });

  it("lays out the data folder as documented", async () => {
    const top = await readdir(dataDir);
    expect(top).toEqual(expect.arrayContaining(["ash.db", "agents", "store", "sandboxes"]));
    await stat(join(dataDir, "agents", "e2e", "CLAUDE.md"));
    // The saved workspace: one tree per folder and packs of file bytes, each named by its SHA-256.
    // (in folders named by the first two hex digits).
    const objects = async (kind: string) => {
      const names: string[] = [];
      for (const shard of await readdir(join(dataDir, "store", kind))) names.push(...(await readdir(join(dataDir, "store", kind, shard))).filter((n) => n.startsWith(shard)));
      return names.filter((n) => /^[0-9a-f]{64}$/.test(n));
    };
    expect((await objects("trees")).length).toBeGreaterThan(0);
    expect((await objects("packs")).length).toBeGreaterThan(0);
    // The turn that wrote out.txt is a checkpoint whose files include it.
    const checkpoints = await ash.getClient().listCheckpoints(sessionId);
    expect(checkpoints.length).toBeGreaterThan(0);
    expect((await ash.getClient().readFile(sessionId, "out.txt")).text().length).toBeGreaterThan(0);
  });

  it("keeps every agent, session and message through a container restart on the same volume", async () => {
    const before = await ash.getClient().listMessages(sessionId);
    await ash.stop();
    ash = await startAsh();
    const client = ash.getClient();
    expect((await client.listAgents()).map((a) => a.name)).toContain("e2e");
    expect(await client.listMessages(sessionId)).toEqual(before);
    const events = await collect(client.sendMessage(sessionId, "#bash cat out.txt"));
    expect(events.map((e) => e.type)).toContain("turn_complete");
    expect(await lastUserTexts()).toContain("cat facts.txt");
  });
});
