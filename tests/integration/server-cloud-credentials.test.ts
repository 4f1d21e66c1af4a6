import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateKeyPairSync } from "node:crypto";
import { agentUpload, readEvents, startTestServer, type ApiResponse, type TestServer } from "../helpers/server";
import { startFakeModel, type FakeModel } from "../fake-model/fake-model.mjs";
import { startFakeBedrock, startFakeVertex, type FakeBedrock, type FakeVertex } from "../helpers/fake-clouds";

// Bedrock and Vertex AI credentials: the gateway translates the CLI's Messages
// API calls, signs them (SigV4) or gets an access token (a service account's
// JWT) itself, and turns Bedrock's event stream back into server-sent events.
// The cloud keys never enter the sandbox.

const MASTER = "a-master-key-for-tests-0123456789abcdef";
const AWS = { accessKeyId: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY" };
const BEDROCK_API_KEY = "ABSKQmVkcm9ja0FQSUtleS1leGFtcGxlLWtleQ==";

describe("bedrock and vertex credentials", () => {
  let model: FakeModel;
  let bedrock: FakeBedrock;
  let vertex: FakeVertex;
  let server: TestServer;
  const { publicKey, privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048, publicKeyEncoding: { type: "spki", format: "pem" }, privateKeyEncoding: { type: "pkcs8", format: "pem" } });
  const serviceAccount = { type: "service_account", project_id: "ash-test-project", client_email: "ash@ash-test-project.iam.gserviceaccount.com", private_key: privateKey, token_uri: "https://oauth2.googleapis.com/token" };

  beforeAll(async () => {
    model = await startFakeModel();
    bedrock = await startFakeBedrock({ modelUrl: model.url, ...AWS, apiKey: BEDROCK_API_KEY });
    vertex = await startFakeVertex({ modelUrl: model.url, clientEmail: serviceAccount.client_email, publicKey, projectId: "ash-test-project", region: "us-east5" });
    server = await startTestServer({ modelUrl: model.url, env: { ASH_CREDENTIAL_KEY: MASTER } });
    expect((await server.api("/api/agents", { method: "POST", json: agentUpload("clouded") })).status).toBe(201);
  });
  afterAll(async () => {
    await server?.dispose();
    await bedrock?.close();
    await vertex?.close();
    await model?.close();
  });

  const store = async (type: string, key: unknown) => {
    const r = await server.api("/api/credentials", { method: "POST", json: { type, key: JSON.stringify(key) } });
    expect(r.status, await r.clone().text()).toBe(201);
    return (await r.json()).credential.id as string;
  };
  const turnWith = async (credentialId: string, ...contents: string[]) => {
    const created = await server.api("/api/sessions", { method: "POST", json: { agent: "clouded", credentialId } });
    expect(created.status).toBe(201);
    const id = (await created.json()).session.id as string;
    const turns = [];
    for (const content of contents) turns.push(await readEvents(await server.api(`/api/sessions/${id}/messages`, { method: "POST", json: { content } })));
    return { id, turns };
  };
  const usageOf = async (sessionId: string) => (await (await server.api(`/api/usage/stats?session=${sessionId}`)).json()).totals;

  it("runs turns on Bedrock: signed calls, its model ids, its event stream back as SSE, usage counted", async () => {
    const id = await store("bedrock", { region: "us-east-1", ...AWS, endpoint: bedrock.url });
    const before = model.requests.length;
    const { id: sessionId, turns } = await turnWith(id, "#bash env", "hello bedrock");
    expect(turns[0]!.at(-1)?.event).toBe("done");
    const env = String(turns[0]!.find((e) => e.event === "tool_result")?.data.content ?? "");
    expect(env).toContain("ANTHROPIC_API_KEY=ash-gw-");
    for (const secret of [AWS.accessKeyId, AWS.secretAccessKey, bedrock.url]) expect(env).not.toContain(secret);
    const complete = turns[1]!.find((e) => e.event === "turn_complete");
    expect(complete?.data.result).toContain("Echo: hello bedrock");
    expect(turns[1]!.some((e) => e.event === "error")).toBe(false);

    // Every model call went through Bedrock, with its model ids, and reached the model.
    expect(bedrock.calls.length).toBeGreaterThan(0);
    expect(model.requests.length - before).toBe(bedrock.calls.length);
    for (const call of bedrock.calls) {
      expect(call.model).toMatch(/^anthropic\.claude-[a-z0-9-]+-v1:0$/);
      expect(call.body.anthropic_version).toBe("bedrock-2023-05-31");
      expect(call.headers["x-api-key"]).toBeUndefined();
    }
    expect((await usageOf(sessionId)).outputTokens).toBeGreaterThan(0);
  });

  it("uses a Bedrock API key as a bearer token, maps models as told, and passes Bedrock's errors on in the Messages API's shape", async () => {
    const mapped = await store("bedrock", { region: "eu-west-1", apiKey: BEDROCK_API_KEY, endpoint: bedrock.url, inferenceProfile: "eu" });
    const from = bedrock.calls.length;
    const { turns } = await turnWith(mapped, "profile please");
    expect(turns[0]!.find((e) => e.event === "turn_complete")?.data.result).toContain("Echo: profile please");
    expect(bedrock.calls.slice(from).every((c) => c.model.startsWith("eu.anthropic.claude-"))).toBe(true);
    expect(bedrock.calls.slice(from).every((c) => c.headers.authorization === `Bearer ${BEDROCK_API_KEY}`)).toBe(true);
    // A map names a model outright (here the one the turn used, as the CLI calls it).
    const cliModel = /^eu\.anthropic\.(.+)-v1:0$/.exec(bedrock.calls.at(-1)!.model)![1]!;
    const named = await store("bedrock", { region: "us-east-1", ...AWS, endpoint: bedrock.url, models: { [cliModel]: "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/ash" } });
    const next = bedrock.calls.length;
    await turnWith(named, "by the map");
    const used = bedrock.calls.slice(next).map((c) => c.model);
    expect(used).toContain("arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/ash");
    expect(used).not.toContain(`anthropic.${cliModel}-v1:0`);

    // Throttled past the CLI's retries: the turn ends with the cloud's own words, and the session goes on.
    bedrock.failNext(20, 429, { message: "Too many requests, please wait before trying again." });
    const throttled = await turnWith(mapped, "too fast");
    const error = throttled.turns[0]!.find((e) => e.event === "error");
    expect(error?.data.code).toBe("model_error");
    expect(JSON.stringify(error?.data)).toMatch(/Too many requests/);
    expect(throttled.turns[0]!.at(-1)?.event).toBe("done");
    bedrock.failNext(0, 200, {});

    // A wrong secret: the signature does not verify, and the turn says so.
    const wrong = await store("bedrock", { region: "us-east-1", accessKeyId: AWS.accessKeyId, secretAccessKey: "not-the-right-secret-key-at-all", endpoint: bedrock.url });
    const refused = await turnWith(wrong, "who am I");
    expect(JSON.stringify(refused.turns[0]!.find((e) => e.event === "error")?.data)).toMatch(/signature/);
  });

  it("runs turns on Vertex AI with a service account: one token for many calls, its model ids", async () => {
    const id = await store("vertex", { region: "us-east5", serviceAccount, endpoint: vertex.url, tokenEndpoint: vertex.tokenUrl });
    const { turns } = await turnWith(id, "#bash env", "hello vertex");
    const env = String(turns[0]!.find((e) => e.event === "tool_result")?.data.content ?? "");
    expect(env).not.toContain("PRIVATE KEY");
    expect(env).not.toContain(serviceAccount.client_email);
    expect(turns[1]!.find((e) => e.event === "turn_complete")?.data.result).toContain("Echo: hello vertex");
    expect(vertex.calls.length).toBeGreaterThan(1);
    for (const call of vertex.calls) {
      expect(call.model).toMatch(/^claude-[a-z0-9-]+@\d{8}$|^claude-[a-z0-9-]+$/);
      expect(call.path).toMatch(/:streamRawPredict$|:rawPredict$/);
    }
    expect(vertex.tokensIssued).toBe(1);

    // A service account the token endpoint does not accept: a clear authentication error, no call made.
    const { privateKey: otherKey } = generateKeyPairSync("rsa", { modulusLength: 2048, privateKeyEncoding: { type: "pkcs8", format: "pem" }, publicKeyEncoding: { type: "spki", format: "pem" } });
    const stranger = await store("vertex", { region: "us-east5", serviceAccount: { ...serviceAccount, private_key: otherKey }, endpoint: vertex.url, tokenEndpoint: vertex.tokenUrl });
    const calls = vertex.calls.length;
    const refused = await turnWith(stranger, "let me in");
    expect(JSON.stringify(refused.turns[0]!.find((e) => e.event === "error")?.data)).toMatch(/access token|Invalid JWT/);
    expect(vertex.calls.length).toBe(calls);
  });

  it("refuses malformed cloud credentials with a clear 400, endpoints from tenants with 403, and stores nothing", async () => {
    const listed = async () => (await (await server.api("/api/credentials")).json()).credentials.length;
    const count = await listed();
    const cases: Array<[unknown, number, RegExp]> = [
      [{ type: "bedrock", key: "not json" }, 400, /is JSON/],
      [{ type: "bedrock", key: JSON.stringify({ ...AWS }) }, 400, /"region"/],
      [{ type: "bedrock", key: JSON.stringify({ region: "us-east-1" }) }, 400, /apiKey.*accessKeyId/],
      [{ type: "bedrock", key: JSON.stringify({ region: "us-east-1", accessKeyId: AWS.accessKeyId }) }, 400, /apiKey|secretAccessKey/],
      [{ type: "bedrock", key: JSON.stringify({ region: "us-east-1", ...AWS, colour: "red" }) }, 400, /colour/],
      [{ type: "bedrock", key: JSON.stringify({ region: "us-east-1", ...AWS, endpoint: "file:///etc/passwd" }) }, 400, /"endpoint"/],
      [{ type: "vertex", key: JSON.stringify({ region: "us-east5" }) }, 400, /"serviceAccount"/],
      [{ type: "vertex", key: JSON.stringify({ region: "us-east5", serviceAccount: { ...serviceAccount, project_id: undefined } }) }, 400, /projectId/],
      [{ type: "vertex", key: JSON.stringify({ region: "moon", serviceAccount }) }, 400, /"region"/],
      [{ type: "bedrock", key: JSON.stringify({ region: "us-east-1", ...AWS }), variable: "X" }, 422, /never into the sandbox/],
    ];
    for (const [body, status, message] of cases) {
      const r = await server.api("/api/credentials", { method: "POST", json: body });
      expect(r.status, JSON.stringify(body)).toBe(status);
      expect((await r.json()).error, JSON.stringify(body)).toMatch(message);
    }
    const tenant = await (await server.api("/api/api-keys", { method: "POST", json: { tenant: "cloudy", scope: "admin" } })).json();
    const as = (path: string, json: unknown): Promise<ApiResponse> =>
      fetch(`${server.url}${path}`, { method: "POST", headers: { authorization: `Bearer ${tenant.key}`, "content-type": "application/json" }, body: JSON.stringify(json) });
    const pointed = await as("/api/credentials", { type: "bedrock", key: JSON.stringify({ region: "us-east-1", ...AWS, endpoint: "http://127.0.0.1:1" }) });
    expect(pointed.status).toBe(403);
    expect((await pointed.json()).error).toMatch(/Only the server's own key/);
    // Without an endpoint of its own, a tenant may store one.
    expect((await as("/api/credentials", { type: "bedrock", key: JSON.stringify({ region: "us-east-1", ...AWS }) })).status).toBe(201);
    expect(await listed()).toBe(count);
  });
});
