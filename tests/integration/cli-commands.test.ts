import { spawn } from "node:child_process";
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startFakeModel } from "../fake-model/fake-model.mjs";
import { freePort } from "../helpers/ports";
import { startTestServer, type TestServer } from "../helpers/server";

/**
 * The CLI as a user runs it: each command is a child process (`node --import tsx
 * src/cli/main.ts …`) against the real server, with only the model faked.
 */

const ROOT = resolve(import.meta.dirname, "../..");
const CLI = join(ROOT, "src/cli/main.ts");

let model: Awaited<ReturnType<typeof startFakeModel>>;
let server: TestServer;
let home: string;
let work: string;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  /** stdout as bytes, for binary output. */
  bytes: Buffer;
}

/** Runs `ash <args>`; `env` values of `undefined` remove the variable. Killed after 60 s. */
function ash(args: string[], options: { env?: Record<string, string | undefined>; input?: string } = {}): Promise<Run> {
  const env: Record<string, string | undefined> = {
    PATH: process.env.PATH,
    HOME: home,
    NO_COLOR: "1",
    ASH_SERVER_URL: server.url,
    ASH_API_KEY: server.apiKey,
    ...options.env,
  };
  for (const key of Object.keys(env)) if (env[key] === undefined) delete env[key];
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, ["--import", "tsx", CLI, ...args], { cwd: ROOT, env: env as NodeJS.ProcessEnv });
    const out: Buffer[] = [];
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => out.push(d));
    child.stderr.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      fail(new Error(`ash ${args.join(" ")} did not finish:\n${Buffer.concat(out)}\n${stderr}`));
    }, 60_000);
    child.on("close", (code) => {
      clearTimeout(timer);
      const bytes = Buffer.concat(out);
      done({ code, stdout: bytes.toString("utf8"), stderr, bytes });
    });
    child.stdin.end(options.input ?? "");
  });
}

async function agentNames(): Promise<string[]> {
  const answer = (await (await server.api("/api/agents")).json()) as { agents: { name: string }[] };
  return answer.agents.map((a) => a.name).sort();
}

/** Lines of a sentence printed as the error: exactly one, no stack trace. */
function oneSentence(stderr: string): string {
  const lines = stderr.trim().split("\n");
  expect(lines).toHaveLength(1);
  expect(stderr).not.toMatch(/\n\s+at /);
  return lines[0];
}

async function makeAgentFolder(name: string, files: Record<string, string>): Promise<string> {
  const dir = join(work, name);
  for (const [path, content] of Object.entries(files)) {
    await mkdir(join(dir, path, ".."), { recursive: true });
    await writeFile(join(dir, path), content);
  }
  return dir;
}

beforeAll(async () => {
  model = await startFakeModel();
  server = await startTestServer({ modelUrl: model.url });
  home = await mkdtemp(join(tmpdir(), "ash-cli-home-"));
  work = await mkdtemp(join(tmpdir(), "ash-cli-work-"));
});

afterAll(async () => {
  await server?.dispose();
  await model?.close();
  if (home) await rm(home, { recursive: true, force: true });
  if (work) await rm(work, { recursive: true, force: true });
});

describe("ash health", () => {
  it("says the server is ok, with its version, and --json gives the server's answer", async () => {
    const text = await ash(["health"]);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(new RegExp(`^ok · Ash \\d+\\.\\d+\\.\\d+ at ${server.url.replace(/\./g, "\\.")} · up `));
    expect(text.stdout).toMatch(/database: sqlite/);
    expect(text.stdout).toMatch(/isolation: bwrap\+seccomp/);

    const json = await ash(["health", "--json"]);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({ status: "ok", database: "sqlite", limits: { mode: expect.any(String) } });
  });
});

