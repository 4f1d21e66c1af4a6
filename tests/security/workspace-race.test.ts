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
//
// The swapper runs in the foreground of an exec call (an exec's process
// namespace ends with its command, so a background loop would not survive
// it) while the test drives the operation under attack concurrently; the
// loop is bounded in rounds and seconds and stops early on race/stop.
const SWAP_SECONDS = 90;
const SWAP_ROUNDS = 2_000_000;
const TEST_TIMEOUT = 400_000;

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
    const agent = await server.api("/api/agents", { method: "POST", json: agentUpload("racer") });
    expect(agent.status).toBeLessThan(300);
  });
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
  });

  const leaks = (data: Buffer) => data.includes(apiKey) || data.includes(canary);
  const exec = async (id: string, command: string, timeout = 60_000) => {
    const res = await server.api(`/api/sessions/${id}/exec`, { method: "POST", json: { command, timeout } });
    return (await res.json()) as { exitCode: number | null; stdout: string; stderr: string; timedOut?: boolean };
  };
  const turn = async (id: string, content: string) => readEvents(await server.api(`/api/sessions/${id}/messages`, { method: "POST", json: { content } }));

  async function newRacer(): Promise<string> {
    const res = await server.api("/api/sessions", { method: "POST", json: { agent: "racer" } });
    expect(res.status).toBe(201);
    const id = (await res.json()).session.id as string;
    // One call writes the script, the 4,000 padding files and the pairs.
    const r = await exec(id, `cat > swap.py <<'PY'\n${SWAPPER}\nPY\npython3 swap.py setup '${canaryPath}'`, 120_000);
    expect(r.stdout, r.stderr).toContain("ready");
    return id;
  }

  /**
   * Runs `work` while the sandbox swaps its pairs. The swapping exec is
   * started first and `work` begins once it has swapped a round; it is
   * stopped afterwards (unless `work` already ended the sandbox).
   */
  async function whileSwapping<T>(id: string, work: () => Promise<T>, stop = true): Promise<T> {
    let settled = false;
    const swapper = exec(id, `python3 swap.py swap ${SWAP_SECONDS} ${SWAP_ROUNDS}`, (SWAP_SECONDS + 60) * 1000).finally(() => (settled = true));
    let started = false;
    for (let i = 0; i < 600 && !started && !settled; i++) {
      started = (await exec(id, "test -e race/swapping && echo yes")).stdout.includes("yes");
    }
    if (!started) throw new Error(`the swapper did not start: ${JSON.stringify(settled ? await swapper : "still running")}`);
    try {
      return await work();
    } finally {
      if (stop) await exec(id, "touch race/stop");
      await swapper;
    }
  }

  /** Nothing stored for any session holds a secret byte. */
  function expectCleanStore(): void {
    for (const { path, data } of filesUnder(join(server.dataDir, "sessions"))) {
      if (leaks(data)) throw new Error(`secret bytes in ${path}`);
    }
  }

  const pairName = (kind: "f" | "l", i: number) => `race/${kind}${String(i).padStart(2, "0")}`;

  it(
    "end-of-turn saves never store what a swapped symlink points at",
    async () => {
      const id = await newRacer();
      await whileSwapping(id, async () => {
        for (let round = 0; round < 4; round++) {
          const events = await turn(id, `round ${round}`);
          expect(events.at(-1)?.event).toBe("done");
          expectCleanStore();
        }
      });
      expectCleanStore();
    },
    TEST_TIMEOUT,
  );

  it(
    "the files API and the workspace download never return it (live and saved)",
    async () => {
      const id = await newRacer();
      await whileSwapping(id, async () => {
        for (let round = 0; round < 3; round++) {
          for (let i = 0; i < 20; i++) {
            for (const kind of ["f", "l"] as const) {
              const res = await server.api(`/api/sessions/${id}/files/${pairName(kind, i)}?format=json`);
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
      });
      // Asleep: answered from the snapshot.
      expect((await server.api(`/api/sessions/${id}/pause`, { method: "POST" })).status).toBe(200);
      expectCleanStore();
      const tarball = await server.api(`/api/sessions/${id}/workspace`);
      expect(tarball.status).toBe(200);
      expect(leaks(gunzip(Buffer.from(await tarball.arrayBuffer())))).toBe(false);
      for (let i = 0; i < 20; i++) {
        const res = await server.api(`/api/sessions/${id}/files/${pairName("f", i)}?format=json`);
        if (res.status === 200) expect(leaks(contentOf(await res.json()))).toBe(false);
      }
    },
    TEST_TIMEOUT,
  );

  it(
    "pause, fork and the restore after them never store or hand back a secret",
    async () => {
      const id = await newRacer();
      for (let round = 0; round < 3; round++) {
        let forkId = "";
        // Pausing destroys the sandbox, which ends the swapping exec with it.
        await whileSwapping(
          id,
          async () => {
            const fork = await server.api(`/api/sessions/${id}/fork`, { method: "POST" });
            expect(fork.status).toBe(201);
            forkId = (await fork.json()).session.id as string;
            expectCleanStore();
            expect((await server.api(`/api/sessions/${id}/pause`, { method: "POST" })).status).toBe(200);
          },
          false,
        );
        expectCleanStore();
        // Waking up restores the snapshot into a new sandbox.
        const seen = await exec(id, "cat race/f* race/l* 2>/dev/null; true");
        expect(leaks(Buffer.from(seen.stdout))).toBe(false);
        const inFork = await exec(forkId, "cat race/f* race/l* 2>/dev/null; true");
        expect(leaks(Buffer.from(inFork.stdout))).toBe(false);
      }
      expect((await fetch(`${server.url}/health`)).status).toBe(200);
    },
    TEST_TIMEOUT,
  );
});
