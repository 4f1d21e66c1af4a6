// Density: an agent process lives only for ASH_KEEPALIVE_MS after its last
// turn (its sandbox stays), starts go through a bounded queue, and spares
// follow demand. Real server, real sandboxes, fake model; no timing asserts.
import { existsSync, readFileSync, readdirSync, readlinkSync } from "node:fs";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { agentUpload, readEvents, runServerExpectingFailure, startTestServer, type TestServer } from "../helpers/server";
import { countClaudeProcesses } from "../helpers/processes";

/** Processes whose command line names this sandbox's folder (its network bridges name their sockets there). */
function sandboxProcesses(dataDir: string, sandboxId: string): number {
  let n = 0;
  for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(`${dataDir}/sandboxes/${sandboxId}`)) n++;
    } catch {
      // gone
    }
  }
  return n;
}

/** Niceness of every thread of every CLI process working under `dataDir`, by pid (read from /proc/<pid>/task/<tid>/stat). */
function claudeNiceness(dataDir: string): Map<number, number[]> {
  const out = new Map<number, number[]>();
  for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    try {
      if (!/claude-agent-sdk-linux-[^/]+\/claude$/.test(readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")[0] ?? "")) continue;
      if (!readlinkSync(`/proc/${pid}/cwd`).startsWith(dataDir + "/")) continue;
      const nice = readdirSync(`/proc/${pid}/task`).map((tid) => {
        const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
        return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[16]);
      });
      out.set(Number(pid), nice);
    } catch {
      // gone meanwhile
    }
  }
  return out;
}
import { startFakeModel } from "../fake-model/fake-model.mjs";

/**
 * The CPU weight of the cgroup a process is in: v1 cpu.shares (1024 normal) or
 * v2 cpu.weight (100 normal); null when its group has no CPU controller.
 */
function groupCpuWeight(pid: number): { v1: number } | { v2: number } | null {
  for (const line of readFileSync(`/proc/${pid}/cgroup`, "utf8").trim().split("\n")) {
    const [, controllers, path] = line.split(":") as [string, string, string];
    if (controllers.split(",").includes("cpu")) {
      const file = `/sys/fs/cgroup/${controllers}${path}/cpu.shares`;
      return existsSync(file) ? { v1: Number(readFileSync(file, "utf8")) } : null;
    }
    if (controllers === "" && existsSync(`/sys/fs/cgroup${path}/cpu.weight`)) return { v2: Number(readFileSync(`/sys/fs/cgroup${path}/cpu.weight`, "utf8")) };
  }
  return null;
}

type Model = Awaited<ReturnType<typeof startFakeModel>>;

async function createSession(server: TestServer, body: Record<string, unknown>) {
  const r = await server.api("/api/sessions", { method: "POST", json: body });
  expect(r.status).toBe(201);
  return (await r.json()).session;
}

async function turn(server: TestServer, id: string, content: string) {
  const r = await server.api(`/api/sessions/${id}/messages`, { method: "POST", json: { content } });
  expect(r.status).toBe(200);
  return readEvents(r);
}

async function getSession(server: TestServer, id: string) {
  return (await (await server.api(`/api/sessions/${id}`)).json()).session;
}

/** One sample of a metric from /metrics (0 when absent). */
async function metric(server: TestServer, line: string): Promise<number> {
  const text = await (await server.api("/metrics")).text();
  const found = text.split("\n").find((l) => l.startsWith(line + " "));
  return found ? Number(found.slice(line.length + 1)) : 0;
}

