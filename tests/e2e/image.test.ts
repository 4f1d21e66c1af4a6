/**
 * The container image, built the way CI builds it (infra/build-image.sh) and run
 * the way the docs tell users to run it.
 *
 * Needs a Docker engine (`infra/docker-engine.sh` starts one); without one the
 * whole file is skipped. `ASH_TEST_IMAGE=<tag>` tests an image that already
 * exists instead of building `ash:e2e-test`.
 */
import { execFile, execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { skipUnlessReady } from "../helpers/requirements";
import { freePort } from "../helpers/ports";

const repoRoot = resolve(import.meta.dirname, "../..");
const label = "ash.test=image";

function dockerAnswers(): boolean {
  try {
    execFileSync("docker", ["info"], { stdio: "ignore", timeout: 20_000 });
    return true;
  } catch {
    return false;
  }
}

const skipReason = skipUnlessReady("The image tests", dockerAnswers() ? undefined : "no Docker engine answers `docker info` (start one with infra/docker-engine.sh)");

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(command: string, args: string[], timeoutMs = 120_000): Promise<Run> {
  return new Promise((done) => {
    execFile(command, args, { cwd: repoRoot, timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 }, (error: any, stdout, stderr) => {
      const code = error ? (typeof error.code === "number" ? error.code : 1) : 0;
      done({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

async function docker(args: string[], timeoutMs?: number): Promise<Run> {
  return run("docker", args, timeoutMs);
}

/** `docker run --rm` of the image with the given extra flags and command. */
function runInImage(image: string, flags: string[], command: string[]): Promise<Run> {
  return docker(["run", "--rm", "--label", label, ...flags, image, ...command]);
}

/** The flags the deployment docs list, plus what sandboxes need on hosts where --privileged fails. */
function documentedFlags(dataDir: string, port: number): string[] {
  return [
    "--init",
    "--cgroupns=host",
    "-v", `${dataDir}:/data`,
    "-p", `127.0.0.1:${port}:4100`,
    "--cap-add", "SYS_ADMIN",
    "--security-opt", "seccomp=unconfined",
    "--security-opt", "apparmor=unconfined",
    "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
  ];
}

const sandboxFlags = ["--cap-add", "SYS_ADMIN", "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined"];
const cgroupFlags = ["--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw"];

async function removeTestContainers(): Promise<void> {
  const listed = await docker(["ps", "-aq", "--filter", `label=${label}`]);
  const ids = listed.stdout.split(/\s+/).filter(Boolean);
  if (ids.length > 0) await docker(["rm", "-f", "-v", ...ids]);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls GET /health until it answers 200 (bounded), returning the last answer. */
async function waitForHealth(port: number, attempts = 240): Promise<{ status: number; body: any }> {
  let last = { status: 0, body: undefined as any };
  for (let i = 0; i < attempts; i++) {
    try {
      const response = await fetch(`http://127.0.0.1:${port}/health`, { signal: AbortSignal.timeout(2000) });
      last = { status: response.status, body: await response.json().catch(() => undefined) };
      if (response.status === 200) return last;
    } catch {
      // Not listening yet.
    }
    await sleep(250);
  }
  return last;
}

describe.skipIf(skipReason)("container image", () => {
  const image = process.env.ASH_TEST_IMAGE || "ash:e2e-test";
  let dataDir: string;

  beforeAll(async () => {
    await removeTestContainers();
    dataDir = await mkdtemp(join(tmpdir(), "ash-image-test-"));
    if (process.env.ASH_TEST_IMAGE) {
      const present = await docker(["image", "inspect", image]);
      if (present.code !== 0) throw new Error(`ASH_TEST_IMAGE=${image} does not exist`);
      return;
    }
    // Reuses the base image, npm cache and layer cache of earlier builds.
    const built = await run("sh", ["infra/build-image.sh", image], 45 * 60_000);
    if (built.code !== 0) throw new Error(`infra/build-image.sh failed:\n${built.stdout}\n${built.stderr}`);
  }, 50 * 60_000);

  afterAll(async () => {
    await removeTestContainers();
    // The server writes /data as root; a non-root test run may not be able to delete it all.
    if (dataDir) await rm(dataDir, { recursive: true, force: true }).catch(() => {});
  });

  it("declares the port, data volume, environment, health check and entry point", async () => {
    const inspected = await docker(["image", "inspect", image]);
    expect(inspected.code).toBe(0);
    const config = JSON.parse(inspected.stdout)[0].Config;
    expect(Object.keys(config.ExposedPorts ?? {})).toEqual(["4100/tcp"]);
    expect(Object.keys(config.Volumes ?? {})).toEqual(["/data"]);
    expect(config.Env).toEqual(expect.arrayContaining(["ASH_DATA_DIR=/data", "ASH_PORT=4100", "ASH_HOST=0.0.0.0"]));
    expect(config.Healthcheck?.Test?.join(" ")).toContain("/health");
    expect(config.Entrypoint).toEqual(["/usr/local/bin/entrypoint.sh"]);
    expect(config.Cmd).toEqual(["node", "/app/bin/ash-server.mjs"]);
    // The server runs as root (it builds namespaces and cgroups); sandboxes do not.
    expect(config.User || "root").toBe("root");
  });

  it("has the sandbox user ash-sandbox with uid and gid 10001", async () => {
    const result = await runInImage(image, ["--entrypoint", "id"], ["ash-sandbox"]);
    expect(result.code).toBe(0);
    expect(result.stdout.trim()).toBe("uid=10001(ash-sandbox) gid=10001(ash-sandbox) groups=10001(ash-sandbox)");
  });

  it("ships bubblewrap, setpriv, prlimit and ps", async () => {
    const result = await runInImage(image, ["--entrypoint", "sh"], ["-c", "bwrap --version && setpriv --version && prlimit --version && ps --version"]);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^bubblewrap \d+\.\d+/m);
    expect(result.stdout).toMatch(/^setpriv from util-linux/m);
    expect(result.stdout).toMatch(/^prlimit from util-linux/m);
    expect(result.stdout).toMatch(/procps/);
  });

  it("runs a command as ash-sandbox in its own PID namespace with the documented capabilities", async () => {
    const script = [
      "readlink /proc/self/ns/pid;",
      "bwrap --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp --unshare-pid --die-with-parent",
      "setpriv --reuid 10001 --regid 10001 --clear-groups --",
      "sh -c 'id -u; readlink /proc/self/ns/pid; touch /usr/probe 2>/dev/null && echo writable || echo read-only'",
    ].join(" ");
    const result = await runInImage(image, [...sandboxFlags, "--entrypoint", "sh"], ["-c", script]);
    expect(result.stderr).toBe("");
    const [outerPidNs, uid, innerPidNs, rootFs] = result.stdout.trim().split("\n");
    expect(uid).toBe("10001");
    expect(innerPidNs).toMatch(/^pid:\[\d+\]$/);
    expect(innerPidNs).not.toBe(outerPidNs);
    expect(rootFs).toBe("read-only");
  });

  it("carries the Agent SDK's native Claude Code CLI, executable", async () => {
    const script = [
      "const { createRequire } = require('node:module');",
      "const fs = require('node:fs');",
      "const cli = createRequire('/app/package.json').resolve(`@anthropic-ai/claude-agent-sdk-linux-${process.arch}/claude`);",
      "fs.accessSync(cli, fs.constants.X_OK);",
      "console.log(cli);",
      "console.log(require('node:child_process').execFileSync(cli, ['--version'], { encoding: 'utf8' }).trim());",
    ].join(" ");
    const result = await runInImage(image, ["-e", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1", "--entrypoint", "node"], ["-e", script]);
    expect(result.stderr).toBe("");
    const [path, version] = result.stdout.trim().split("\n");
    expect(path).toMatch(/^\/app\/node_modules\/@anthropic-ai\/claude-agent-sdk-linux-[a-z0-9]+\/claude$/);
    expect(version).toMatch(/^\d+\.\d+\.\d+ \(Claude Code\)$/);
  });

  it("has working production dependencies and nothing from the build", async () => {
    const script = [
      "node -e \"const D = require('/app/node_modules/better-sqlite3'); console.log(JSON.stringify(new D(':memory:').prepare('select 41 + 1 as x').get()))\"",
      "for p in /app/node_modules/vitest /app/node_modules/typescript /app/node_modules/unbuild /app/node_modules/.package-lock.json /app/package-lock.json /app/src /tmp/npm-cache /root/.npm; do [ -e \"$p\" ] && echo \"leftover $p\"; done",
      "command -v g++ make python3 | sed 's/^/leftover /'",
      "test -f /app/dist/server/main.mjs && echo server-built",
      "test -f /app/dist/console/index.html && echo console-built",
      "true",
    ].join("; ");
    const result = await runInImage(image, ["--entrypoint", "sh"], ["-c", script]);
    expect(result.code).toBe(0);
    const lines = result.stdout.trim().split("\n");
    expect(lines).toContain('{"x":42}');
    expect(lines).toContain("server-built");
    expect(lines).toContain("console-built");
    expect(lines.filter((l) => l.startsWith("leftover"))).toEqual([]);
  });

  it("entry point falls back to rlimits when cgroups are read-only, and execs the command", async () => {
    const result = await runInImage(image, [], ["sh", "-c", "tr '\\0' ' ' </proc/1/cmdline; echo; echo ${ASH_CGROUP_ROOT:-unset}; exit 3"]);
    expect(result.code).toBe(3);
    expect(result.stderr).toContain("ash-entrypoint: no writable cgroups: sandbox limits fall back to rlimits");
    const [pid1, cgroupRoot] = result.stdout.trim().split("\n");
    // PID 1 is the command itself: the entry point replaced itself instead of waiting as a parent.
    expect(pid1.trim()).toMatch(/^sh -c /);
    expect(cgroupRoot).toBe("unset");
  });

  it("entry point finds writable cgroups with --cgroupns=host and /sys/fs/cgroup mounted rw", async () => {
    const result = await runInImage(image, ["--init", ...sandboxFlags, ...cgroupFlags], ["sh", "-c", "echo ${ASH_CGROUP_ROOT:-unset}"]);
    expect(result.code).toBe(0);
    const modeLine = result.stderr.split("\n").find((l) => l.startsWith("ash-entrypoint: "));
    expect(modeLine).toMatch(/cgroup v2 delegated|cgroup v1 \(memory, pids\) is writable/);
    if (modeLine!.includes("cgroup v2 delegated")) {
      expect(result.stdout.trim()).toMatch(/^\/sys\/fs\/cgroup\/.*ash-sandboxes$/);
    } else {
      expect(result.stdout.trim()).toBe("unset");
    }
  });

  it("started with the documented flags, becomes healthy, keeps its data in /data and stops cleanly", async () => {
    const port = await freePort();
    const started = await docker([
      "run", "-d", "--label", label,
      ...documentedFlags(dataDir, port),
      "-e", "ASH_API_KEY=image-test-key-0123456789",
      "-e", "ANTHROPIC_API_KEY=sk-ant-image-test",
      image,
    ]);
    expect(started.stderr).toBe("");
    const id = started.stdout.trim();

    const health = await waitForHealth(port);
    if (health.status !== 200) {
      const logs = await docker(["logs", id]);
      throw new Error(`GET /health answered ${health.status}; container logs:\n${logs.stdout}\n${logs.stderr}`);
    }
    expect(health.body.status).toBe("ok");
    // Writable cgroups reach the server: it limits sandboxes with them, not with rlimits.
    expect(health.body.limits?.mode).toMatch(/^cgroup[12]$/);
    expect(health.body.database).toBe("sqlite");
    expect(existsSync(join(dataDir, "ash.db"))).toBe(true);

    // Docker's own health check (start period, then every 10 s) agrees.
    let healthStatus = "";
    for (let i = 0; i < 120 && healthStatus !== "healthy"; i++) {
      healthStatus = (await docker(["inspect", "--format", "{{.State.Health.Status}}", id])).stdout.trim();
      if (healthStatus !== "healthy") await sleep(500);
    }
    expect(healthStatus).toBe("healthy");

    const stopped = await docker(["stop", "-t", "20", id]);
    expect(stopped.code).toBe(0);
    const state = JSON.parse((await docker(["inspect", "--format", "{{json .State}}", id])).stdout);
    expect(state.OOMKilled).toBe(false);
    // SIGTERM reached the server through tini and it shut down by itself.
    expect(state.ExitCode).toBe(0);
  });
});
