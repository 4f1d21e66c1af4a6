/**
 * The README's quick start, run line by line as a user types it:
 * `ash start`, `ash deploy ./my-agent`, `ash session create my-agent`,
 * `ash session send <session-id> "…"`, `ash chat my-agent`.
 *
 * What differs from a user's machine, and why:
 * - `npm install -g @ash-ai/cli` is this checkout's built CLI on PATH (the
 *   package is not fetched from a registry in tests);
 * - the image is pulled from a private registry on 127.0.0.1 named by
 *   ASH_IMAGE, since tests reach no outside host;
 * - the model is the fake one, in a container beside the server
 *   (ANTHROPIC_BASE_URL), and `<session-id>` is the id `session create` printed;
 * - `ash chat` reads its one line from a pipe.
 *
 * - it manages its own container (ASH_CONTAINER_NAME), so a user's ash-server
 *   on this machine is left alone; when that server holds port 4100, `ash start`
 *   gets `--port` with a free one (the only line changed).
 *
 * Needs `docker info` and ASH_TEST_IMAGE.
 */
import { execFile, execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../helpers/ports";
import { dockerImageProblem, skipUnlessReady } from "../helpers/requirements";

const root = resolve(import.meta.dirname, "../..");
const image = process.env.ASH_TEST_IMAGE;
const CONTAINER = "ash-e2e-quickstart";

function run(cmd: string, args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string; input?: string; timeoutMs?: number } = {}) {
  return new Promise<{ code: number; stdout: string; stderr: string }>((done) => {
    const child = execFile(cmd, args, { env: options.env, cwd: options.cwd, timeout: options.timeoutMs ?? 300_000, maxBuffer: 64 * 1024 * 1024 }, (error: any, stdout, stderr) =>
      done({ code: error ? (typeof error.code === "number" ? error.code : 1) : 0, stdout: String(stdout), stderr: String(stderr) }),
    );
    if (options.input !== undefined) child.stdin!.end(options.input);
  });
}

async function portIsFree(port: number): Promise<boolean> {
  return new Promise((done) => {
    const probe = createServer();
    probe.once("error", () => done(false));
    probe.listen(port, "0.0.0.0", () => probe.close(() => done(true)));
  });
}

function quickStartProblem(): string | undefined {
  const docker = dockerImageProblem(image);
  if (docker) return docker;
  try {
    execFileSync("docker", ["inspect", CONTAINER], { stdio: "ignore" });
    return `a ${CONTAINER} container already exists on this machine`;
  } catch {
    // good: none
  }
  if (!existsSync(join(root, "dist/cli/main.mjs"))) return "the CLI is not built (npm run build)";
  return undefined;
}

const reason = skipUnlessReady("The README quick start test", quickStartProblem());