describe("ash deploy", () => {
  it("uploads the folder without node_modules, .git and .env, whose variables become the agent's environment with the -e flags", async () => {
    const dir = await makeAgentFolder("support-bot", {
      "CLAUDE.md": "You help with support questions.",
      ".claude/settings.json": "{}",
      "data/prices.csv": "plan,price\nbasic,10\n",
      "tools/run.sh": "#!/bin/sh\necho tool\n",
      ".env": "# the agent's secrets\nAPI_TOKEN=from-dotenv\nREGION='eu west'\n",
      "node_modules/dep/index.js": "module.exports = 1;",
      ".git/HEAD": "ref: refs/heads/main\n",
    });
    await chmod(join(dir, "tools/run.sh"), 0o755);

    const run = await ash(["deploy", dir, "-e", "EXTRA=from-flag", "--env", "REGION=us-east"]);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^Deployed support-bot version 1 \(4 files, [\d.]+ (B|kB)\)\.\n$/);
    expect(run.stderr).toContain("Read .env as the agent's environment (2 variables, not uploaded as files).");

    const stored = join(server.dataDir, "agents/support-bot");
    const top = (await readdir(stored)).sort();
    expect(top).toEqual([".claude", "CLAUDE.md", "data", "tools"]);
    expect(await readFile(join(stored, "data/prices.csv"), "utf8")).toBe("plan,price\nbasic,10\n");

    const info = await ash(["agent", "info", "support-bot", "--json"]);
    expect(JSON.parse(info.stdout).env).toEqual({ API_TOKEN: "***", REGION: "***", EXTRA: "***" });

    // The agent's own tools see the variables; -e won over .env for REGION.
    const session = (await ash(["session", "create", "support-bot"])).stdout.trim();
    const send = await ash(["session", "send", session, '#bash printf "%s|%s|%s" "$API_TOKEN" "$REGION" "$EXTRA"']);
    expect(send.code).toBe(0);
    expect(send.stdout).toContain("Tool result: from-dotenv|us-east|from-flag");
    const exec = await ash(["session", "exec", session, "test -x tools/run.sh && ./tools/run.sh"]);
    expect(exec.code).toBe(0);
    expect(exec.stdout).toBe("tool\n");

    const again = await ash(["deploy", dir, "--name", "support-bot"]);
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/^Deployed support-bot version 2 /);
  });

  it("refuses a folder without CLAUDE.md, a bad -e, a bad name and a symlink out, and deploys nothing", async () => {
    const before = await agentNames();
    const noPrompt = await makeAgentFolder("no-prompt", { "README.md": "hi" });
    const cases: [string[], RegExp][] = [
      [["deploy", noPrompt], /no-prompt has no CLAUDE\.md; an agent folder needs one, it is the agent's system prompt\.$/],
      [["deploy", join(work, "missing")], /missing does not exist\.$/],
      [["deploy", noPrompt, "-e", "NOEQUALS"], /^"NOEQUALS" is not KEY=VALUE; write it like -e API_TOKEN=abc123\.$/],
      [["deploy", noPrompt, "--name", "bad name!"], /^"bad name!" is not a valid agent name; use letters, digits, - and _ \(up to 64\)\.$/],
      [["deploy", join(noPrompt, "README.md")], /README\.md is a file, and an agent is a folder: give the folder that holds CLAUDE\.md/],
    ];
    const linked = await makeAgentFolder("linked", { "CLAUDE.md": "x" });
    await writeFile(join(work, "outside-secret.txt"), "secret");
    const { symlink } = await import("node:fs/promises");
    await symlink(join(work, "outside-secret.txt"), join(linked, "secret.txt"));
    cases.push([["deploy", linked], /secret\.txt is a symlink to .*outside-secret\.txt, outside the agent folder; copy what it points to into the folder instead\.$/]);

    for (const [args, sentence] of cases) {
      const run = await ash(args);
      expect(run.code, args.join(" ")).toBe(2);
      expect(run.stdout).toBe("");
      expect(oneSentence(run.stderr)).toMatch(sentence);
    }
    expect(await agentNames()).toEqual(before);
  });
});

describe("ash agent", () => {
  it("lists, shows and deletes agents, and names the deployed ones for an unknown name", async () => {
    const dir = await makeAgentFolder("lister", { "CLAUDE.md": "x" });
    expect((await ash(["deploy", dir])).code).toBe(0);

    const list = await ash(["agent", "list"]);
    expect(list.code).toBe(0);
    expect(list.stdout.split("\n")[0]).toMatch(/^NAME\s+VERSION\s+UPDATED\s+ENV$/);
    expect(list.stdout).toMatch(/^lister\s+1\s+just now/m);

    const info = await ash(["agent", "info", "lister"]);
    expect(info.stdout).toMatch(/^Name:\s+lister$/m);
    expect(info.stdout).toMatch(/^Version:\s+1$/m);

    const unknown = await ash(["agent", "info", "nobody"]);
    expect(unknown.code).toBe(1);
    const names = (await agentNames()).join(", ");
    expect(oneSentence(unknown.stderr)).toBe(`No agent named "nobody" is deployed; deployed agents: ${names}.`);

    const del = await ash(["agent", "delete", "lister"]);
    expect(del.code).toBe(0);
    expect(del.stdout).toBe("Deleted agent lister.\n");
    expect(await agentNames()).not.toContain("lister");
    const again = await ash(["agent", "delete", "lister"]);
    expect(again.code).toBe(1);
    expect(oneSentence(again.stderr)).toMatch(/^No agent named "lister" is deployed; deployed agents: /);
  });
});

