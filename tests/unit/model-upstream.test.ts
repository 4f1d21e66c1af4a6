import { describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config";
import { tenantEndpointProblem } from "../../src/gateway/gateway";
import { modelEndpointProblem, modelUpstreamOf } from "../../src/sessions/agent-env";

// An endpoint goes with its key: the server's key and stored credentials only to the server's own
// endpoint, whatever an agent version stored earlier (or a session) names.
describe("where the gateway sends a session's calls, and with which key", () => {
  const config = loadConfig({ ASH_DATA_DIR: "/nonexistent", ANTHROPIC_API_KEY: "sk-server", ANTHROPIC_BASE_URL: "https://models.example.com" });

  it("sends the server's key only to the server's endpoint, even when an agent or session names another", () => {
    const up = modelUpstreamOf({ config, agentEnv: { ANTHROPIC_BASE_URL: "https://thief.example" }, extraEnv: { ANTHROPIC_BASE_URL: "https://thief2.example" } });
    expect(up).toEqual({ baseUrl: "https://models.example.com", apiKey: "sk-server", keyId: "server" });
  });

  it("sends a stored credential only to the server's endpoint", () => {
    const up = modelUpstreamOf({ config, agentEnv: { ANTHROPIC_BASE_URL: "https://thief.example" }, extraEnv: {}, credential: { id: "c1", value: "sk-stored" } });
    expect(up).toMatchObject({ baseUrl: "https://models.example.com", apiKey: "sk-stored", keyId: "credential:c1" });
    expect(up.tenantEndpoint).toBeUndefined();
  });

  it("sends a session's or agent's own key to the endpoint beside it, marked as the tenant's", () => {
    const session = modelUpstreamOf({ config, agentEnv: { ANTHROPIC_API_KEY: "sk-agent", ANTHROPIC_BASE_URL: "https://agent.example" }, extraEnv: { ANTHROPIC_API_KEY: "sk-own", ANTHROPIC_BASE_URL: "https://own.example" } });
    expect(session).toEqual({ baseUrl: "https://own.example", apiKey: "sk-own", authToken: undefined, keyId: "session", tenantEndpoint: { allowPrivate: false } });
    // The session's own key never goes to the agent's endpoint.
    const ownKeyOnly = modelUpstreamOf({ config, agentEnv: { ANTHROPIC_API_KEY: "sk-agent", ANTHROPIC_BASE_URL: "https://agent.example" }, extraEnv: { ANTHROPIC_API_KEY: "sk-own" } });
    expect(ownKeyOnly).toEqual({ baseUrl: "https://models.example.com", apiKey: "sk-own", authToken: undefined, keyId: "session" });
    const agent = modelUpstreamOf({ config, agentEnv: { ANTHROPIC_AUTH_TOKEN: "tok", ANTHROPIC_BASE_URL: "https://agent.example" }, extraEnv: {} });
    expect(agent).toMatchObject({ baseUrl: "https://agent.example", authToken: "tok", keyId: "agent", tenantEndpoint: { allowPrivate: false } });
  });

  it("says what is wrong with an endpoint named without a key, or that is no http(s) URL", () => {
    expect(modelEndpointProblem({ ANTHROPIC_BASE_URL: "https://x.example" })).toMatch(/needs ANTHROPIC_API_KEY or ANTHROPIC_AUTH_TOKEN beside it/);
    expect(modelEndpointProblem({ ANTHROPIC_BASE_URL: "ftp://x.example", ANTHROPIC_API_KEY: "k" })).toMatch(/http:\/\/ or https:\/\//);
    expect(modelEndpointProblem({ ANTHROPIC_BASE_URL: "https://x.example", ANTHROPIC_API_KEY: "k" })).toBeUndefined();
    expect(modelEndpointProblem({ OTHER: "1" })).toBeUndefined();
  });
});

describe("a tenant's model endpoint, checked on its address", () => {
  it.each([
    ["http://127.0.0.1:8080", /loopback/],
    ["http://localhost:8080", /loopback/],
    ["http://169.254.169.254", /link-local|metadata/],
    ["http://[::1]:80", /loopback/],
    ["http://[::ffff:127.0.0.1]", /loopback/],
    ["http://10.1.2.3", /private/],
  ])("refuses %s", async (url, reason) => {
    expect(await tenantEndpointProblem(new URL(url), false)).toMatch(reason);
  });

  it("allows a public address, and a private one only when private egress is allowed", async () => {
    expect(await tenantEndpointProblem(new URL("https://93.184.216.34"), false)).toBeUndefined();
    expect(await tenantEndpointProblem(new URL("http://10.1.2.3"), true)).toBeUndefined();
    expect(await tenantEndpointProblem(new URL("http://127.0.0.1"), true)).toMatch(/loopback/);
  });
});
