import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { agentUpload, readEvents, startTestServer, type TestServer } from "../helpers/server";
import { startFakeModel } from "../fake-model/fake-model.mjs";
import { modelFailure } from "../../src/sessions/session-manager";

describe("a server started without a model key", () => {
  let server: TestServer;
  let model: Awaited<ReturnType<typeof startFakeModel>>;

  beforeAll(async () => {
    model = await startFakeModel();
    server = await startTestServer({ modelUrl: model.url, env: { ANTHROPIC_API_KEY: "" } });
    expect((await server.api("/api/agents", { method: "POST", json: agentUpload("keyless") })).status).toBe(201);
  });
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
  });

  it("ends the turn with an error that names ANTHROPIC_API_KEY and how to pass it, not the CLI's /login hint alone", async () => {
    const created = await server.api("/api/sessions", { method: "POST", json: { agent: "keyless" } });
    expect(created.status).toBe(201);
    const { session } = await created.json();
    const events = await readEvents(await server.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "hello" } }));
    const error = events.find((e) => e.event === "error");
    expect(error?.data.code).toBe("model_error");
    expect(error?.data.error).toMatch(/ANTHROPIC_API_KEY/);
    expect(error?.data.error).toMatch(/ash start/);
    expect(events.at(-1)?.event).toBe("done");
    // The model was never asked: the key was missing before any call.
    expect(model.requests.length).toBe(0);
  });
});

describe("modelFailure", () => {
  it("names the server's key for the CLI's login and key errors, and keeps other failures as they are", () => {
    expect(modelFailure("Not logged in · Please run /login")).toMatch(/no valid ANTHROPIC_API_KEY/);
    expect(modelFailure('401 {"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}')).toMatch(/ANTHROPIC_API_KEY/);
    expect(modelFailure("overloaded")).toBe("The model call failed: overloaded");
  });
});
