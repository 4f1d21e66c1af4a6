// No model key inside a sandbox: the agent process holds a per-session token
// for the server's model gateway, which adds the real key. The token works
// only for its own session's live sandbox.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { agentUpload, readEvents, startTestServer, type TestServer } from "../helpers/server";
import { startFakeModel } from "../fake-model/fake-model.mjs";
import { SANDBOX_PORTS } from "../../src/sessions/sandbox-access";

const SERVER_KEY = "sk-ant-server-secret-7731a9c2e4";
const AGENT_KEY = "sk-ant-agent-secret-51f0b8d6aa";

describe("the model key never enters a sandbox", () => {
  let server: TestServer;
  let model: Awaited<ReturnType<typeof startFakeModel>>;

  beforeAll(async () => {
    model = await startFakeModel();
    server = await startTestServer({ modelUrl: model.url, env: { ANTHROPIC_API_KEY: SERVER_KEY } });
    expect((await server.api("/api/agents", { method: "POST", json: agentUpload("plain") })).status).toBe(201);
    expect((await server.api("/api/agents", { method: "POST", json: agentUpload("ownkey", {}, { env: { ANTHROPIC_API_KEY: AGENT_KEY, OTHER_VALUE: "kept-8812" } }) })).status).toBe(201);
  });
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
  });

  const newSession = async (agent: string) => {
    const r = await server.api("/api/sessions", { method: "POST", json: { agent } });
    expect(r.status).toBe(201);
    return (await r.json()).session as { id: string };
  };
  const exec = async (id: string, command: string) => {
    const r = await server.api(`/api/sessions/${id}/exec`, { method: "POST", json: { command, timeout: 120_000 } });
    expect(r.status).toBe(200);
    return (await r.json()) as { exitCode: number; stdout: string; stderr: string };
  };
  /** Runs a command through the agent's own Bash tool (a child of the CLI, with its environment). */
  const bashTool = async (id: string, command: string) => {
    const events = await readEvents(await server.api(`/api/sessions/${id}/messages`, { method: "POST", json: { content: `#bash ${command}` } }));
    const result = events.find((e) => e.event === "tool_result");
    expect(result, JSON.stringify(events.filter((e) => e.event === "error"))).toBeDefined();
    return JSON.stringify(result!.data.content);
  };
  const tokenOf = async (id: string) => {
    const out = await bashTool(id, "printf 'TOKEN[%s]' \"$ANTHROPIC_API_KEY\"");
    const token = /TOKEN\[([^\]]*)\]/.exec(out)?.[1];
    expect(token).toMatch(/^ash-gw-/);
    return token!;
  };
  // A minimal Messages call with a given key, from inside a sandbox, to its own gateway port.
  const callGateway = (token: string) =>
    `curl -s -o /dev/null -w 'STATUS=%{http_code}' -H 'x-api-key: ${token}' -H 'content-type: application/json' -H 'anthropic-version: 2023-06-01' ` +
    `-d '{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}' "http://127.0.0.1:${SANDBOX_PORTS.gateway}/v1/messages"`;

  it.each([
    ["the server's key", "plain", SERVER_KEY],
    ["the agent's own key", "ownkey", AGENT_KEY],
  ])("keeps %s out of env, every process's environ and every readable file, for exec and the Bash tool", async (_what, agent, key) => {
    const session = await newSession(agent);
    // The agent's own non-model variables still arrive.
    if (agent === "ownkey") expect((await exec(session.id, "env")).stdout).toContain("OTHER_VALUE=kept-8812");
    const env = await exec(session.id, "env; cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' '\\n'");
    expect(env.stdout).not.toContain(key);
    // exec carries no model setting at all, not even the gateway's address.
    expect(env.stdout).not.toMatch(/^ANTHROPIC_/m);
    // Every file the sandbox can read outside the system trees (those are the host's own, read-only).
    const files = await exec(session.id, `grep -rlsF '${key}' / --exclude-dir=proc --exclude-dir=sys --exclude-dir=usr --exclude-dir=lib --exclude-dir=lib64 --exclude-dir=bin --exclude-dir=sbin; echo scanned`);
    expect(files.stdout.trim()).toBe("scanned");
    const tool = await bashTool(session.id, "env; cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'; cat \"$HOME\"/.claude/*.json \"$HOME\"/.claude.json 2>/dev/null");
    expect(tool).not.toContain(key);
    expect(tool).toContain("ash-gw-");
    expect(tool).toMatch(/ANTHROPIC_BASE_URL=http:\/\/127\.0\.0\.1:\d+/);
    // The model still got the real key, added by the gateway.
    const seen = model.requests.at(-1)!.headers["x-api-key"];
    expect(seen).toBe(key);
  });

  it("refuses a session's token from another session's sandbox, and after its sandbox slept; a woken session gets a new one", async () => {
    const a = await newSession("plain");
    const b = await newSession("plain");
    const tokenA = await tokenOf(a.id);
    const before = model.requests.length;
    // From B's sandbox, with A's token: 401, nothing forwarded.
    expect((await exec(b.id, callGateway(tokenA))).stdout).toBe("STATUS=401");
    // From A's own sandbox, its token works (the fake model answers).
    expect((await exec(a.id, callGateway(tokenA))).stdout).toBe("STATUS=200");
    expect(model.requests.length).toBe(before + 1);
    // A sleeps (its sandbox goes away) and wakes: the old token is dead, a new one works.
    expect((await server.api(`/api/sessions/${a.id}/pause`, { method: "POST" })).status).toBe(200);
    expect((await exec(a.id, callGateway(tokenA))).stdout).toBe("STATUS=401");
    const tokenA2 = await tokenOf(a.id);
    expect(tokenA2).not.toBe(tokenA);
    expect((await exec(a.id, callGateway(tokenA2))).stdout).toBe("STATUS=200");
    // Ended: B cannot use A's last token either, and no request without a live token was forwarded.
    expect((await server.api(`/api/sessions/${a.id}`, { method: "DELETE" })).status).toBe(200);
    const forwarded = model.requests.length;
    expect((await exec(b.id, callGateway(tokenA2))).stdout).toBe("STATUS=401");
    expect((await exec(b.id, callGateway("sk-ant-made-up"))).stdout).toBe("STATUS=401");
    expect((await exec(b.id, callGateway(""))).stdout).toBe("STATUS=401");
    expect(model.requests.length).toBe(forwarded);
    const metrics = await (await server.api("/metrics")).text();
    expect(metrics).toMatch(/ash_gateway_rejected_total\{reason="wrong_sandbox"\} [1-9]/);
    expect(metrics).toMatch(/ash_gateway_rejected_total\{reason="unknown"\} [1-9]/);
  });
});