describe("ash session", () => {
  let session: string;
  const BLOB = Buffer.from([0, 1, 2, 0xff, 0xfe, 10, 13, 0x80]);

  beforeAll(async () => {
    const dir = await makeAgentFolder("keeper", { "CLAUDE.md": "Be brief.", "notes/todo.txt": "buy milk\n" });
    await writeFile(join(dir, "notes/blob.bin"), BLOB);
    expect((await ash(["deploy", dir])).code).toBe(0);
  });

  it("creates a session and prints only its id on stdout", async () => {
    const run = await ash(["session", "create", "keeper"]);
    expect(run.code).toBe(0);
    session = run.stdout.trim();
    expect(run.stdout).toBe(session + "\n");
    expect(session).toMatch(/^[0-9a-f-]{36}$/);
    expect(run.stderr).toContain(`ash session send ${session}`);
  });

  it("streams the answer to stdout once, tool calls as one line each and a summary on stderr", async () => {
    const hello = await ash(["session", "send", session, "hello there"]);
    expect(hello.code).toBe(0);
    expect(hello.stdout).toBe("Echo: hello there [turns seen: 1]\n");
    expect(hello.stderr).toMatch(/^1 turn · [\d,]+ tokens in · [\d,]+ out\n$/);

    const tool = await ash(["session", "send", session, "#bash echo from-the-sandbox"]);
    expect(tool.code).toBe(0);
    expect(tool.stdout).toBe("Tool result: from-the-sandbox\n");
    expect(tool.stderr).toMatch(/^⏺ Bash\(echo from-the-sandbox\)\n2 turns · [\d,]+ tokens in · [\d,]+ out\n$/);
  });

  it("prints raw events as JSON lines with --json, ids rising, ending with done", async () => {
    const run = await ash(["session", "send", session, "as json", "--json"]);
    expect(run.code).toBe(0);
    const events = run.stdout.trim().split("\n").map((l) => JSON.parse(l));
    expect(events[0].type).toBe("session_start");
    expect(events.at(-1)).toEqual({ id: expect.any(Number), type: "done", data: { sessionId: session } });
    const ids = events.map((e) => e.id);
    expect(ids).toEqual([...ids].sort((a, b) => a - b));
    expect(new Set(ids).size).toBe(ids.length);
    const text = events.filter((e) => e.type === "text_delta").map((e) => e.data.delta).join("");
    expect(text).toBe("Echo: as json [turns seen: 3]");
    expect(events.find((e) => e.type === "turn_complete").data.numTurns).toBe(1);
  });

  it("lists, shows, and reads history, files and command results", async () => {
    const list = await ash(["session", "list", "--agent", "keeper"]);
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(new RegExp(`^${session}\\s+keeper\\s+active\\s`, "m"));

    const info = await ash(["session", "info", session]);
    expect(info.stdout).toMatch(new RegExp(`^Id:\\s+${session}$`, "m"));
    expect(info.stdout).toMatch(/^Status:\s+active$/m);

    const history = await ash(["session", "history", session]);
    expect(history.code).toBe(0);
    expect(history.stdout).toMatch(/── user · #\d+ · .*\nhello there\n── assistant · #\d+ · .*\nEcho: hello there \[turns seen: 1\]\n/);
    expect(history.stdout).toContain("⏺ Bash(echo from-the-sandbox)");

    const files = await ash(["session", "files", session]);
    expect(files.stdout).toMatch(/^PATH\s+SIZE\s+MODIFIED$/m);
    expect(files.stdout).toMatch(/^notes\/todo\.txt\s+9\s/m);
    const folder = await ash(["session", "files", session, "notes"]);
    expect(folder.stdout).toMatch(/^notes\/todo\.txt/m);
    expect(folder.stdout).not.toContain("CLAUDE.md");
    const file = await ash(["session", "files", session, "notes/todo.txt"]);
    expect(file.stdout).toBe("buy milk\n");
    const binary = await ash(["session", "files", session, "notes/blob.bin"]);
    expect(binary.code).toBe(0);
    expect(binary.bytes.equals(BLOB)).toBe(true);
    const missing = await ash(["session", "files", session, "nope.txt"]);
    expect(missing.code).toBe(1);
    expect(oneSentence(missing.stderr)).toBe(`The workspace of session ${session} has no file or folder "nope.txt".`);

    const exec = await ash(["session", "exec", session, "echo out; echo err >&2; exit 7"]);
    expect(exec).toMatchObject({ code: 7, stdout: "out\n", stderr: "err\n" });
  });

  it("pauses, resumes, stops and ends; an ended session refuses messages with the server's sentence", async () => {
    const other = (await ash(["session", "create", "keeper"])).stdout.trim();
    expect((await ash(["session", "pause", other])).stdout).toBe(`Session ${other} is paused.\n`);
    // A message to a paused session resumes it.
    const send = await ash(["session", "send", other, "wake up"]);
    expect(send.stdout).toBe("Echo: wake up [turns seen: 1]\n");
    expect((await ash(["session", "stop", other])).stdout).toBe(`Session ${other} is stopped.\n`);
    expect((await ash(["session", "resume", other])).stdout).toBe(`Session ${other} is active.\n`);
    expect((await ash(["session", "end", other])).stdout).toBe(`Session ${other} is ended.\n`);

    const late = await ash(["session", "send", other, "anyone?"]);
    expect(late.code).toBe(1);
    expect(late.stdout).toBe("");
    expect(oneSentence(late.stderr)).toMatch(/ended/);
    const again = await ash(["session", "resume", other]);
    expect(again.code).toBe(1);
    expect(oneSentence(again.stderr)).toMatch(/ended/);
  });

  it("names an unknown session and an unknown agent", async () => {
    const info = await ash(["session", "info", "no-such-session"]);
    expect(info.code).toBe(1);
    expect(oneSentence(info.stderr)).toBe('No session with id "no-such-session"; list them with `ash session list`.');
    const send = await ash(["session", "send", "no-such-session", "hi"]);
    expect(oneSentence(send.stderr)).toBe('No session with id "no-such-session"; list them with `ash session list`.');

    const create = await ash(["session", "create", "ghost"]);
    expect(create.code).toBe(1);
    expect(oneSentence(create.stderr)).toBe(`No agent named "ghost" is deployed; deployed agents: ${(await agentNames()).join(", ")}.`);
  });
});

describe("finding the server", () => {
  it("says how to start a server when none answers", async () => {
    const url = `http://127.0.0.1:${await freePort()}`;
    for (const args of [["health"], ["agent", "list"], ["session", "send", "x", "hi"], ["chat", "keeper", "hi"]]) {
      const run = await ash([...args, "--url", url]);
      expect(run.code, args.join(" ")).toBe(1);
      expect(oneSentence(run.stderr)).toBe(`No Ash server answers at ${url}; start it with \`ash start\`.`);
    }
  });

  it("says how to give the key when it is wrong or missing", async () => {
    const wrong = await ash(["agent", "list", "--api-key", "not-the-key"]);
    expect(wrong.code).toBe(1);
    expect(oneSentence(wrong.stderr)).toBe(
      `The server at ${server.url} rejected the API key; pass it with \`--api-key\`, set \`ASH_API_KEY\`, or run \`ash start\`, which saves it to ~/.ash/config.json.`,
    );
    const missing = await ash(["agent", "list"], { env: { ASH_API_KEY: undefined } });
    expect(missing.code).toBe(1);
    expect(oneSentence(missing.stderr)).toMatch(new RegExp(`^The server at ${server.url.replace(/\./g, "\\.")} needs an API key; pass it with \`--api-key\``));
  });

  it("uses ~/.ash/config.json when no flag or variable is given, and flags over variables over the file", async () => {
    const deadUrl = `http://127.0.0.1:${await freePort()}`;
    await mkdir(join(home, ".ash"), { recursive: true });
    await writeFile(join(home, ".ash/config.json"), JSON.stringify({ url: server.url, apiKey: server.apiKey }));
    try {
      const fromFile = await ash(["agent", "list", "--json"], { env: { ASH_SERVER_URL: undefined, ASH_API_KEY: undefined } });
      expect(fromFile.code).toBe(0);
      expect(JSON.parse(fromFile.stdout).map((a: { name: string }) => a.name).sort()).toEqual(await agentNames());

      const envWins = await ash(["health"], { env: { ASH_SERVER_URL: deadUrl, ASH_API_KEY: undefined } });
      expect(oneSentence(envWins.stderr)).toBe(`No Ash server answers at ${deadUrl}; start it with \`ash start\`.`);

      const flagWins = await ash(["health", "--url", server.url], { env: { ASH_SERVER_URL: deadUrl } });
      expect(flagWins.code).toBe(0);

      const keyFlagWins = await ash(["agent", "list", "--api-key", "wrong-key"], { env: { ASH_SERVER_URL: undefined, ASH_API_KEY: undefined } });
      expect(oneSentence(keyFlagWins.stderr)).toMatch(/rejected the API key/);
    } finally {
      await rm(join(home, ".ash"), { recursive: true, force: true });
    }
  });
});
