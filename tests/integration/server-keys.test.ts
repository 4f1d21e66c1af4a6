import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { agentUpload, readEvents, runServerExpectingFailure, startTestServer, type ApiResponse, type TestServer } from "../helpers/server";
import { startFakeModel } from "../fake-model/fake-model.mjs";

const MASTER = "a-master-key-for-tests-0123456789abcdef";

// API keys with scopes and tenants, managed through the API; credentials
// sealed with the master key. The server's own key (ASH_API_KEY) is the operator.
describe("API keys, scopes and credentials", () => {
  let server: TestServer;
  let model: Awaited<ReturnType<typeof startFakeModel>>;

  beforeAll(async () => {
    model = await startFakeModel();
    server = await startTestServer({ modelUrl: model.url, env: { ASH_CREDENTIAL_KEY: MASTER } });
    expect((await server.api("/api/agents", { method: "POST", json: agentUpload("helper") })).status).toBe(201);
  });
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
  });

  const as = (key: string, path: string, init: { method?: string; json?: unknown } = {}): Promise<ApiResponse> =>
    fetch(`${server.url}${path}`, {
      method: init.method ?? "GET",
      headers: { authorization: `Bearer ${key}`, ...(init.json === undefined ? {} : { "content-type": "application/json" }) },
      body: init.json === undefined ? undefined : JSON.stringify(init.json),
    });
  const makeKey = async (body: Record<string, unknown>, by?: string) => {
    const r = by ? await as(by, "/api/api-keys", { method: "POST", json: body }) : await server.api("/api/api-keys", { method: "POST", json: body });
    expect(r.status).toBe(201);
    return (await r.json()) as { id: string; key: string; scope: string; tenant: string; keyPrefix: string };
  };

  it("makes keys shown once, lists them by prefix only, and revokes them at once", async () => {
    const made = await makeKey({ label: "ci", scope: "read" });
    expect(made.key).toMatch(/^ash_[A-Za-z0-9_-]{43}$/);
    expect(made).toMatchObject({ scope: "read", tenant: "default", keyPrefix: `${made.key.slice(0, 12)}…` });
    const listed = (await (await server.api("/api/api-keys")).json()).keys as any[];
    const row = listed.find((k) => k.id === made.id);
    expect(row).toMatchObject({ label: "ci", scope: "read", revoked: false });
    expect(JSON.stringify(listed)).not.toContain(made.key);
    expect((await as(made.key, "/api/agents")).status).toBe(200);

    expect((await server.api(`/api/api-keys/${made.id}`, { method: "DELETE" })).status).toBe(204);
    const after = await as(made.key, "/api/agents");
    expect(after.status).toBe(401);
    expect((await after.json()).error).toMatch(/revoked/);
    expect((await server.api(`/api/api-keys/${made.id}`, { method: "DELETE" })).status).toBe(204);
    expect((await server.api(`/api/api-keys/no-such-key`, { method: "DELETE" })).status).toBe(404);
  });

  it("enforces scopes: read cannot start a session or a turn, sessions cannot deploy, only the operator sees metrics", async () => {
    const reader = await makeKey({ scope: "read" });
    const user = await makeKey({ scope: "sessions" });
    const admin = await makeKey({ scope: "admin" });

    const refused = await as(reader.key, "/api/sessions", { method: "POST", json: { agent: "helper" } });
    expect(refused.status).toBe(403);
    expect((await refused.json()).error).toBe("This key's scope is read; this needs the sessions scope.");
    const sessions = (await (await server.api("/api/sessions")).json()).sessions.length;

    const created = await as(user.key, "/api/sessions", { method: "POST", json: { agent: "helper" } });
    expect(created.status).toBe(201);
    const id = (await created.json()).session.id;
    expect((await as(reader.key, `/api/sessions/${id}/messages`, { method: "POST", json: { content: "hi" } })).status).toBe(403);
    expect((await as(reader.key, `/api/sessions/${id}`)).status).toBe(200);
    const events = await readEvents(await as(user.key, `/api/sessions/${id}/messages`, { method: "POST", json: { content: "hello" } }));
    expect(events.at(-1)?.event).toBe("done");
    // Only the refused create changed nothing: one more session, the user's.
    expect((await (await server.api("/api/sessions")).json()).sessions.length).toBe(sessions + 1);

    expect((await as(user.key, "/api/agents", { method: "POST", json: agentUpload("nope") })).status).toBe(403);
    expect((await as(user.key, `/api/sessions/${id}`, { method: "PATCH", json: { maxTokens: 10 } })).status).toBe(403);
    // Nor may it raise a budget by creating a session with a larger one: only lower it.
    expect((await as(admin.key, "/api/agents", { method: "POST", json: { ...agentUpload("budgeted"), maxTokens: 1000 } })).status).toBe(201);
    const before = (await (await server.api("/api/sessions")).json()).sessions.length;
    const raised = await as(user.key, "/api/sessions", { method: "POST", json: { agent: "budgeted", maxTokens: 9_000_000_000 } });
    expect(raised.status).toBe(403);
    expect((await raised.json()).error).toMatch(/maxTokens: 9000000000 is more than the 1000 tokens this session would have/);
    expect((await (await server.api("/api/sessions")).json()).sessions.length).toBe(before);
    expect((await as(user.key, "/api/sessions", { method: "POST", json: { agent: "budgeted", maxTokens: 500 } })).status).toBe(201);
    expect((await as(admin.key, "/api/sessions", { method: "POST", json: { agent: "budgeted", maxTokens: 5000 } })).status).toBe(201);
    expect((await as(admin.key, "/api/agents", { method: "POST", json: agentUpload("fine") })).status).toBe(201);
    expect((await as(admin.key, "/metrics")).status).toBe(403);
    expect((await server.api("/metrics")).status).toBe(200);
    expect((await fetch(`${server.url}/health`)).status).toBe(200);

    // A key cannot make a stronger one, nor revoke itself.
    expect((await as(user.key, "/api/api-keys", { method: "POST", json: { scope: "admin" } })).status).toBe(403);
    const stronger = await as(admin.key, "/api/api-keys", { method: "POST", json: { scope: "admin", tenant: "other" } });
    expect(stronger.status).toBe(403);
    expect((await stronger.json()).error).toMatch(/own tenant/);
    expect((await as(admin.key, `/api/api-keys/${admin.id}`, { method: "DELETE" })).status).toBe(403);
  });

  it("keeps tenants' keys apart: an admin sees and revokes only its tenant's keys", async () => {
    const acmeAdmin = await makeKey({ scope: "admin", tenant: "acme" });
    const acmeUser = await makeKey({ scope: "sessions" }, acmeAdmin.key);
    expect(acmeUser.tenant).toBe("acme");
    const globex = await makeKey({ scope: "admin", tenant: "globex" });

    const acmeKeys = (await (await as(acmeAdmin.key, "/api/api-keys")).json()).keys as any[];
    expect(new Set(acmeKeys.map((k) => k.tenant))).toEqual(new Set(["acme"]));
    expect((await as(acmeAdmin.key, `/api/api-keys/${globex.id}`, { method: "DELETE" })).status).toBe(404);
    expect((await as(acmeAdmin.key, `/api/tenants/globex`)).status).toBe(404);
    expect((await as(acmeAdmin.key, `/api/tenants/acme`)).status).toBe(200);
    expect((await as(acmeAdmin.key, `/api/tenants`)).status).toBe(403);
    const tenants = (await (await server.api("/api/tenants")).json()).tenants.map((t: any) => t.id);
    expect(tenants).toEqual(expect.arrayContaining(["default", "acme", "globex"]));
  });

  it("refuses bad key requests with a clear error and makes nothing", async () => {
    const before = (await (await server.api("/api/api-keys")).json()).keys.length;
    for (const [body, message] of [
      [{ scope: "root" }, /scope/],
      [{ tenant: "Not A Tenant" }, /tenant/],
      [{ expiresAt: Date.now() - 1000 }, /expiresAt.*future/],
      [{ expiresAt: "yesterday" }, /expiresAt/],
      [{ expiresAt: 8_700_000_000_000_000 }, /expiresAt.*before the year 10000/],
      [{ limits: { requestsPerMinute: 0 } }, /requestsPerMinute/],
      [{ extra: 1 }, /Unknown field/],
    ] as const) {
      const r = await server.api("/api/api-keys", { method: "POST", json: body });
      expect([JSON.stringify(body), r.status]).toEqual([JSON.stringify(body), 400]);
      expect((await r.json()).error).toMatch(message);
    }
    expect((await (await server.api("/api/api-keys")).json()).keys.length).toBe(before);
  });

  it("a key stops working when it expires", async () => {
    const soon = await makeKey({ scope: "read", expiresAt: new Date(Date.now() + 1500).toISOString() });
    expect((await as(soon.key, "/api/agents")).status).toBe(200);
    let status = 200;
    for (let i = 0; i < 60 && status === 200; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      status = (await as(soon.key, "/api/agents")).status;
    }
    expect(status).toBe(401);
  });

  it("stores credentials sealed: never answered, logged or written in plaintext", async () => {
    const secret = "sk-ant-api03-a-very-secret-model-key-for-the-vault";
    const r = await server.api("/api/credentials", { method: "POST", json: { type: "anthropic", key: secret, label: "team key" } });
    expect(r.status).toBe(201);
    const { credential } = await r.json();
    expect(credential).toMatchObject({ type: "anthropic", label: "team key", active: true });
    expect(JSON.stringify(credential)).not.toContain(secret);
    const listed = await (await server.api("/api/credentials")).json();
    expect(listed.credentials.map((c: any) => c.id)).toContain(credential.id);
    expect(JSON.stringify(listed)).not.toContain(secret);
    // Not in the database file (SQLite) nor in the server's output.
    const db = await readFile(join(server.dataDir, "ash.db")).catch(() => Buffer.alloc(0));
    expect(db.includes(Buffer.from(secret))).toBe(false);
    expect(server.output()).not.toContain(secret);

    const custom = await server.api("/api/credentials", { method: "POST", json: { type: "custom", key: "ghp_token", variable: "GITHUB_TOKEN" } });
    expect(custom.status).toBe(201);
    for (const [body, status, message] of [
      [{ type: "bedrock", key: "x" }, 400, /bedrock credential's "key" is JSON/],
      [{ type: "custom", key: "x" }, 422, /needs "variable"/],
      [{ type: "anthropic", key: "x", variable: "X" }, 422, /never into the sandbox/],
      [{ type: "anthropic" }, 400, /key/],
      [{ type: "openai", key: "x" }, 400, /type/],
    ] as const) {
      const bad = await server.api("/api/credentials", { method: "POST", json: body });
      expect(bad.status).toBe(status);
      expect((await bad.json()).error).toMatch(message);
    }
    // Another tenant does not see them, and cannot delete them.
    const other = await makeKey({ scope: "admin", tenant: "vaulted" });
    expect((await (await as(other.key, "/api/credentials")).json()).credentials).toEqual([]);
    expect((await as(other.key, `/api/credentials/${credential.id}`, { method: "DELETE" })).status).toBe(404);
    expect((await server.api(`/api/credentials/${credential.id}`, { method: "DELETE" })).status).toBe(204);
    expect((await server.api(`/api/credentials/${credential.id}`, { method: "DELETE" })).status).toBe(404);
  });
});

