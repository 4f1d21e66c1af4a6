// Values a request carries that a PostgreSQL column refuses (a NUL byte in text, a number past
// an INTEGER or BIGINT, a fraction where a whole number goes) are the client's mistake: never a
// 500 and never a change, on every database (SQLite takes some of them and finds nothing).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { backends } from "../helpers/backends";
import { startFakeModel } from "../fake-model/fake-model.mjs";
import { agentUpload, startTestServer, type TestServer } from "../helpers/server";

describe.each(backends)("values the database refuses, on $name", (backend) => {
  let server: TestServer;
  let model: Awaited<ReturnType<typeof startFakeModel>>;
  let cleanup: () => Promise<void>;
  let sessionId: string;

  beforeAll(async () => {
    const prepared = await backend.prepare();
    cleanup = prepared.cleanup;
    model = await startFakeModel();
    server = await startTestServer({ modelUrl: model.url, env: { ...prepared.env, ASH_WARM_DEMAND_MS: "0", ASH_CREDENTIAL_KEY: "a-master-key-for-sealed-credentials-0123456789" } });
    expect((await server.api("/api/agents", { method: "POST", json: agentUpload("vals") })).status).toBe(201);
    sessionId = (await (await server.api("/api/sessions", { method: "POST", json: { agent: "vals" } })).json()).session.id;
  });
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
    await cleanup?.();
  });

  const cursor = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");

  it.each([
    ["a NUL byte in a query filter", "GET", "/api/sessions?agent=%00", undefined],
    ["a NUL byte in a credential id", "POST", "/api/sessions", { agent: "vals", credentialId: "\u0000" }],
    ["a fraction in a list cursor", "GET", `/api/sessions?cursor=${cursor([1.5, "x"])}`, undefined],
    ["a checkpoint past a 32-bit column", "POST", "/fork", { checkpoint: 3_000_000_000 }],
  ] as const)("answers %s without a 500, and changes nothing", async (_what, method, path, json) => {
    const sessionsBefore = (await (await server.api("/api/sessions")).json()).sessions.length;
    const r = await server.api(path === "/fork" ? `/api/sessions/${sessionId}/fork` : path, { method, ...(json === undefined ? {} : { json }) });
    const body = await r.json();
    expect(r.status, JSON.stringify(body)).toBeLessThan(500);
    if (r.status >= 400) expect(body.error).toMatch(/\w/);
    expect((await (await server.api("/api/sessions")).json()).sessions.length).toBe(sessionsBefore);
  });
});
