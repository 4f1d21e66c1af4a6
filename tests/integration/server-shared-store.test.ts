import { afterAll, beforeAll, expect, it } from "vitest";
import pg from "pg";
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { startTestBucket, type TestBucket } from "../helpers/s3";
import { agentUpload, readEvents, startTestServer, type TestServer } from "../helpers/server";
import { createPostgresDatabase, describeWithPostgres, type TestDatabase } from "../helpers/postgres";
import { startFakeModel } from "../fake-model/fake-model.mjs";

// Two servers sharing one PostgreSQL database and one S3-compatible snapshot
// bucket: a session paused on one continues on the other, files and memory included.
describeWithPostgres("sessions moving between servers", () => {
  let database: TestDatabase;
  let bucket: TestBucket;
  let bucketDir: string;
  let a: TestServer;
  let b: TestServer;
  let model: Awaited<ReturnType<typeof startFakeModel>>;

  beforeAll(async () => {
    model = await startFakeModel();
    database = await createPostgresDatabase();
    bucket = await startTestBucket();
    bucketDir = bucket.dir;
    const env = {
      ASH_DATABASE_URL: database.url,
      ...bucket.env,
      // Collectors on both servers run all the time and keep little, racing every save.
      ASH_SNAPSHOT_GC_INTERVAL_MS: "100",
      ASH_SNAPSHOT_GC_GRACE_MS: "0",
      ASH_CHECKPOINTS_KEEP: "2",
    };
    a = await startTestServer({ modelUrl: model.url, env });
    b = await startTestServer({ modelUrl: model.url, env });
  }, 180_000);
  afterAll(async () => {
    await a?.dispose();
    await b?.dispose();
    await bucket?.close();
    await model?.close();
    await database?.drop();
  });

  it("continues on the second server a session paused on the first", async () => {
    await a.api("/api/agents", { method: "POST", json: agentUpload("roaming") });
    const { session } = await (await a.api("/api/sessions", { method: "POST", json: { agent: "roaming" } })).json();
    await readEvents(await a.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "remember the word heron" } }));
    await readEvents(await a.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "#bash echo from-a > a.txt" } }));
    expect((await (await a.api(`/api/sessions/${session.id}/pause`, { method: "POST" })).json()).session.status).toBe("paused");
    // The saved files are in the bucket, not in either server's data folder.
    // (s3rver keeps each object as <key>._S3rver_object on its disk.)
    expect(filesUnder(join(bucketDir, "ash", "snapshots")).some((name) => name.endsWith("._S3rver_object"))).toBe(true);
    expect(existsSync(join(a.dataDir, "sessions", session.id))).toBe(false);
    expect(filesUnder(join(a.dataDir, "sessions"))).toEqual([]);

    const events = await readEvents(await b.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "#bash cat a.txt" } }));
    expect(events.find((e) => e.event === "tool_result")?.data.content).toContain("from-a");
    expect(model.userTexts()).toContain("remember the word heron");
    // Its history is one history, whichever server wrote it.
    const stored = (await (await a.api(`/api/sessions/${session.id}/events?limit=1000`)).json()).events;
    expect(stored.map((e: any) => e.sequence)).toEqual(stored.map((_: unknown, i: number) => i + 1));
  });

  it("forks on one server at a checkpoint made on the other, and wakes the other's session", async () => {
    await a.api("/api/agents", { method: "POST", json: agentUpload("shared") });
    const { session } = await (await a.api("/api/sessions", { method: "POST", json: { agent: "shared" } })).json();
    await readEvents(await a.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "#bash echo v1 > v.txt" } }));
    await readEvents(await a.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "#bash echo v2 > v.txt" } }));
    await a.api(`/api/sessions/${session.id}/pause`, { method: "POST" });

    const fork = (await (await b.api(`/api/sessions/${session.id}/fork`, { method: "POST", json: { checkpoint: 1 } })).json()).session;
    const onB = await readEvents(await b.api(`/api/sessions/${fork.id}/messages`, { method: "POST", json: { content: "#bash cat v.txt" } }));
    expect(onB.find((e) => e.event === "tool_result")?.data.content).toContain("v1");
    await b.api(`/api/sessions/${fork.id}/pause`, { method: "POST" });

    // Each wakes the other's session where it was left.
    const onA = await readEvents(await a.api(`/api/sessions/${fork.id}/messages`, { method: "POST", json: { content: "where are we" } }));
    expect(onA.find((e) => e.event === "turn_complete")?.data.result).toContain("[turns seen: 3]");
    const back = await readEvents(await b.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "#bash cat v.txt" } }));
    expect(back.find((e) => e.event === "tool_result")?.data.content).toContain("v2");
    await a.api(`/api/sessions/${fork.id}/pause`, { method: "POST" });
    await b.api(`/api/sessions/${session.id}/pause`, { method: "POST" });
  });

  it("collects unused data on both servers while both save, and every kept checkpoint stays whole", async () => {
    await a.api("/api/agents", { method: "POST", json: agentUpload("churn") });
    const sessions = await Promise.all(
      [a, b].map(async (server) => ({ server, id: (await (await server.api("/api/sessions", { method: "POST", json: { agent: "churn" } })).json()).session.id as string })),
    );
    // Each server runs turns (a save each) while both collectors run every 100 ms and keep 2 checkpoints a session.
    await Promise.all(
      sessions.map(async ({ server, id }) => {
        for (let n = 1; n <= 6; n++) {
          const events = await readEvents(await server.api(`/api/sessions/${id}/messages`, { method: "POST", json: { content: `#bash echo ${id}-${n} > n.txt && head -c 20000 /dev/urandom > r${n}.bin` } }));
          expect(events.filter((e) => e.event === "error")).toEqual([]);
        }
      }),
    );
    for (const { server, id } of sessions) {
      const list = async () => (await (await server.api(`/api/sessions/${id}/checkpoints`)).json()).checkpoints as Array<{ checkpoint: number }>;
      // Retention runs with the collector: within a few rounds only the newest two are left.
      for (let i = 0; i < 100 && (await list()).length > 2; i++) await new Promise((resolve) => setTimeout(resolve, 100));
      const kept = await list();
      expect(kept.map((c) => c.checkpoint)).toEqual([5, 6]);
      for (const { checkpoint } of kept) {
        // Forked on the other server, read from the store: the files of exactly that turn.
        const other = server === a ? b : a;
        const fork = (await (await other.api(`/api/sessions/${id}/fork`, { method: "POST", json: { checkpoint } })).json()).session;
        const read = await other.api(`/api/sessions/${fork.id}/files/n.txt`);
        expect(read.status).toBe(200);
        expect(await read.text()).toBe(`${id}-${checkpoint}\n`);
        const listed = ((await (await other.api(`/api/sessions/${fork.id}/files`)).json()).files as Array<{ path: string }>).map((f) => f.path);
        expect(listed.filter((p) => p.endsWith(".bin")).sort()).toEqual(Array.from({ length: checkpoint }, (_, i) => `r${i + 1}.bin`).sort());
      }
      // A dropped checkpoint is gone, with a sentence that says which exist.
      const gone = await server.api(`/api/sessions/${id}/fork`, { method: "POST", json: { checkpoint: 1 } });
      expect(gone.status).toBe(404);
    }
    // Once the collectors have run again, the catalog holds only what kept checkpoints and sessions use.
    const db = new pg.Client({ connectionString: database.url });
    await db.connect();
    const count = async (sql: string) => Number((await db.query(sql)).rows[0].n);
    const orphans = `SELECT COUNT(*) AS n FROM snapshot_objects o WHERE NOT EXISTS (SELECT 1 FROM version_objects v WHERE v.object_key = o.object_key)`;
    try {
      for (let i = 0; i < 100 && (await count(orphans)) > 0; i++) await new Promise((resolve) => setTimeout(resolve, 100));
      expect(await count(orphans)).toBe(0);
      expect(
        await count(
          `SELECT COUNT(*) AS n FROM version_objects v WHERE NOT EXISTS (SELECT 1 FROM checkpoints c WHERE c.version = v.version) AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.workspace_version = v.version)`,
        ),
      ).toBe(0);
    } finally {
      await db.end();
    }
  });
});

/** Every file below `dir` (relative paths); none when it does not exist. */
function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  const walk = (at: string, prefix: string) => {
    for (const name of readdirSync(at)) {
      const path = join(at, name);
      if (statSync(path).isDirectory()) walk(path, `${prefix}${name}/`);
      else out.push(`${prefix}${name}`);
    }
  };
  walk(dir, "");
  return out;
}