/** Polls (bounded: 300 × 100 ms) until `ok` holds; returns whether it did. */
async function until(ok: () => Promise<boolean>): Promise<boolean> {
  for (let i = 0; i < 300; i++) {
    if (await ok()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

describe("hot window (ASH_KEEPALIVE_MS)", () => {
  let server: TestServer;
  let model: Model;

  beforeAll(async () => {
    model = await startFakeModel();
    server = await startTestServer({ modelUrl: model.url, env: { ASH_KEEPALIVE_MS: "500", ASH_WARM_DEMAND_MS: "0" } });
    expect((await server.api("/api/agents", { method: "POST", json: agentUpload("keeper") })).status).toBe(201);
  });
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
  });

  it("stops the agent process after the window, keeps the sandbox, and the next turn remembers and finds its files", async () => {
    const session = await createSession(server, { agent: "keeper" });
    expect(session.state).toBe("hot");
    const first = await turn(server, session.id, "#bash echo kept-file-marker > note.txt");
    expect(first.map((e) => e.event)).toContain("turn_complete");
    const resumedBefore = await metric(server, 'ash_resumes_total{from="snapshot"}');

    // Past the window: idle, no agent process, the sandbox folder still there.
    expect(await until(async () => (await getSession(server, session.id)).state === "idle")).toBe(true);
    expect(await until(async () => (await countClaudeProcesses(server.dataDir)) === 0)).toBe(true);
    // Its network bridges went with it: an idle sandbox runs no process at all.
    expect(await until(async () => sandboxProcesses(server.dataDir, session.sandboxId) === 0)).toBe(true);
    const idle = await getSession(server, session.id);
    expect(idle.status).toBe("active");
    expect(idle.sandboxId).toBe(session.sandboxId);
    expect(await readdir(`${server.dataDir}/sandboxes`)).toContain(session.sandboxId);
    expect(await metric(server, 'ash_session_states{state="idle"}')).toBe(1);
    expect(await metric(server, 'ash_session_states{state="hot"}')).toBe(0);

    // The next turn starts a process in the same sandbox: the file is there and the conversation goes on.
    const second = await turn(server, session.id, "#bash cat note.txt");
    expect(second.find((e) => e.event === "tool_result")!.data.content).toContain("kept-file-marker");
    expect(JSON.stringify(model.requests.at(-1)!.body)).toContain("echo kept-file-marker > note.txt");
    const after = await getSession(server, session.id);
    expect(after.sandboxId).toBe(session.sandboxId);
    expect(sandboxProcesses(server.dataDir, session.sandboxId)).toBeGreaterThan(0);
    expect(after.state).toBe("hot");
    // Woken, not restored.
    expect(await metric(server, "ash_agent_restarts_total")).toBe(1);
    expect(await metric(server, 'ash_resumes_total{from="snapshot"}')).toBe(resumedBefore);

    // A third turn on the woken process still remembers the first.
    const third = await turn(server, session.id, "what did I ask first?");
    expect(third.map((e) => e.event)).toContain("turn_complete");
    expect(model.userTexts().some((t: string) => t.includes("echo kept-file-marker"))).toBe(true);
    await server.api(`/api/sessions/${session.id}`, { method: "DELETE" });
  });

  it("reads and runs commands in an idle session without starting its agent process", async () => {
    const session = await createSession(server, { agent: "keeper" });
    await turn(server, session.id, "#bash echo quiet > quiet.txt");
    expect(await until(async () => (await getSession(server, session.id)).state === "idle")).toBe(true);
    const exec = await (await server.api(`/api/sessions/${session.id}/exec`, { method: "POST", json: { command: "cat quiet.txt" } })).json();
    expect(exec.stdout).toContain("quiet");
    expect((await getSession(server, session.id)).state).toBe("idle");
    const ended = (await (await server.api(`/api/sessions/${session.id}`, { method: "DELETE" })).json()).session;
    expect(ended.state).toBe("asleep");
  });
});

describe("density settings at start-up", () => {
  it.each([
    ["ASH_KEEPALIVE_MS", "soon", /ASH_KEEPALIVE_MS must be a whole number/],
    ["ASH_KEEPALIVE_MS", "-5", /ASH_KEEPALIVE_MS must be a whole number/],
    ["ASH_START_CONCURRENCY", "0", /ASH_START_CONCURRENCY must be between 1 and/],
    ["ASH_WARM_DEMAND_MS", "1h", /ASH_WARM_DEMAND_MS must be a whole number/],
    ["ASH_WARM_MEMORY_MB", "lots", /ASH_WARM_MEMORY_MB must be a whole number/],
    ["ASH_AGENT_START_TIMEOUT_MS", "100", /ASH_AGENT_START_TIMEOUT_MS must be between 500 and/],
  ])("%s=%s stops the server with a sentence naming it", async (name, value, message) => {
    const { code, output } = await runServerExpectingFailure({ [name]: value, ASH_DATA_DIR: "/nonexistent-ash-density" });
    expect(code).not.toBe(0);
    expect(output).toMatch(message);
  });
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const IDLE_MS = 3000;

/**
 * A server whose agent processes' start-ups do not end before the file `hold` exists
 * (ASH_TEST_START_HOLD_FILE), with one agent; for the suite's hooks.
 */
function heldStarts(agent: string, env: Record<string, string>) {
  const held = {} as { server: TestServer; model: Model; hold: string };
  beforeAll(async () => {
    held.model = await startFakeModel();
    held.hold = join(await mkdtemp(join(tmpdir(), "ash-hold-")), "release");
    held.server = await startTestServer({ modelUrl: held.model.url, env: { ASH_WARM_DEMAND_MS: "0", ASH_TEST_START_HOLD_FILE: held.hold, ...env } });
    expect((await held.server.api("/api/agents", { method: "POST", json: agentUpload(agent) })).status).toBe(201);
  });
  afterAll(async () => {
    await held.server?.dispose();
    await held.model?.close();
    if (held.hold) await rm(dirname(held.hold), { recursive: true, force: true });
  });
  return held;
}

describe("agent process starts (ASH_START_CONCURRENCY)", () => {
  // The idle timeout is short: turns wait for held starts far longer than it, which is not the model's silence.
  const held = heldStarts("burst", { ASH_START_CONCURRENCY: "2", ASH_TURN_IDLE_TIMEOUT_MS: String(IDLE_MS) });

  it("runs at most the configured number of starts at once, serves the rest in order, and ends a starting session without waiting", async () => {
    const sessions = [];
    for (let i = 0; i < 5; i++) sessions.push(await createSession(held.server, { agent: "burst" }));
    // Every start is held (the file does not exist): two run, three wait.
    expect(await until(async () => (await metric(held.server, 'ash_agent_starts{state="running"}')) === 2)).toBe(true);
    expect(await metric(held.server, 'ash_agent_starts{state="queued"}')).toBe(3);
    const streams = sessions.map((s) => held.server.api(`/api/sessions/${s.id}/messages`, { method: "POST", json: { content: `hello ${s.id}` } }));

    // The first session's process is starting (held): DELETE answers while it still is.
    const deleted = await held.server.api(`/api/sessions/${sessions[0].id}`, { method: "DELETE" });
    expect(deleted.status).toBe(200);
    expect((await deleted.json()).session.status).toBe("ended");
    expect(existsSync(held.hold)).toBe(false);
    // Its slot went to the next waiting start; still two at a time.
    expect(await until(async () => (await metric(held.server, 'ash_agent_starts{state="queued"}')) === 2)).toBe(true);
    expect(await metric(held.server, 'ash_agent_starts{state="running"}')).toBe(2);

    // A stop and a pause of sessions whose process is starting or waiting do not wait either.
    expect((await held.server.api(`/api/sessions/${sessions[4].id}/stop`, { method: "POST" })).status).toBe(200);
    expect(existsSync(held.hold)).toBe(false);

    // Turns waiting for a start slot or a start-up well past the idle timeout: not timed out for it.
    await sleep(2.5 * IDLE_MS);
    await writeFile(held.hold, "");
    const results = await Promise.all((await Promise.all(streams)).map((r) => readEvents(r as unknown as Response)));
    for (const events of results.slice(1, 4)) {
      expect(events.map((e) => e.event), JSON.stringify(events.filter((e) => e.event === "error"))).toContain("turn_complete");
      expect(events.filter((e) => e.event === "error")).toEqual([]);
    }
    expect(await metric(held.server, "ash_agent_starts_peak")).toBe(2);
    // What an operator sees of it: starts held 2.5 × IDLE_MS, the waits behind them at least as long.
    const held2 = (2.5 * IDLE_MS) / 1000;
    expect(await metric(held.server, 'ash_agent_start_seconds_sum{phase="starting",priority="session"}')).toBeGreaterThanOrEqual(2 * held2);
    expect(await metric(held.server, 'ash_agent_start_seconds_sum{phase="queued",priority="session"}')).toBeGreaterThanOrEqual(held2);
    expect(await metric(held.server, 'ash_agent_start_seconds_bucket{phase="starting",priority="session",le="5"}')).toBeLessThan(
      await metric(held.server, 'ash_agent_start_seconds_count{phase="starting",priority="session"}'),
    );
  });
});

describe("an agent process that does not finish starting (ASH_AGENT_START_TIMEOUT_MS)", () => {
  const held = heldStarts("stuck", { ASH_AGENT_START_TIMEOUT_MS: "2000" });

  it("ends the turn with an error that says so, stops the process, and the next message starts a new one", async () => {
    const session = await createSession(held.server, { agent: "stuck" });
    const events = await turn(held.server, session.id, "hello");
    expect(events.find((e) => e.event === "error")?.data, JSON.stringify(events)).toMatchObject({
      code: "sandbox_crashed",
      error: expect.stringMatching(/did not start within 2000 ms.*ASH_AGENT_START_TIMEOUT_MS/),
    });
    expect(events.map((e) => e.event)).not.toContain("turn_complete");
    expect(events.at(-1)?.event).toBe("done");
    expect(await until(async () => (await countClaudeProcesses(held.server.dataDir)) === 0)).toBe(true);
    await writeFile(held.hold, "");
    const next = await turn(held.server, session.id, "and now?");
    expect(next.map((e) => e.event), JSON.stringify(next)).toContain("turn_complete");
  });
});

describe("warm spares by demand (ASH_WARM_DEMAND_MS)", () => {
  let server: TestServer;
  let model: Model;

  beforeAll(async () => {
    model = await startFakeModel();
    // Demand lasts long enough for a spare to start on a busy machine; the pool's debug lines are in
    // the output a failing test prints.
    server = await startTestServer({ modelUrl: model.url, env: { ASH_WARM_DEMAND_MS: "20000", CONSOLA_LEVEL: "4" } });
    // One agent per test: demand is counted per agent, so one test's sessions do not size the other's spares.
    for (const name of ["niced", "wanted"]) expect((await server.api("/api/agents", { method: "POST", json: agentUpload(name) })).status).toBe(201);
  });
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
  });

  const health = async (): Promise<any> => (await fetch(`${server.url}/health`)).json();

  it("runs a spare's processes at a lower CPU priority until a session takes it", async () => {
    const first = await createSession(server, { agent: "niced" });
    await server.api(`/api/sessions/${first.id}`, { method: "DELETE" });
    expect(await until(async () => (await health()).pool.warm.agents.niced === 1)).toBe(true);
    const spare = claudeNiceness(server.dataDir);
    expect(spare.size).toBe(1);
    const [pid, threads] = [...spare][0]!;
    expect(threads.length).toBeGreaterThan(0);
    expect(threads.every((n) => n === 10)).toBe(true);
    // Niceness orders processes within one group only: the spare's sandbox group weighs what niceness 10 weighs (110 of 1024).
    const spareWeight = groupCpuWeight(pid);
    // Where the host has a v1 CPU controller (this project's machines), the sandbox's group must be under it.
    if (existsSync("/sys/fs/cgroup/cpu/cpu.shares")) expect(spareWeight).not.toBeNull();
    if (spareWeight) expect(spareWeight).toEqual("v1" in spareWeight ? { v1: 110 } : { v2: 11 });
    // Taken: the same process, now at the priority of turns.
    const taken = await createSession(server, { agent: "niced" });
    const after = claudeNiceness(server.dataDir).get(pid)!;
    expect(after.every((n) => n === 0)).toBe(true);
    if (spareWeight) expect(groupCpuWeight(pid)).toEqual("v1" in spareWeight ? { v1: 1024 } : { v2: 100 });
    expect((await turn(server, taken.id, "hi")).map((e) => e.event)).toContain("turn_complete");
    await server.api(`/api/sessions/${taken.id}`, { method: "DELETE" });
  });

  it("makes a spare for an agent once a session of it is created, and drops it when demand stops", async () => {
    expect((await health()).pool.warm.agents.wanted ?? 0).toBe(0);
    const first = await createSession(server, { agent: "wanted" });
    const made = await until(async () => (await health()).pool.warm.agents.wanted === 1);
    if (!made) console.log(server.output());
    expect(made).toBe(true);
    // The next session takes it.
    const second = await createSession(server, { agent: "wanted" });
    expect((await turn(server, second.id, "hi")).map((e) => e.event)).toContain("turn_complete");
    for (const s of [first, second]) await server.api(`/api/sessions/${s.id}`, { method: "DELETE" });
    // No session of the agent for ASH_WARM_DEMAND_MS: its spare goes (bounded wait: twice the window).
    let gone = false;
    for (let i = 0; i < 2 && !gone; i++) gone = await until(async () => (await health()).pool.warm.total === 0 && (await readdir(`${server.dataDir}/sandboxes`)).length === 0);
    if (!gone) console.log(server.output());
    expect(gone).toBe(true);
  });
});

describe("warm spares sized by the last burst (ASH_WARM_DEMAND_MS, ASH_WARM_MEMORY_MB)", () => {
  let server: TestServer;
  let model: Model;

  beforeAll(async () => {
    model = await startFakeModel();
    // Room for three spares (200 MB each); demand lasts long enough for them all to start on a busy machine.
    server = await startTestServer({ modelUrl: model.url, env: { ASH_WARM_DEMAND_MS: "600000", ASH_WARM_MEMORY_MB: "600" } });
    expect((await server.api("/api/agents", { method: "POST", json: agentUpload("bursty") })).status).toBe(201);
  });
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
  });

  const health = async (): Promise<any> => (await fetch(`${server.url}/health`)).json();
  const sandboxes = async () => readdir(`${server.dataDir}/sandboxes`);

  it("keeps as many spares as the last burst of sessions, within the memory budget, and serves the next burst from them", async () => {
    // A burst of four: the agent wants four spares, the budget holds three.
    const burst = await Promise.all([1, 2, 3, 4].map(() => createSession(server, { agent: "bursty" })));
    for (const s of burst) await server.api(`/api/sessions/${s.id}`, { method: "DELETE" });
    const made = await until(async () => (await health()).pool.warm.agents.bursty === 3 && (await sandboxes()).length === 3);
    if (!made) console.log(JSON.stringify(await health()), server.output());
    expect(made).toBe(true);
    const spares = await sandboxes();
    // Never more than the budget, also once nothing else is starting.
    await new Promise((r) => setTimeout(r, 1500));
    expect((await health()).pool.warm.total).toBe(3);
    // The next burst of three: each session gets its own spare, none starts cold.
    const again = await Promise.all([1, 2, 3].map(() => createSession(server, { agent: "bursty" })));
    expect(new Set(again.map((s) => s.sandboxId)).size).toBe(3);
    for (const s of again) expect(spares).toContain(s.sandboxId);
    for (const s of again) expect((await turn(server, s.id, "hi")).map((e) => e.event)).toContain("turn_complete");
    for (const s of again) await server.api(`/api/sessions/${s.id}`, { method: "DELETE" });
  });
});

