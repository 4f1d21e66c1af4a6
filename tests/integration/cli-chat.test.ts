import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startFakeModel } from "../fake-model/fake-model.mjs";
import { agentUpload, startTestServer, type TestServer } from "../helpers/server";
import { skipUnlessReady } from "../helpers/requirements";

/**
 * `ash chat` and Ctrl-C, as a user meets them: the CLI is a child process talking to the real
 * server; Ctrl-C is a real SIGINT (pipe mode) or a real ^C typed into a pseudo-terminal.
 */

const ROOT = resolve(import.meta.dirname, "../..");
const CLI = join(ROOT, "src/cli/main.ts");
const scriptSkip = skipUnlessReady("ash chat in a terminal", spawnSync("script", ["--version"]).status === 0 ? undefined : "script(1) from util-linux is missing");

let model: Awaited<ReturnType<typeof startFakeModel>>;
let server: TestServer;
let home: string;

/** A running CLI whose output can be awaited piece by piece. */
class Cli {
  stdout = "";
  stderr = "";
  readonly exited: Promise<number | null>;
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly killer: NodeJS.Timeout;

  constructor(command: string, args: string[]) {
    this.child = spawn(command, args, {
      cwd: ROOT,
      env: { PATH: process.env.PATH, HOME: home, NO_COLOR: "1", ASH_SERVER_URL: server.url, ASH_API_KEY: server.apiKey, SHELL: "/bin/sh" },
    });
    this.child.stdout.on("data", (d) => (this.stdout += d));
    this.child.stderr.on("data", (d) => (this.stderr += d));
    this.exited = new Promise((done) => this.child.on("close", (code) => done(code)));
    // Nothing here may outlive the test by much.
    this.killer = setTimeout(() => this.child.kill("SIGKILL"), 90_000);
    void this.exited.then(() => clearTimeout(this.killer));
  }

  static ash(args: string[]): Cli {
    return new Cli(process.execPath, ["--import", "tsx", CLI, ...args]);
  }

  /** The CLI inside a pseudo-terminal, so stdin is a TTY as in a real shell. */
  static ashInTerminal(args: string[]): Cli {
    const command = [process.execPath, "--import", "tsx", CLI, ...args].map((a) => `'${a}'`).join(" ");
    return new Cli("script", ["-qfec", command, "/dev/null"]);
  }

  write(text: string): void {
    this.child.stdin.write(text);
  }

  end(text = ""): void {
    this.child.stdin.end(text);
  }

  signal(name: NodeJS.Signals): void {
    this.child.kill(name);
  }

