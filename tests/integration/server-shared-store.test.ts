import { afterAll, beforeAll, expect, it } from "vitest";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
// @ts-expect-error s3rver ships no type declarations
import S3rver from "s3rver";
import { agentUpload, readEvents, startTestServer, type TestServer } from "../helpers/server";
import { createPostgresDatabase, describeWithPostgres, type TestDatabase } from "../helpers/postgres";
import { startFakeModel } from "../fake-model/fake-model.mjs";

// Two servers sharing one PostgreSQL database and one S3-compatible snapshot
// bucket: a session paused on one continues on the other, files and memory included.
describeWithPostgres("sessions moving between servers", () => {
  let database: TestDatabase;
  let s3: any;
  let bucketDir: string;
  let a: TestServer;
  let b: TestServer;
  let model: Awaited<ReturnType<typeof startFakeModel>>;

  beforeAll(async () => {
    model = await startFakeModel();
    database = await createPostgresDatabase();
    bucketDir = mkdtempSync(join(tmpdir(), "ash-s3-"));
    s3 = new S3rver({ port: 0, address: "127.0.0.1", directory: bucketDir, silent: true, configureBuckets: [{ name: "ash" }] });
    const { port } = await s3.run();
    const env = {
      ASH_DATABASE_URL: database.url,
      ASH_SNAPSHOT_STORE: "s3://ash/snapshots",
      ASH_S3_ENDPOINT: `http://127.0.0.1:${port}`,
      AWS_ACCESS_KEY_ID: "S3RVER",
      AWS_SECRET_ACCESS_KEY: "S3RVER",
    };
    a = await startTestServer({ modelUrl: model.url, env });
    b = await startTestServer({ modelUrl: model.url, env });
  }, 180_000);
  afterAll(async () => {
    await a?.dispose();
    await b?.dispose();
    await s3?.close();
    await model?.close();
    await database?.drop();
    if (bucketDir) rmSync(bucketDir, { recursive: true, force: true });
  });

  it("continues on the second server a session paused on the first", async () => {
    await a.api("/api/agents", { method: "POST", json: agentUpload("roaming") });
    const { session } = await (await a.api("/api/sessions", { method: "POST", json: { agent: "roaming" } })).json();
    await readEvents(await a.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "remember the word heron" } }));
    await readEvents(await a.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "#bash echo from-a > a.txt" } }));
    expect((await (await a.api(`/api/sessions/${session.id}/pause`, { method: "POST" })).json()).session.status).toBe("paused");
    // The snapshot is in the bucket, not in either server's data folder.
    // (s3rver keeps each object as <key>._S3rver_object on its disk.)
    expect(existsSync(join(bucketDir, "ash", "snapshots", session.id, "metadata.json._S3rver_object"))).toBe(true);
    const blobs = join(bucketDir, "ash", "snapshots", session.id, "blobs");
    expect(readdirSync(blobs).some((name) => name.endsWith("._S3rver_object"))).toBe(true);
    expect(existsSync(join(a.dataDir, "sessions", session.id))).toBe(false);

    const events = await readEvents(await b.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "#bash cat a.txt" } }));
    expect(events.find((e) => e.event === "tool_result")?.data.content).toContain("from-a");
    expect(model.userTexts()).toContain("remember the word heron");
    // Its history is one history, whichever server wrote it.
    const stored = (await (await a.api(`/api/sessions/${session.id}/events?limit=1000`)).json()).events;
    expect(stored.map((e: any) => e.sequence)).toEqual(stored.map((_: unknown, i: number) => i + 1));
  });
});
