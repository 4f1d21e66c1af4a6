// A server removes the cgroup folders it made when it stops (SIGTERM), so
// stopped servers leave nothing under /sys/fs/cgroup/<controller>/ash/.
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cgroup1Mounts } from "../../src/sandbox/cgroup1";
import { describeSandboxHost } from "../../src/sandbox";
import { agentUpload, readEvents, startTestServer, type TestServer } from "../helpers/server";
import { cgroup1Problem, skipUnlessReady } from "../helpers/requirements";
import { startFakeModel } from "../fake-model/fake-model.mjs";

const host = await describeSandboxHost({ allowUnisolated: true });
const skip = skipUnlessReady("cgroup folders at shutdown", cgroup1Problem(host));

describe.skipIf(skip)("a stopped server's cgroup folders", () => {
  let server: TestServer;
  let model: Awaited<ReturnType<typeof startFakeModel>>;

  beforeAll(async () => {
    model = await startFakeModel();
    server = await startTestServer({ modelUrl: model.url });
    expect((await server.api("/api/agents", { method: "POST", json: agentUpload("grouped") })).status).toBe(201);
  });
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
  });

  it("are all removed after SIGTERM", async () => {
    const { session } = await (await server.api("/api/sessions", { method: "POST", json: { agent: "grouped" } })).json();
    const events = await readEvents(await server.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "hello" } }));
    expect(events.map((e) => e.event)).toContain("turn_complete");
    const serverId = (await readFile(join(server.dataDir, "server-id"), "utf8")).trim();
    const folders = Object.values(cgroup1Mounts())
      .filter((mount): mount is string => Boolean(mount))
      .map((mount) => join(mount, "ash", serverId));
    expect(folders.some((folder) => existsSync(folder))).toBe(true);
    expect(await server.stop()).toBe(0);
    expect(folders.filter((folder) => existsSync(folder))).toEqual([]);
  });
});