/** The lines of the README's "Quick start" shell block, comments removed. */
async function quickStartLines(): Promise<string[]> {
  const readme = await readFile(join(root, "README.md"), "utf8");
  const section = readme.slice(readme.indexOf("## Quick start"));
  const block = /```sh\n([\s\S]*?)```/.exec(section)![1]!;
  return block
    .split("\n")
    .map((line) => line.replace(/\s+#.*$/, "").trim())
    .filter(Boolean);
}

describe.skipIf(reason)("the README quick start, as written", () => {
  let home: string;
  let work: string;
  let bin: string;
  let registryPort: number;
  let registryDir: string;
  let pulled: string;
  let modelContainer: string;
  let modelIp: string;
  const env: Record<string, string> = {};
  let port = 4100;

  beforeAll(async () => {
    if (!(await portIsFree(4100))) port = await freePort();
    home = await mkdtemp(join(tmpdir(), "ash-quickstart-home-"));
    work = await mkdtemp(join(tmpdir(), "ash-quickstart-work-"));
    bin = join(home, "bin");
    await mkdir(bin);
    // `npm install -g @ash-ai/cli` puts `ash` on PATH: the built CLI of this checkout.
    await writeFile(join(bin, "ash"), `#!/bin/sh\nexec "${process.execPath}" "${join(root, "bin/ash.mjs")}" "$@"\n`);
    await chmod(join(bin, "ash"), 0o755);
    await mkdir(join(work, "my-agent"));
    await writeFile(join(work, "my-agent", "CLAUDE.md"), "You are my agent. Answer briefly.\n");
    await writeFile(join(work, "my-agent", "notes.txt"), "some notes\n");

    registryPort = await freePort();
    registryDir = await mkdtemp(join(tmpdir(), "ash-quickstart-registry-"));
    const regEnv = { ...process.env, ASH_REGISTRY_PORT: String(registryPort), ASH_REGISTRY_DIR: registryDir };
    expect((await run("sh", [join(root, "infra/registry.sh"), "start"], { env: regEnv })).code).toBe(0);
    pulled = `127.0.0.1:${registryPort}/ash:quickstart`;
    expect((await run("docker", ["tag", image!, pulled])).code).toBe(0);
    const push = await run("docker", ["push", pulled], { timeoutMs: 900_000 });
    expect(push.code, push.stderr).toBe(0);
    expect((await run("docker", ["rmi", pulled])).code).toBe(0);

    const started = await run("docker", [
      "run", "-d", "--label", "ash.test=1", "--entrypoint", "node",
      "-v", `${join(root, "tests/fake-model/fake-model.mjs")}:/fake/fake-model.mjs:ro`,
      image!, "/fake/fake-model.mjs", "--port", "8080", "--host", "0.0.0.0",
    ]);
    expect(started.code, started.stderr).toBe(0);
    modelContainer = started.stdout.trim();
    modelIp = (await run("docker", ["inspect", "-f", "{{.NetworkSettings.IPAddress}}", modelContainer])).stdout.trim();

    Object.assign(env, {
      PATH: `${bin}:${process.env.PATH}`,
      HOME: home,
      NO_COLOR: "1",
      ASH_IMAGE: pulled,
      ASH_CONTAINER_NAME: CONTAINER,
      ANTHROPIC_BASE_URL: `http://${modelIp}:8080`,
    });
  }, 1_200_000);

  afterAll(async () => {
    if (home) await run("ash", ["stop"], { env: { ...process.env, ...env } });
    if (modelContainer) await run("docker", ["rm", "-f", modelContainer]);
    if (pulled) await run("docker", ["rmi", pulled]);
    if (registryDir) {
      await run("sh", [join(root, "infra/registry.sh"), "stop"], { env: { ...process.env, ASH_REGISTRY_PORT: String(registryPort), ASH_REGISTRY_DIR: registryDir } });
      await rm(registryDir, { recursive: true, force: true });
    }
    if (home) await rm(home, { recursive: true, force: true });
    if (work) await rm(work, { recursive: true, force: true });
  }, 300_000);

  it("works line by line", async () => {
    const lines = await quickStartLines();
    expect(lines[0]).toBe("npm install -g @ash-ai/cli");
    let sessionId = "";
    const outputs: string[] = [];
    for (const line of lines.slice(1)) {
      const exported = /^export (\w+)=(.*)$/.exec(line);
      if (exported) {
        env[exported[1]!] = exported[2]!;
        continue;
      }
      let command = line.replace("<session-id>", sessionId);
      if (command === "ash start" && port !== 4100) command = `ash start --port ${port}`;
      const input = command.startsWith("ash chat") ? "hello from the pipe\n" : undefined;
      const result = await run("bash", ["-c", command], { env: { ...env }, cwd: work, input, timeoutMs: 600_000 });
      expect(result.code, `${command}\n${result.stdout}\n${result.stderr}`).toBe(0);
      outputs.push(result.stdout + result.stderr);
      if (command.startsWith("ash session create")) {
        sessionId = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/.exec(result.stdout)?.[0] ?? "";
        expect(sessionId).not.toBe("");
      }
    }
    const all = outputs.join("\n");
    expect(all).toContain(`http://localhost:${port}`);
    expect(all).toContain("Echo: Summarize the files you have");
    expect(all).toContain("Echo: hello from the pipe");
    // The image really came from the registry.
    expect((await run("docker", ["image", "inspect", pulled])).code).toBe(0);
  });
});
