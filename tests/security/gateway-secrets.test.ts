// No model key inside a sandbox: the agent process holds a per-session token
// for the server's model gateway, which adds the real key. The token works
// only for its own session's live sandbox.
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
