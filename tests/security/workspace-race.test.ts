import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { agentUpload, readEvents, startTestServer, type TestServer } from "../helpers/server";
import { startFakeModel } from "../fake-model/fake-model.mjs";
import { contentOf, filesUnder, gunzip, SWAPPER } from "./race-helper";

// A process in the sandbox swaps a regular file and a symlink to a secret
// (the server's own environment, a file in its data dir) in a tight loop.
// Whatever reads the workspace must never hand those bytes back.
describe("a sandbox racing the server's reads of its workspace", () => {
  let server: TestServer;
  let model: Awaited<ReturnType<typeof startFakeModel>>;
  const apiKey = `race-key-${randomBytes(12).toString("hex")}`;
  const canary = `CANARY-${randomBytes(12).toString("hex")}`;
  let canaryPath: string;

  beforeAll(async () => {
    model = await startFakeModel();
    server = await startTestServer({ modelUrl: model.url, apiKey, env: { ASH_DATABASE_URL: "" } });
    canaryPath = join(server.dataDir, "canary.txt");
    writeFileSync(canaryPath, `${canary}\n`, { mode: 0o600 });
    await server.api("/api/agents", { method: "POST", json: agentUpload("racer") });
  });
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
  });

  const leaks = (data: Buffer) => data.includes(apiKey) || data.includes(canary);
  const exec = async (id: string, command: string) =>
    (await (await server.api(`/api/sessions/${id}/exec`, { method: "POST", json: { command, timeout: 180_000 } })).json()) as { exitCode: number; stdout: string; stderr: string };
  const turn = async (id: string, content: string) => readEvents(await server.api(`/api/sessions/${id}/messages`, { method: "POST", json: { content } }));

  async function newRacer(): Promise<string> {
    const id = (await (await server.api("/api/sessions", { method: "POST", json: { agent: "racer" } })).json()).session.id as string;
    await prepare(id);
    return id;
  }
  async function prepare(id: string): Promise<void> {
    const r = await exec(id, `cat > swap.py <<'PY'\n${SWAPPER}\nPY\npython3 swap.py setup '${canaryPath}'`);
    expect(r.stdout).toContain("ready");
  }

  /** Starts the swapper (an exec that runs until told to stop) and waits until it swaps. */
  async function startSwapping(id: string): Promise<Promise<unknown>> {
    const running = exec(id, "python3 swap.py swap").catch(() => undefined);
    for (let i = 0; i < 400; i++) {
      if ((await exec(id, "test -e race/swapping && echo yes")).stdout.includes("yes")) return running;
    }
    throw new Error("the swapper did not start");
  }
  async function stopSwapping(id: string, running: Promise<unknown>): Promise<void> {
    await exec(id, "touch race/stop");
    await running;
  }

  /** Nothing stored for any session holds a secret byte. */
  function expectCleanStore(): void {
    for (const { path, data } of filesUnder(join(server.dataDir, "sessions"))) {
      if (leaks(data)) throw new Error(`secret bytes in ${path}`);
    }
  }

  it("end-of-turn saves never store what a swapped symlink points at", async () => {
    const id = await newRacer();
    const swapping = await startSwapping(id);
    for (let round = 0; round < 6; round++) {
      const events = await turn(id, `round ${round}`);
      expect(events.at(-1)?.event).toBe("done");
      expectCleanStore();
    }
    await stopSwapping(id, swapping);
  });

  it("the files API and the workspace download never return it (live and saved)", async () => {
    const id = await newRacer();
    const swapping = await startSwapping(id);
    for (let round = 0; round < 5; round++) {
      for (let i = 0; i < 20; i++) {
        for (const name of [`f${String(i).padStart(2, "0")}`, `l${String(i).padStart(2, "0")}`]) {
          const res = await server.api(`/api/sessions/${id}/files/race/${name}`);
          if (res.status === 200) expect(leaks(contentOf(await res.json()))).toBe(false);
          else expect(res.status).toBe(404);
        }
      }
      const tarball = await server.api(`/api/sessions/${id}/workspace`);
      expect(tarball.status).toBe(200);
      expect(leaks(gunzip(Buffer.from(await tarball.arrayBuffer())))).toBe(false);
      const listing = await (await server.api(`/api/sessions/${id}/files`)).json();
      expect(listing.files.length).toBeGreaterThan(4000);
    }
    await stopSwapping(id, swapping);
    // Asleep: answered from the snapshot.
    await server.api(`/api/sessions/${id}/pause`, { method: "POST" });
    expectCleanStore();
    const tarball = await server.api(`/api/sessions/${id}/workspace`);
    expect(leaks(gunzip(Buffer.from(await tarball.arrayBuffer())))).toBe(false);
    for (let i = 0; i < 20; i++) {
      const res = await server.api(`/api/sessions/${id}/files/race/f${String(i).padStart(2, "0")}`);
      if (res.status === 200) expect(leaks(contentOf(await res.json()))).toBe(false);
    }
  });

  it("pause, fork and the restore after them never store or hand back a secret", async () => {
    const id = await newRacer();
    for (let round = 0; round < 3; round++) {
      const swapping = await startSwapping(id);
      const fork = await server.api(`/api/sessions/${id}/fork`, { method: "POST" });
      expect(fork.status).toBe(201);
      const forkId = (await fork.json()).session.id as string;
      expectCleanStore();
      const paused = await server.api(`/api/sessions/${id}/pause`, { method: "POST" });
      expect(paused.status).toBe(200);
      await swapping;
      expectCleanStore();
      // Waking up restores the snapshot into the new sandbox.
      const seen = await exec(id, "cat race/f* 2>/dev/null; true");
      expect(leaks(Buffer.from(seen.stdout))).toBe(false);
      const inFork = await exec(forkId, "cat race/f* 2>/dev/null; true");
      expect(leaks(Buffer.from(inFork.stdout))).toBe(false);
    }
    expect((await fetch(`${server.url}/health`)).status).toBe(200);
  });
});