// A model key goes only to the endpoint that came with it. A session's or agent's own
// ANTHROPIC_BASE_URL once sent the server's key (or a stored credential) to a host the tenant
// chose, and the gateway dialed any address for it (the host's loopback, instance metadata).
describe("a model key goes only to the endpoint that came with it", () => {
  let server: TestServer;
  let model: Awaited<ReturnType<typeof startFakeModel>>;
  let attacker: Server;
  const seen: string[] = [];
  let attackerUrl: string;

  beforeAll(async () => {
    attacker = createServer((req, res) => {
      seen.push(`${req.method} ${req.url} key=${req.headers["x-api-key"] ?? ""}`);
      res.writeHead(500).end();
    });
    await new Promise<void>((resolve) => attacker.listen(0, "127.0.0.1", resolve));
    attackerUrl = `http://127.0.0.1:${(attacker.address() as AddressInfo).port}`;
    model = await startFakeModel();
    server = await startTestServer({ modelUrl: model.url, env: { ANTHROPIC_API_KEY: SERVER_KEY, ASH_WARM_DEMAND_MS: "0" } });
    expect((await server.api("/api/agents", { method: "POST", json: agentUpload("plain") })).status).toBe(201);
  });
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
    await new Promise((resolve) => attacker?.close(resolve));
  });

  const count = async (path: string, key: string) => ((await (await server.api(path)).json()) as Record<string, unknown[]>)[key]!.length;

  it("refuses a session, agent or environment whose ANTHROPIC_BASE_URL has no key of its own beside it, and stores nothing", async () => {
    const sessionsBefore = await count("/api/sessions", "sessions");
    const session = await server.api("/api/sessions", { method: "POST", json: { agent: "plain", extraEnv: { ANTHROPIC_BASE_URL: attackerUrl } } });
    expect(session.status).toBe(400);
    expect((await session.json()).error).toMatch(/extraEnv: ANTHROPIC_BASE_URL needs ANTHROPIC_API_KEY or ANTHROPIC_AUTH_TOKEN beside it/);
    expect(await count("/api/sessions", "sessions")).toBe(sessionsBefore);

    const agent = await server.api("/api/agents", { method: "POST", json: agentUpload("thief", {}, { env: { ANTHROPIC_BASE_URL: attackerUrl } }) });
    expect(agent.status).toBe(400);
    expect((await agent.json()).error).toMatch(/env: ANTHROPIC_BASE_URL needs/);
    expect((await server.api("/api/agents/thief")).status).toBe(404);

    const before = (await (await server.api("/api/agents/plain")).json()).agent.version;
    const patch = await server.api("/api/agents/plain", { method: "PATCH", json: { env: { ANTHROPIC_BASE_URL: attackerUrl } } });
    expect(patch.status).toBe(400);
    expect((await (await server.api("/api/agents/plain")).json()).agent.version).toBe(before);

    const environment = await server.api("/v1/environments", { method: "POST", json: { name: "thief", config: { type: "cloud", env: { ANTHROPIC_BASE_URL: attackerUrl } } } });
    expect(environment.status).toBe(400);
    expect(JSON.stringify(await environment.json())).toMatch(/ANTHROPIC_BASE_URL needs/);
    const notAUrl = await server.api("/api/sessions", { method: "POST", json: { agent: "plain", extraEnv: { ANTHROPIC_API_KEY: "sk-own", ANTHROPIC_BASE_URL: "file:///etc/passwd" } } });
    expect(notAUrl.status).toBe(400);
    expect(seen).toEqual([]);
  });

  it("never dials the host's own addresses for a session's own endpoint, even with its own key", async () => {
    const r = await server.api("/api/sessions", { method: "POST", json: { agent: "plain", extraEnv: { ANTHROPIC_API_KEY: "sk-ant-session-own-0c1d", ANTHROPIC_BASE_URL: attackerUrl } } });
    expect(r.status).toBe(201);
    const { session } = await r.json();
    const events = await readEvents(await server.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "hello" } }));
    expect(events.map((e) => e.event)).toContain("done");
    // The refusal reaches the turn as the gateway's answer; nothing reached the address.
    expect(JSON.stringify(events)).toMatch(/public address/);
    expect(seen).toEqual([]);
  });
});
