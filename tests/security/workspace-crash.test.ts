import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { agentUpload, readEvents, startTestServer, type TestServer } from "../helpers/server";
import { startFakeModel } from "../fake-model/fake-model.mjs";

// Whatever a sandbox leaves in its workspace, saving it (end of turn, pause)
// and restoring it must not take the server down nor stall other sessions:
// at worst the attacked session's turn fails with an error event, and that
// session still answers the next turn.
const TEST_TIMEOUT = 300_000;

/** Creates, removes and retypes entries under churn/ until it has done `rounds` rounds or `seconds` passed. */
const CHURN = String.raw`
import os, sys, time
seconds, rounds = float(sys.argv[1]), int(sys.argv[2])
os.makedirs("churn", exist_ok=True)
for i in range(2000):
    with open("churn/pad%04d" % i, "w") as f: f.write("p")
deadline, n = time.monotonic() + seconds, 0
while n < rounds and time.monotonic() < deadline:
    for i in range(40):
        p = "churn/x%02d" % i
        try:
            if os.path.isdir(p) and not os.path.islink(p): os.rmdir(p)
            elif os.path.lexists(p): os.unlink(p)
            k = (n + i) % 4
            if k == 0:
                with open(p, "w") as f: f.write("y" * (n % 5000))
            elif k == 1: os.mkdir(p)
            elif k == 2: os.mkfifo(p)
            else: os.symlink("/etc/hostname", p)
        except OSError:
            pass
    n += 1
    if n == 1: open("churn/started", "w").close()
    if n % 20 == 0 and os.path.exists("churn/stop"): break
print("churned", n)
`;

