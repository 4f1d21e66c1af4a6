import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { agentUpload, readEvents, startTestServer, type TestServer } from "../helpers/server";
import { startFakeModel } from "../fake-model/fake-model.mjs";
import { AshClient } from "../../src/client";

// Attachments as the original API shapes them: upload base64 to a session,
// list, download the bytes (never rendered in place), delete; a live session
// finds the file in its workspace, written by its own user.
describe("attachments", () => {
  let server: TestServer;
  let model: Awaited<ReturnType<typeof startFakeModel>>;
  let client: AshClient;

  beforeAll(async () => {
    model = await startFakeModel();
    server = await startTestServer({ modelUrl: model.url, env: { ASH_MAX_ATTACHMENT_BYTES: "4096" } });
    client = new AshClient({ url: server.url, apiKey: server.apiKey });
    expect((await server.api("/api/agents", { method: "POST", json: agentUpload("reader") })).status).toBe(201);
  });
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
  });

  it("stores, lists, serves and deletes an attachment, and a live session reads it from attachments/", async () => {
    const session = await client.createSession({ agent: "reader" });
    const bytes = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0, 1, 2, 255]);
    const r = await server.api(`/api/sessions/${session.id}/attachments`, {
      method: "POST",
      json: { filename: "../../etc/report.bin", mimeType: "application/octet-stream", content: Buffer.from(bytes).toString("base64") },
    });
    expect(r.status).toBe(201);
    const { attachment } = await r.json();
    expect(attachment).toMatchObject({ sessionId: session.id, filename: "report.bin", size: 8, path: "attachments/report.bin", messageId: null });

    const text = await client.uploadAttachment(session.id, { filename: "notes.txt", content: "remember the heron", mimeType: "text/plain" });
    expect((await client.listAttachments(session.id)).map((a) => a.filename)).toEqual(["report.bin", "notes.txt"]);

    const download = await server.api(`/api/attachments/${attachment.id}`);
    expect(download.status).toBe(200);
    expect(download.headers.get("x-content-type-options")).toBe("nosniff");
    expect(download.headers.get("content-disposition")).toBe("attachment; filename*=UTF-8''report.bin");
    expect(new Uint8Array(await download.arrayBuffer())).toEqual(bytes);
    expect(new TextDecoder().decode(await client.downloadAttachment(text.id))).toBe("remember the heron");

    const events = await readEvents(await server.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "#bash cat attachments/notes.txt; stat -c %U attachments/notes.txt" } }));
    const out = String(events.find((e) => e.event === "tool_result")?.data.content);
    expect(out).toContain("remember the heron");
    expect(out).not.toContain("root");

    expect((await server.api(`/api/attachments/${attachment.id}`, { method: "DELETE" })).status).toBe(204);
    expect((await server.api(`/api/attachments/${attachment.id}`)).status).toBe(404);
    expect((await client.listAttachments(session.id)).map((a) => a.filename)).toEqual(["notes.txt"]);
  });

  it("refuses bad attachments with a clear error and stores nothing", async () => {
    const session = await client.createSession({ agent: "reader" });
    for (const [json, status, message] of [
      [{ filename: "big.bin", content: Buffer.alloc(5000).toString("base64") }, 413, /larger than 4096 bytes/],
      [{ filename: "x", content: "not base64!" }, 400, /base64/],
      [{ filename: "..", content: "aGk=" }, 400, /no usable name/],
      [{ filename: "x", content: "" }, 400, /content/],
      [{ filename: "x", content: "aGk=", mimeType: "not a type" }, 400, /mimeType/],
      [{ content: "aGk=" }, 400, /filename/],
      [{ filename: "x", content: "aGk=", extra: 1 }, 400, /Unknown field/],
    ] as const) {
      const r = await server.api(`/api/sessions/${session.id}/attachments`, { method: "POST", json });
      expect([JSON.stringify(json).slice(0, 60), r.status]).toEqual([JSON.stringify(json).slice(0, 60), status]);
      expect((await r.json()).error).toMatch(message);
    }
    expect(await client.listAttachments(session.id)).toEqual([]);
    expect((await server.api(`/api/sessions/00000000-0000-4000-8000-000000000000/attachments`)).status).toBe(404);
    expect((await server.api(`/api/attachments/no-such`)).status).toBe(404);
  });

  it("another tenant neither lists nor downloads them", async () => {
    const session = await client.createSession({ agent: "reader" });
    const mine = await client.uploadAttachment(session.id, { filename: "private.txt", content: "mine" });
    const other = (await (await server.api("/api/api-keys", { method: "POST", json: { tenant: "other", scope: "admin" } })).json()).key as string;
    const as = (path: string, method = "GET") => fetch(`${server.url}${path}`, { method, headers: { authorization: `Bearer ${other}` } });
    expect((await as(`/api/sessions/${session.id}/attachments`)).status).toBe(404);
    expect((await as(`/api/attachments/${mine.id}`)).status).toBe(404);
    expect((await as(`/api/attachments/${mine.id}`, "DELETE")).status).toBe(404);
    expect(new TextDecoder().decode(await client.downloadAttachment(mine.id))).toBe("mine");
  });
});