describe("a session's stored credential", () => {
  it("is the key the gateway sends, never enters the sandbox, and survives a master key rotation", async () => {
    const model = await startFakeModel();
    const server = await startTestServer({ modelUrl: model.url, env: { ASH_CREDENTIAL_KEY: MASTER } });
    try {
      expect((await server.api("/api/agents", { method: "POST", json: agentUpload("keyed") })).status).toBe(201);
      const secret = "sk-ant-api03-the-teams-own-model-key-0123456789";
      const { credential } = await (await server.api("/api/credentials", { method: "POST", json: { type: "anthropic", key: secret } })).json();
      const custom = (await (await server.api("/api/credentials", { method: "POST", json: { type: "custom", key: "ghp_custom_value", variable: "GITHUB_TOKEN" } })).json()).credential;

      const turnWith = async (credentialId: string, content: string) => {
        const created = await server.api("/api/sessions", { method: "POST", json: { agent: "keyed", credentialId } });
        expect(created.status).toBe(201);
        const id = (await created.json()).session.id;
        return { id, events: await readEvents(await server.api(`/api/sessions/${id}/messages`, { method: "POST", json: { content } })) };
      };
      const before = model.requests.length;
      const { id, events } = await turnWith(credential.id, "#bash env");
      const sent = model.requests.slice(before).map((r: any) => r.headers["x-api-key"]);
      expect(sent.length).toBeGreaterThan(0);
      expect(new Set(sent)).toEqual(new Set([secret]));
      const env = String(events.find((e) => e.event === "tool_result")?.data.content ?? "");
      expect(env).toContain("ANTHROPIC_API_KEY=ash-gw-");
      expect(env).not.toContain(secret);
      const listed = await (await server.api("/api/credentials")).json();
      expect(listed.credentials.find((c: any) => c.id === credential.id).lastUsedAt).not.toBeNull();

      const withCustom = await turnWith(custom.id, "#bash echo token=$GITHUB_TOKEN");
      expect(String(withCustom.events.find((e) => e.event === "tool_result")?.data.content)).toContain("token=ghp_custom_value");
      expect((await server.api("/api/sessions", { method: "POST", json: { agent: "keyed", credentialId: "no-such" } })).status).toBe(404);

      // Rotation: the new key with the old one as previous seals every credential again; then the old key can go.
      const rotated = "a-brand-new-master-key-for-tests-9876543210";
      await server.stop();
      await server.restart({ ASH_CREDENTIAL_KEY: rotated, ASH_CREDENTIAL_KEY_PREVIOUS: MASTER });
      expect(server.output()).toMatch(/credentials: 2 sealed again under the new master key/);
      await server.stop();
      await server.restart({ ASH_CREDENTIAL_KEY: rotated });
      await server.api(`/api/sessions/${id}/pause`, { method: "POST" });
      const after = model.requests.length;
      await readEvents(await server.api(`/api/sessions/${id}/messages`, { method: "POST", json: { content: "after the rotation" } }));
      expect(new Set(model.requests.slice(after).map((r: any) => r.headers["x-api-key"]))).toEqual(new Set([secret]));
      // Under a master key that never sealed them, the credential cannot be opened: a clear error, no fallback key.
      await server.stop();
      await server.restart({ ASH_CREDENTIAL_KEY: "yet-another-master-key-that-never-sealed-it" });
      await server.api(`/api/sessions/${id}/pause`, { method: "POST" });
      const refused = await server.api(`/api/sessions/${id}/messages`, { method: "POST", json: { content: "no key" } });
      expect(refused.status).toBe(503);
      expect((await refused.json()).error).toMatch(/cannot be opened/);
    } finally {
      await server.dispose();
      await model.close();
    }
  });
});

describe("credentials without a master key", () => {
  it("answer a clear 503, and a short master key stops start-up", async () => {
    const server = await startTestServer();
    try {
      const r = await server.api("/api/credentials");
      expect(r.status).toBe(503);
      expect((await r.json()).error).toMatch(/ASH_CREDENTIAL_KEY/);
    } finally {
      await server.dispose();
    }
    for (const env of [{ ASH_CREDENTIAL_KEY: "short" }, { ASH_CREDENTIAL_KEY_PREVIOUS: MASTER }] as Array<Record<string, string>>) {
      const failed = await runServerExpectingFailure(env);
      expect(failed.code).not.toBe(0);
      expect(failed.output).toMatch(/ASH_CREDENTIAL_KEY/);
    }
  });
});
