import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { agentUpload, parseFrames, startTestServer, type TestServer } from "../helpers/server";
import { startFakeModel, type FakeModel } from "../fake-model/fake-model.mjs";

// SIGTERM (a rolling update, a scale-down): the server stops being ready at
// once, refuses to start anything new with a 503 a client can retry elsewhere,
// still answers reads, lets the running turn finish, and exits 0.

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("a server draining on SIGTERM", () => {
  let model: FakeModel;
  let server: TestServer;

  beforeAll(async () => {
    model = await startFakeModel();
    server = await startTestServer({ modelUrl: model.url });
    expect((await server.api("/api/agents", { method: "POST", json: agentUpload("drained") })).status).toBe(201);
  });
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
  });

  it("answers live and ready while it serves", async () => {
    const live = await fetch(`${server.url}/health/live`);
    expect(live.status).toBe(200);
    expect(await live.json()).toEqual({ status: "live" });
    const ready = await fetch(`${server.url}/health/ready`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ status: "ready" });
    expect(await (await fetch(`${server.url}/health`)).json()).toMatchObject({ status: "ok", ready: true });
  });

  it("stops being ready, starts nothing new, serves reads, lets the running turn finish, and exits 0", async () => {
    const { session } = await (await server.api("/api/sessions", { method: "POST", json: { agent: "drained" } })).json();
    const post = await server.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "#slow 4000" } });
    const reader = post.body!.getReader();
    await reader.read();
    const rest = (async () => {
      let text = "";
      for (let c = await reader.read(); !c.done; c = await reader.read()) text += new TextDecoder().decode(c.value);
      return text;
    })();

    process.kill(server.pid(), "SIGTERM");
    let ready: Response | undefined;
    for (let round = 0; round < 200; round++) {
      ready = await fetch(`${server.url}/health/ready`);
      if (ready.status === 503) break;
      await sleep(20);
    }
    expect(ready!.status).toBe(503);
    expect(ready!.headers.get("retry-after")).toBe("1");
    expect(await ready!.json()).toEqual({ status: "not ready", reason: "draining" });
    expect((await fetch(`${server.url}/health`)).status).toBe(503);
    expect((await fetch(`${server.url}/health/live`)).status).toBe(200);

    // Nothing new starts here; the answer says to send it again.
    const refused = await server.api("/api/sessions", { method: "POST", json: { agent: "drained" } });
    expect(refused.status).toBe(503);
    expect(refused.headers.get("retry-after")).toBe("1");
    expect((await refused.json()).error).toMatch(/shutting down.*send the request again/);
    const sessions = (await (await server.api("/api/sessions")).json()).sessions;
    expect(sessions).toHaveLength(1);
    // Reads are still answered.
    expect((await server.api(`/api/sessions/${session.id}`)).status).toBe(200);

    const tail = parseFrames(await rest);
    expect(tail.some((e) => e.event === "error")).toBe(false);
    expect(tail.find((e) => e.event === "turn_complete")).toBeDefined();
    expect(tail.at(-1)?.event).toBe("done");
    expect(await server.stop()).toBe(0);

    await server.restart();
    const history = (await (await server.api(`/api/sessions/${session.id}/messages`)).json()).messages;
    expect(history.map((m: any) => m.kind)).toEqual(["user", "assistant", "result"]);
  });

  it("lets no sandbox that was still coming up at SIGTERM start its agent: the start is refused with a retry, and the session comes back whole", async () => {
    const { session } = await (await server.api("/api/sessions", { method: "POST", json: { agent: "drained" } })).json();
    // Enough files that restoring them takes a while: SIGTERM lands in the middle of it.
    const made = await (await server.api(`/api/sessions/${session.id}/exec`, { method: "POST", json: { command: "mkdir many && cd many && seq 1 20000 | xargs touch && ls | wc -l" } })).json();
    expect(made).toMatchObject({ exitCode: 0, stdout: "20000\n" });
    expect((await server.api(`/api/sessions/${session.id}/pause`, { method: "POST" })).status).toBe(200);

    const resumed = server.api(`/api/sessions/${session.id}/resume`, { method: "POST" });
    const sandboxes = join(server.dataDir, "sandboxes");
    const restoring = () => existsSync(sandboxes) && readdirSync(sandboxes).some((id) => existsSync(join(sandboxes, id, "workspace", "many")));
    for (let round = 0; round < 2000 && !restoring(); round++) await sleep(5);
    expect(restoring()).toBe(true);
    process.kill(server.pid(), "SIGTERM");

    // Before the fix the start went on after the shutdown had put the live sessions to sleep and given
    // their leases up: the agent process ran, unleased, until the server exited.
    const answer = await resumed;
    expect(answer.status).toBe(503);
    expect(answer.headers.get("retry-after")).toBe("1");
    expect((await answer.json()).error).toMatch(/shutting down.*send the request again/);
    expect(await server.stop()).toBe(0);

    await server.restart();
    expect((await server.api(`/api/sessions/${session.id}/resume`, { method: "POST" })).status).toBe(200);
    const counted = await (await server.api(`/api/sessions/${session.id}/exec`, { method: "POST", json: { command: "ls many | wc -l" } })).json();
    expect(counted).toMatchObject({ exitCode: 0, stdout: "20000\n" });
  });

  it("ends open event streams cleanly after their last frame instead of cutting them", async () => {
    const { session } = await (await server.api("/api/sessions", { method: "POST", json: { agent: "drained" } })).json();
    const first = parseFrames(await (await server.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "hello" } })).text());
    expect(first.at(-1)?.event).toBe("done");
    // Streams that never end by themselves: /api's open stream and the Managed Agents one, both idle.
    const open = await server.api(`/api/sessions/${session.id}/stream`);
    const managed = await server.api(`/v1/sessions/${session.id}/events/stream`);
    expect([open.status, managed.status]).toEqual([200, 200]);

    process.kill(server.pid(), "SIGTERM");
    // Both end after their last whole frame (a cut stream fails the read with "terminated").
    const [openText, managedText] = await Promise.all([open.text(), managed.text()]);
    expect(parseFrames(openText).at(-1)?.event).toBe("done");
    expect(openText.endsWith("\n\n")).toBe(true);
    expect(managedText.endsWith("\n\n")).toBe(true);
    // The managed stream answers at once: before, its headers waited for the first event or the 15 s ping.
    expect(managedText.startsWith(": open\n\n")).toBe(true);
    expect(await server.stop()).toBe(0);
    await server.restart();
  });
});