describe("DELETE answers before the sandbox teardown (ASH_TEST_TEARDOWN_HOLD_FILE)", () => {
  let server: TestServer;
  let model: Model;
  let hold: string;

  beforeAll(async () => {
    model = await startFakeModel();
    hold = join(await mkdtemp(join(tmpdir(), "ash-teardown-")), "release");
    server = await startTestServer({ modelUrl: model.url, env: { ASH_WARM_DEMAND_MS: "0", ASH_MAX_SANDBOXES: "2", ASH_TEST_TEARDOWN_HOLD_FILE: hold } });
    expect((await server.api("/api/agents", { method: "POST", json: agentUpload("ender") })).status).toBe(201);
  });
  afterAll(async () => {
    await server?.dispose();
    await model?.close();
    if (hold) await rm(dirname(hold), { recursive: true, force: true });
  });

  const health = async (): Promise<any> => (await fetch(`${server.url}/health`)).json();

  it("marks the session ended while its sandbox is still torn down, counts that sandbox until it is gone, and shutdown waits for it", async () => {
    const session = await createSession(server, { agent: "ender" });
    await turn(server, session.id, "#bash echo saved-before > kept.txt");
    const deleted = await server.api(`/api/sessions/${session.id}`, { method: "DELETE" });
    expect(deleted.status).toBe(200);
    const body = (await deleted.json()).session;
    expect(body.status).toBe("ended");
    expect(body.state).toBe("asleep");
    // The teardown is held: the folder is still there and the sandbox still holds its slot.
    expect(existsSync(hold)).toBe(false);
    expect(await readdir(`${server.dataDir}/sandboxes`)).toContain(session.sandboxId);
    expect((await health()).pool.live).toBe(1);
    expect((await server.api(`/api/sessions/${session.id}/messages`, { method: "POST", json: { content: "more" } })).status).toBe(410);

    // A second ended session is held too; shutdown must wait for both teardowns.
    const other = await createSession(server, { agent: "ender" });
    expect((await server.api(`/api/sessions/${other.id}`, { method: "DELETE" })).status).toBe(200);
    expect((await health()).pool.live).toBe(2);
    const stopped = server.stop();
    await new Promise((r) => setTimeout(r, 300));
    await writeFile(hold, "");
    expect(await stopped).toBe(0);
    expect(await readdir(`${server.dataDir}/sandboxes`)).toEqual([]);

    // The files of the last turn were saved before `done`: the session's fork has them.
    await server.restart({ ASH_TEST_TEARDOWN_HOLD_FILE: "" });
    const fork = (await (await server.api(`/api/sessions/${session.id}/fork`, { method: "POST", json: {} })).json()).session;
    const exec = await (await server.api(`/api/sessions/${fork.id}/exec`, { method: "POST", json: { command: "cat kept.txt" } })).json();
    expect(exec.stdout).toContain("saved-before");
  });
});