describe("a workspace built to break the server", () => {
  let server: TestServer;
  let model: Awaited<ReturnType<typeof startFakeModel>>;
  let bystander: string;

  beforeAll(async () => {
    model = await startFakeModel();
    server = await startTestServer({ modelUrl: model.url, env: { ASH_DATABASE_URL: "" } });
    expect((await server.api("/api/agents", { method: "POST", json: agentUpload("breaker") })).status).toBe(201);
    bystander = await newSession();
  });
  // A case that took the server down fails by itself; the next case gets a
  // server again (on the same data dir), so each case is judged on its own.
  beforeEach(async () => {
    const up = await fetch(`${server.url}/health`).then((r) => r.status === 200, () => false);
    if (!up) await server.restart();
  });
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
  });

  async function newSession(): Promise<string> {
    const res = await server.api("/api/sessions", { method: "POST", json: { agent: "breaker" } });
    expect(res.status).toBe(201);
    return (await res.json()).session.id as string;
  }
  const turn = async (id: string, content: string) => {
    const res = await server.api(`/api/sessions/${id}/messages`, { method: "POST", json: { content } });
    expect(res.status).toBe(200);
    return readEvents(res);
  };
  const exec = async (id: string, command: string, timeout = 60_000) =>
    (await (await server.api(`/api/sessions/${id}/exec`, { method: "POST", json: { command, timeout } })).json()) as { exitCode: number | null; stdout: string; stderr: string };

  /** A turn ended with `done`; an error, if any, is the save's own. */
  function expectTurnEnded(events: Array<{ event: string; data: any }>): void {
    expect(events.at(-1)?.event).toBe("done");
    for (const e of events.filter((e) => e.event === "error")) expect(e.data.code).toBe("workspace_save_failed");
  }
  /** The server answers and another session's turn still works. */
  async function expectServerFine(): Promise<void> {
    expect((await fetch(`${server.url}/health`)).status).toBe(200);
    const events = await turn(bystander, "still there?");
    expect(events.map((e) => e.event)).toContain("turn_complete");
    expect(events.at(-1)?.event).toBe("done");
  }
  /** The attacked session goes to sleep (a save), wakes up (a restore) and answers. */
  async function expectSessionFine(id: string): Promise<void> {
    const paused = await server.api(`/api/sessions/${id}/pause`, { method: "POST" });
    expect(paused.status).toBe(200);
    await expectServerFine();
    const events = await turn(id, "and you?");
    expect(events.map((e) => e.event)).toContain("turn_complete");
    expect(events.at(-1)?.event).toBe("done");
    expect((await server.api(`/api/sessions/${id}/files`)).status).toBe(200);
    const tarball = await server.api(`/api/sessions/${id}/workspace`);
    expect(tarball.status).toBe(200);
    await tarball.arrayBuffer();
  }

  /** The agent makes the entries with its Bash tool; the end-of-turn save meets them. */
  async function attack(command: string): Promise<string> {
    const id = await newSession();
    expectTurnEnded(await turn(id, `#bash ${command}`));
    await expectServerFine();
    await expectSessionFine(id);
    await server.api(`/api/sessions/${id}`, { method: "DELETE" });
    return id;
  }

  it("a name of 200 colons", async () => {
    await attack(`touch "$(printf ':%.0s' $(seq 1 200))" && mkdir "$(printf 'b%.0s' $(seq 1 255))" && echo x > "$(printf 'b%.0s' $(seq 1 255))/$(printf ':%.0s' $(seq 1 200))"`);
  }, TEST_TIMEOUT);

  it("names that are not UTF-8", async () => {
    await attack(`touch "$(printf 'bad-\\377\\376')" "$(printf 'x\\300y')" && mkdir "$(printf 'dir-\\377')" && echo z > "$(printf 'dir-\\377/f\\376')"`);
  }, TEST_TIMEOUT);

  it("a FIFO", async () => {
    await attack("mkfifo pipe && mkdir sub && mkfifo sub/pipe2");
  }, TEST_TIMEOUT);

  it("a UNIX socket", async () => {
    await attack(`python3 -c "import socket; s=socket.socket(socket.AF_UNIX); s.bind('sock')"`);
  }, TEST_TIMEOUT);

  it("a device node (refused to a non-root user) and a symlink loop", async () => {
    await attack("(mknod null c 1 3 || true) && ln -s loop1 loop2 && ln -s loop2 loop1 && ln -s /etc/shadow shadow");
  }, TEST_TIMEOUT);

  it("a mode-000 file and folder", async () => {
    await attack("echo secret > locked && chmod 000 locked && mkdir lockdir && echo y > lockdir/f && chmod 000 lockdir");
  }, TEST_TIMEOUT);

  it("a deep tree", async () => {
    await attack(`python3 -c "
import os
p = 'deep'
for i in range(600):
    p = os.path.join(p, 'd')
os.makedirs(p)
open(os.path.join(p, 'bottom'), 'w').write('b')
"`);
  }, TEST_TIMEOUT);

  it("files that vanish and change type while the workspace is saved", async () => {
    const id = await newSession();
    expect((await exec(id, `cat > churn.py <<'PY'\n${CHURN}\nPY\necho ok`)).stdout).toContain("ok");
    let settled = false;
    const churning = exec(id, "python3 churn.py 90 200000", 150_000).finally(() => (settled = true));
    let started = false;
    for (let i = 0; i < 600 && !started && !settled; i++) started = (await exec(id, "test -e churn/started && echo yes")).stdout.includes("yes");
    expect(started).toBe(true);
    try {
      for (let round = 0; round < 4; round++) {
        expectTurnEnded(await turn(id, `round ${round}`));
        expect((await fetch(`${server.url}/health`)).status).toBe(200);
        expect((await server.api(`/api/sessions/${id}/files`)).status).toBe(200);
        const tarball = await server.api(`/api/sessions/${id}/workspace`);
        expect(tarball.status).toBe(200);
        await tarball.arrayBuffer();
      }
    } finally {
      await exec(id, "touch churn/stop");
      await churning;
    }
    await expectServerFine();
    await expectSessionFine(id);
  }, TEST_TIMEOUT);

  // Last: a server that fails here may also fail to remove the tree when it starts again.
  it("paths longer than PATH_MAX", async () => {
    await attack(
      `d=$(printf 'a%.0s' $(seq 1 200)) && mkdir -p long && cd long && for i in $(seq 1 24); do mkdir $d && cd $d; done && echo deep > "$(printf ':%.0s' $(seq 1 200))"`,
    );
  }, TEST_TIMEOUT);
});