  /** Waits (up to 60 s) until `test` holds for the output so far. */
  async until(test: (cli: Cli) => boolean, what: string): Promise<void> {
    const deadline = Date.now() + 60_000;
    while (!test(this)) {
      if (Date.now() > deadline || this.child.exitCode !== null) {
        throw new Error(`waited for ${what}; stdout:\n${this.stdout}\nstderr:\n${this.stderr}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  sessionId(): string {
    const match = /Session ([0-9a-f-]{36}) with/.exec(this.stderr + this.stdout);
    if (!match) throw new Error(`no session id in output:\n${this.stderr}`);
    return match[1];
  }
}

async function storedEvents(sessionId: string, type: string): Promise<any[]> {
  const answer = await (await server.api(`/api/sessions/${sessionId}/events?type=${type}`)).json();
  return (answer as { events: any[] }).events;
}

const words = (text: string) => (text.match(/\bword\b/g) ?? []).length;

beforeAll(async () => {
  model = await startFakeModel();
  server = await startTestServer({ modelUrl: model.url });
  home = await mkdtemp(join(tmpdir(), "ash-chat-home-"));
  const deployed = await server.api("/api/agents", { method: "POST", json: agentUpload("pal") });
  expect(deployed.status).toBe(201);
});

afterAll(async () => {
  await server?.dispose();
  await model?.close();
  if (home) await rm(home, { recursive: true, force: true });
});

describe("ash chat", () => {
  it("sends a message given as an argument and exits", async () => {
    const cli = Cli.ash(["chat", "pal", "just this"]);
    cli.end();
    expect(await cli.exited).toBe(0);
    expect(cli.stdout).toBe("Echo: just this [turns seen: 1]\n");
    const id = cli.sessionId();
    expect(cli.stderr).toMatch(/^Session [0-9a-f-]{36} with pal\n1 turn · [\d,]+ tokens in · [\d,]+ out\n/);
    expect(cli.stderr).toContain(`Paused session ${id}; continue it with \`ash session send ${id} "…"\`.`);

    // The chat freed its sandbox, and the conversation can go on where it stopped.
    const session = (await (await server.api(`/api/sessions/${id}`)).json()) as { session: { status: string } };
    expect(session.session.status).toBe("paused");
    const next = Cli.ash(["session", "send", id, "and this"]);
    next.end();
    expect(await next.exited).toBe(0);
    expect(next.stdout).toBe("Echo: and this [turns seen: 2]\n");
  });

  it("sends each line of a pipe in order, in one session, and exits at the end of input", async () => {
    const cli = Cli.ash(["chat", "pal"]);
    cli.end("first line\n\nsecond line\n#bash echo third\n");
    expect(await cli.exited).toBe(0);
    expect(cli.stdout).toBe(
      "Echo: first line [turns seen: 1]\nEcho: second line [turns seen: 2]\nTool result: third\n",
    );
    expect(cli.stderr).toContain("⏺ Bash(echo third)");
    const sessions = (await (await server.api(`/api/sessions?agent=pal`)).json()) as { sessions: { id: string }[] };
    expect(sessions.sessions.map((s) => s.id)).toContain(cli.sessionId());
  });

  it("lists the deployed agents when the agent is unknown", async () => {
    const cli = Cli.ash(["chat", "nobody", "hello"]);
    cli.end();
    expect(await cli.exited).toBe(1);
    expect(cli.stderr).toBe('No agent named "nobody" is deployed; deployed agents: pal.\n');
  });

  it("turns Ctrl-C during a turn into an interrupt, and the chat goes on with the next line", async () => {
    const cli = Cli.ash(["chat", "pal"]);
    cli.write("#slow 30000\n");
    await cli.until((c) => c.stdout.includes("Slow answer word"), "the slow answer to start");
    cli.signal("SIGINT");
    await cli.until((c) => c.stderr.includes("Interrupted."), "the turn to be interrupted");
    cli.end("after the interrupt\n");
    expect(await cli.exited).toBe(0);

    // The slow answer stopped part-way, on a line of its own, and the next message was answered.
    const [slow, rest] = cli.stdout.split("\n", 2);
    expect(words(slow)).toBeGreaterThan(0);
    expect(words(slow)).toBeLessThan(40);
    expect(rest).toMatch(/^Echo: after the interrupt \[turns seen: \d\]$/);
    expect(cli.stderr).toContain("Interrupting the turn… (Ctrl-C again to quit)\nInterrupted.\n");

    const errors = await storedEvents(cli.sessionId(), "error");
    expect(errors.map((e) => e.data.code)).toEqual(["interrupted"]);
  });

  it("quits with 130 on a second Ctrl-C, and on Ctrl-C while waiting for input", async () => {
    const cli = Cli.ash(["chat", "pal"]);
    cli.write("#slow 30000\n");
    await cli.until((c) => c.stdout.includes("Slow answer"), "the slow answer to start");
    cli.signal("SIGINT");
    await cli.until((c) => c.stderr.includes("Interrupting"), "the interrupt notice");
    cli.signal("SIGINT");
    expect(await cli.exited).toBe(130);

    const idle = Cli.ash(["chat", "pal"]);
    await idle.until((c) => c.stderr.includes("with pal"), "the session to start");
    idle.signal("SIGINT");
    expect(await idle.exited).toBe(130);
    expect(idle.stdout).toBe("");
  });

  it("denies a tool held by --confirm-tools when stdin is a pipe, and says why", async () => {
    const cli = Cli.ash(["chat", "pal", "--confirm-tools", "Bash"]);
    cli.end("#bash touch piped.txt\n");
    expect(await cli.exited).toBe(0);
    expect(cli.stderr).toContain("Denied Bash: this chat does not read from a terminal, so nobody can confirm it.");
    const id = cli.sessionId();
    const [decision] = await storedEvents(id, "tool_decision");
    expect(decision.data).toMatchObject({ decision: "deny" });
    const [result] = await storedEvents(id, "tool_result");
    expect(result.data.is_error).toBe(true);
    expect((await server.api(`/api/sessions/${id}/files/piped.txt?format=json`)).status).toBe(404);
    const bad = Cli.ash(["chat", "pal", "--confirm-tools", " , ", "hi"]);
    bad.end();
    expect(await bad.exited).toBe(2);
    expect(bad.stderr).toContain("--confirm-tools");
  });

  it.skipIf(scriptSkip)("in a terminal: asks y/N before a held tool runs; y runs it, anything else denies it", async () => {
    const cli = Cli.ashInTerminal(["chat", "pal", "--confirm-tools", "Bash"]);
    const prompts = () => cli.stdout.split("› ").length - 1;
    const questions = () => cli.stdout.split("[y/N]").length - 1;
    await cli.until(() => prompts() >= 1, "the first prompt");
    cli.write("#bash echo yes-ran > yes.txt && cat yes.txt\r");
    await cli.until(() => questions() >= 1, "the question");
    expect(cli.stdout).toMatch(/Allow\S* Bash\(echo yes-ran > yes\.txt && cat yes\.txt\)\?/);
    expect(cli.stdout).toContain('input: {"command":"echo yes-ran > yes.txt && cat yes.txt"');
    cli.write("y\r");
    await cli.until((c) => c.stdout.includes("Tool result: yes-ran") && prompts() >= 2, "the allowed tool's result and a new prompt");

    cli.write("#bash touch no.txt\r");
    await cli.until(() => questions() >= 2, "the second question");
    cli.write("n\r");
    await cli.until((c) => c.stdout.includes("denied: The user denied this tool use.") && prompts() >= 3, "the denial and a new prompt");
    cli.write("\u0004");
    expect(await cli.exited).toBe(0);

    const id = cli.sessionId();
    expect((await storedEvents(id, "tool_decision")).map((e) => e.data.decision)).toEqual(["allow", "deny"]);
    expect((await server.api(`/api/sessions/${id}/files/yes.txt?format=json`)).status).toBe(200);
    expect((await server.api(`/api/sessions/${id}/files/no.txt?format=json`)).status).toBe(404);
  });

  it.skipIf(scriptSkip)("in a terminal: prompts, answers, interrupts on ^C, and quits on ^D", async () => {
    const cli = Cli.ashInTerminal(["chat", "pal"]);
    const prompts = () => cli.stdout.split("› ").length - 1;
    await cli.until(() => prompts() >= 1, "the first prompt");
    cli.write("hello terminal\r");
    await cli.until((c) => c.stdout.includes("Echo: hello terminal [turns seen: 1]") && prompts() >= 2, "the answer and a new prompt");

    cli.write("#slow 30000\r");
    await cli.until((c) => c.stdout.includes("Slow answer word"), "the slow answer to start");
    cli.write("\u0003");
    await cli.until((c) => c.stdout.includes("Interrupted.") && prompts() >= 3, "the interrupt and a new prompt");
    const slowLine = cli.stdout.slice(cli.stdout.indexOf("Slow answer")).split("\n")[0];
    expect(words(slowLine)).toBeLessThan(40);

    cli.write("\u0004");
    expect(await cli.exited).toBe(0);
    const errors = await storedEvents(cli.sessionId(), "error");
    expect(errors.map((e) => e.data.code)).toEqual(["interrupted"]);
  });
});

describe("ash session send and Ctrl-C", () => {
  it("interrupts the turn on the server and exits with 130", async () => {
    const created = (await (await server.api("/api/sessions", { method: "POST", json: { agent: "pal" } })).json()) as { session: { id: string } };
    const id = created.session.id;
    const cli = Cli.ash(["session", "send", id, "#slow 30000"]);
    cli.end();
    await cli.until((c) => c.stdout.includes("Slow answer word"), "the slow answer to start");
    cli.signal("SIGINT");
    expect(await cli.exited).toBe(130);
    expect(cli.stderr).toContain("Interrupted.");
    expect((await storedEvents(id, "error")).map((e) => e.data.code)).toEqual(["interrupted"]);

    // The session takes the next message at once: the interrupted turn is over.
    const next = Cli.ash(["session", "send", id, "still there?"]);
    next.end();
    expect(await next.exited).toBe(0);
    expect(next.stdout).toMatch(/^Echo: still there\? \[turns seen: \d\]\n$/);
  });
});
