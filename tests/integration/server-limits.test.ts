import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { agentUpload, readEvents, startTestServer, type TestServer } from "../helpers/server";
import { startFakeModel } from "../fake-model/fake-model.mjs";

const MEMORY_HOG = `python3 -c "a=[]\nwhile True: a.append(bytearray(10**7))"`;

describe("sandbox limits seen from a session", () => {
  let server: TestServer;
  let model: Awaited<ReturnType<typeof startFakeModel>>;
  let bystander: string;

  beforeAll(async () => {
    model = await startFakeModel();
    server = await startTestServer({
      modelUrl: model.url,
      env: { ASH_SANDBOX_MEMORY_MB: "400", ASH_SANDBOX_MAX_PROCESSES: "64", ASH_SANDBOX_DISK_MB: "60" },
    });
    await server.api("/api/agents", { method: "POST", json: agentUpload("limited") });
    bystander = await newSession();
  });
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
  });

  async function newSession(): Promise<string> {
    return (await (await server.api("/api/sessions", { method: "POST", json: { agent: "limited" } })).json()).session.id;
  }
  const turn = async (id: string, content: string) => readEvents(await server.api(`/api/sessions/${id}/messages`, { method: "POST", json: { content } }));
  const errorCode = (events: Array<{ event: string; data: any }>) => events.find((e) => e.event === "error")?.data.code;
  const stillFine = async () => {
    expect((await fetch(`${server.url}/health`)).status).toBe(200);
    const events = await turn(bystander, "are you fine?");
    expect(events.map((e) => e.event)).toContain("turn_complete");
  };

  it("stops a memory hog run by the agent and reports sandbox_oom", async () => {
    const id = await newSession();
    const events = await turn(id, `#bash ${MEMORY_HOG}`);
    expect(errorCode(events)).toBe("sandbox_oom");
    expect(events.at(-1)?.event).toBe("done");
    await stillFine();
    expect((await turn(id, "still here?")).map((e) => e.event)).toContain("turn_complete");
  });

  it("stops a fork bomb and reports sandbox_pids; the session can be resumed", async () => {
    const id = await newSession();
    await turn(id, "remember the word walnut");
    const events = await turn(id, "#bash for i in $(seq 1 300); do sleep 30 & done; wait");
    expect(errorCode(events)).toBe("sandbox_pids");
    expect(events.at(-1)?.event).toBe("done");
    await stillFine();
    const after = await turn(id, "what was the word?");
    expect(after.map((e) => e.event)).toContain("turn_complete");
    expect(model.userTexts()).toContain("remember the word walnut");
  });

  it("stops a disk filler whose every file is under the limit, one hiding behind mode 000, and reports sandbox_disk", async () => {
    const id = await newSession();
    // No single file trips the file size limit: only the disk walk can see the total.
    const events = await turn(id, "#bash mkdir hide; for i in $(seq 1 80); do chmod 700 hide; head -c 1000000 /dev/zero > hide/f$i; chmod 000 hide; done; sleep 5; echo wrote-all");
    expect(errorCode(events)).toBe("sandbox_disk");
    expect(events.filter((e) => e.event === "tool_result").map((e) => JSON.stringify(e.data.content)).join(" ")).not.toContain("wrote-all");
    await stillFine();
  });

  it("stops a disk filler and reports sandbox_disk", async () => {
    const id = await newSession();
    const events = await turn(id, "#bash head -c 200000000 /dev/zero > filler.bin; sleep 5; ls -la");
    expect(errorCode(events)).toBe("sandbox_disk");
    await stillFine();
  });

  it("stops a workspace over the disk limit and never saves it, says what to do, and lets the next turn clean up", async () => {
    const id = await newSession();
    expect((await turn(id, "#bash echo keep > keep.txt")).map((e) => e.event)).toContain("turn_complete");
    // The watcher stops the writer, but what it wrote stays: the workspace is now over the limit.
    const over = await turn(id, "#bash head -c 100000000 /dev/zero > filler.bin; sleep 3; ls -la");
    const messages = over.filter((e) => e.event === "error").map((e) => String(e.data.error));
    expect(over.filter((e) => e.event === "error").every((e) => e.data.code === "sandbox_disk")).toBe(true);
    // The disk walk stops the agent once the workspace passes the limit; a save that finds it over says so too.
    expect(messages.join(" ")).toMatch(/(exceeded its disk limit|MiB of files, more than the sandbox's disk limit of 60\.0 MiB; it was not saved and the last save is kept)\. Delete files in the workspace/);
    expect(over.at(-1)?.event).toBe("done");
    await stillFine();
    // The next turn runs, and the agent can clean up after itself.
    const cleanup = await turn(id, "#bash rm filler.bin && ls");
    expect(cleanup.map((e) => e.event)).toContain("turn_complete");
    expect(cleanup.filter((e) => e.event === "error")).toEqual([]);
    // Saved again: the paused session's workspace is the cleaned one.
    expect((await server.api(`/api/sessions/${id}/pause`, { method: "POST" })).status).toBe(200);
    const files = (await (await server.api(`/api/sessions/${id}/files`)).json()).files.map((f: { path: string }) => f.path);
    expect(files).toContain("keep.txt");
    expect(files).not.toContain("filler.bin");
  });

  it("reports the limit on exec too", async () => {
    const id = await newSession();
    const r = await (await server.api(`/api/sessions/${id}/exec`, { method: "POST", json: { command: MEMORY_HOG } })).json();
    expect(r.exitCode).not.toBe(0);
    expect(r.limit).toBe("sandbox_oom");
    await stillFine();
  });
});
