/**
 * `ash start / status / logs / stop` against the real Docker engine and the real
 * image, with a temporary HOME so ~/.ash is the test's own.
 *
 * Needs `docker info` to answer and ASH_TEST_IMAGE to name an image that exists
 * locally (CI builds it with infra/build-image.sh); otherwise the file is skipped
 * and says why. The pull test pushes that image to a private registry on
 * 127.0.0.1 (infra/registry.sh).
 */
import { execFile, execFileSync, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { renderRunSpec, toDockerRunArgs } from "../../src/runspec";
import { dockerImageProblem, skipUnlessReady } from "../helpers/requirements";
import { freePort } from "../helpers/ports";

/** The container these tests manage (ASH_CONTAINER_NAME), beside any ash-server of the machine's user. */
const NAME = "ash-e2e-lifecycle";

const root = resolve(import.meta.dirname, "../..");
const tsx = join(root, "node_modules/.bin/tsx");
const main = join(root, "src/cli/main.ts");
const image = process.env.ASH_TEST_IMAGE;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(command: string, args: string[], options: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<Run> {
  return new Promise((done) => {
    execFile(command, args, { cwd: root, env: options.env ?? process.env, timeout: options.timeoutMs ?? 180_000, maxBuffer: 64 << 20 }, (error: any, stdout, stderr) =>
      done({ code: error ? (typeof error.code === "number" ? error.code : 1) : 0, stdout: String(stdout), stderr: String(stderr) }),
    );
  });
}

function skipReason(): string | undefined {
  const docker = dockerImageProblem(image);
  if (docker) return docker;
  try {
    if (execFileSync("docker", ["ps", "-aq", "--filter", `name=^/${NAME}$`]).toString().trim()) {
      return `a ${NAME} container already exists on this machine; the lifecycle tests will not touch it`;
    }
  } catch {
    return "docker ps failed";
  }
  return undefined;
}

const reason = skipUnlessReady("The CLI lifecycle tests", skipReason());

/** The unprivileged-user test runs as `nobody` with the docker group, which needs root and setpriv. */
const dockerGid = (() => {
  try {
    return execFileSync("getent", ["group", "docker"]).toString().split(":")[2];
  } catch {
    return undefined;
  }
})();
const nonRootSkip = skipUnlessReady(
  "ash start as a user in the docker group",
  process.getuid?.() !== 0 ? "it needs root to switch to another user" : !dockerGid ? "there is no docker group (docker.io makes it)" : !existsSync("/usr/bin/setpriv") ? "setpriv is missing" : undefined,
);


describe.skipIf(reason)("ash start / status / logs / stop with the real image", () => {
  let home: string;
  let dataDir: string;
  let port: number;
  const modelKey = "sk-ant-e2e-not-a-real-key";

  /** The CLI with the test's HOME; ANTHROPIC_API_KEY comes from "the user's shell". */
  const ash = (args: string[], extraEnv: Record<string, string> = {}) =>
    run(tsx, [main, ...args], {
      env: { ...cleanEnv(), HOME: home, NO_COLOR: "1", ANTHROPIC_API_KEY: modelKey, ...extraEnv },
    });

  // Its own container name: a user's ash-server on this machine is never touched.
  const cleanEnv = () => ({ ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(ASH_|ANTHROPIC_)/.test(k))), ASH_CONTAINER_NAME: NAME });

  /** Containers this file created, found by the data folder label the run spec puts on them. */
  const ourContainers = async () =>
    (await run("docker", ["ps", "-aq", "--filter", `label=ai.ash.data-dir=${dataDir}`])).stdout.split("\n").filter(Boolean);

  const inspect = async (name: string) => JSON.parse((await run("docker", ["inspect", name])).stdout)[0];

  /** Each error-path test starts with no server, whatever the tests before it left. */
  const removeOurs = async () => {
    for (const id of await ourContainers()) await run("docker", ["rm", "-f", id]);
  };

  beforeAll(async () => {
    home = await mkdtemp(join(tmpdir(), "ash-home-"));
    dataDir = join(home, ".ash");
    port = await freePort();
  });

  afterAll(async () => {
    for (const id of await ourContainers()) await run("docker", ["rm", "-f", id]);
    // The server may have written files as root into the data folder; rm -rf handles that here (tests run as root in CI).
    await rm(home, { recursive: true, force: true });
  });

  let apiKey: string;

  it("start: runs the container, waits for health, prints the URL, the data folder and the first-boot API key", async () => {
    const result = await ash(["start", "--image", image!, "--no-pull", "--port", String(port), "-e", "ASH_E2E_MARK=first", "-e", "ASH_E2E_MARK=lifecycle", "-e", "ASH_MAX_SANDBOXES=7"]);
    expect(result.stderr).not.toMatch(/Unexpected error/);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain("Ash is running.");
    expect(result.stdout).toContain(`URL:          http://localhost:${port}`);
    expect(result.stdout).toContain(`Data folder:  ${dataDir}`);

    const settings = JSON.parse(await readFile(join(dataDir, "config.json"), "utf8"));
    expect(settings.url).toBe(`http://localhost:${port}`);
    apiKey = settings.apiKey;
    expect(apiKey).toBeTruthy();
    expect((await stat(join(dataDir, "config.json"))).mode & 0o777).toBe(0o600);
    // The key is the server's first-boot key, shown once.
    expect((await readFile(join(dataDir, "initial-api-key"), "utf8")).trim()).toBe(apiKey);
    expect(result.stdout).toContain(`API key:      ${apiKey}  (shown once;`);

    const health = await fetch(`http://127.0.0.1:${port}/health`);
    expect(health.status).toBe(200);
    expect(((await health.json()) as { status: string }).status).toBe("ok");
    expect((await fetch(`http://127.0.0.1:${port}/api/agents`)).status).toBe(401);
    expect((await fetch(`http://127.0.0.1:${port}/api/agents`, { headers: { authorization: `Bearer ${apiKey}` } })).status).toBe(200);
  });

  it("the container has the seed's flags and the sandbox options, not --privileged", async () => {
    const info = await inspect(NAME);
    expect(info.Config.Labels["ai.ash.managed"]).toBe("true");
    expect(info.HostConfig.Init).toBe(true);
    expect(info.HostConfig.CgroupnsMode).toBe("host");
    expect(info.HostConfig.Privileged).toBe(false);
    expect(info.HostConfig.CapAdd).toEqual(["SYS_ADMIN"]);
    expect(info.HostConfig.SecurityOpt).toEqual(["seccomp=unconfined", "apparmor=unconfined"]);
    expect(info.HostConfig.Binds).toEqual([`${dataDir}:/data`, "/sys/fs/cgroup:/sys/fs/cgroup:rw"]);
    expect(info.HostConfig.PortBindings).toEqual({ "4100/tcp": [{ HostIp: "", HostPort: String(port) }] });
    expect(info.HostConfig.RestartPolicy.Name).toBe("no");
    expect(info.Config.Env).toContain(`ANTHROPIC_API_KEY=${modelKey}`);
    expect(info.Config.Env).toContain("ASH_E2E_MARK=lifecycle");
    expect(info.Config.Env).not.toContain("ASH_E2E_MARK=first");
    expect(info.Config.Env).toContain("ASH_MAX_SANDBOXES=7");
  });

  it("the dry-run line creates the same container through the docker CLI", async () => {
    // Same options as the start above, given to the renderer the CLI uses.
    const spec = renderRunSpec({
      image: image!,
      port,
      dataDir,
      env: [{ key: "ASH_E2E_MARK", value: "lifecycle" }, { key: "ASH_MAX_SANDBOXES", value: "7" }],
      hostEnv: { ANTHROPIC_API_KEY: modelKey, ASH_CONTAINER_NAME: NAME },
    });
    const argv = toDockerRunArgs(spec);
    expect(argv.slice(0, 3)).toEqual(["docker", "run", "--detach"]);
    const name = `ash-dry-run-check-${process.pid}`;
    const createArgs = ["create", ...argv.slice(3).map((arg) => (arg === NAME ? name : arg))];
    const created = await run("docker", createArgs, { env: { ...process.env, ANTHROPIC_API_KEY: modelKey } });
    expect(created.stderr).toBe("");
    try {
      const [fromCli, fromApi] = [await inspect(name), await inspect(NAME)];
      for (const key of ["Init", "CgroupnsMode", "PortBindings", "RestartPolicy", "Privileged"]) {
        expect(fromCli.HostConfig[key], key).toEqual(fromApi.HostConfig[key]);
      }
      // The docker CLI gathers -v and --security-opt values in a map, so their order varies from run to run; the set is what counts.
      const sorted = (list: string[] | null) => [...(list ?? [])].sort();
      for (const key of ["SecurityOpt", "Binds"]) expect(sorted(fromCli.HostConfig[key]), key).toEqual(sorted(fromApi.HostConfig[key]));
      // The docker CLI writes capabilities as CAP_SYS_ADMIN, the API keeps what it was given.
      const caps = (list: string[]) => list.map((c) => c.replace(/^CAP_/, ""));
      expect(caps(fromCli.HostConfig.CapAdd)).toEqual(caps(fromApi.HostConfig.CapAdd));
      expect(fromCli.Config.Labels).toEqual(fromApi.Config.Labels);
      expect(fromCli.Config.Image).toEqual(fromApi.Config.Image);
      for (const entry of fromApi.Config.Env.filter((e: string) => /^(ANTHROPIC|ASH_E2E|ASH_MAX)/.test(e))) expect(fromCli.Config.Env).toContain(entry);
    } finally {
      await run("docker", ["rm", "-f", name]);
    }
  });

  it("status: the container state and the /health answer, as text and as JSON", async () => {
    const text = await ash(["status"]);
    expect(text.code).toBe(0);
    expect(text.stdout).toContain("Ash is running · healthy");
    expect(text.stdout).toContain(`http://localhost:${port}`);

    const json = await ash(["status", "--json"]);
    expect(json.code).toBe(0);
    const report = JSON.parse(json.stdout);
    expect(report.healthy).toBe(true);
    expect(report.container).toMatchObject({ name: NAME, running: true, port, image: image, dataDir });
    expect(report.health.statusCode).toBe(200);
    expect(report.health.body.status).toBe("ok");
  });

  it("logs: prints the server's log with stdout and stderr kept apart", async () => {
    const result = await ash(["logs"]);
    expect(result.code).toBe(0);
    // The entrypoint reports the cgroup mode on stderr.
    expect(result.stderr).toContain("ash-entrypoint:");
    expect(result.stdout).not.toContain("ash-entrypoint:");
    expect(result.stdout + result.stderr).not.toMatch(/[\x00-\x08]/); // no multiplexing headers left
    const tail = await ash(["logs", "--tail", "1"]);
    expect(tail.code).toBe(0);
    expect((tail.stdout + tail.stderr).trim().split("\n")).toHaveLength(1);
  });

  it("start again: says it is already running and makes no second container", async () => {
    const result = await ash(["start", "--image", image!, "--no-pull", "--port", String(port)]);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain(`Ash is already running at http://localhost:${port}`);
    expect(await ourContainers()).toHaveLength(1);
  });

  it("stop: ends a following `ash logs -f`, removes the container, keeps the data; start again finds the data", async () => {
    // Something the server stores in the data folder.
    const deploy = await fetch(`http://127.0.0.1:${port}/api/agents`, {
      method: "POST",
      headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" },
      body: JSON.stringify({ name: "kept-agent", files: [{ path: "CLAUDE.md", content: Buffer.from("You keep things.").toString("base64") }] }),
    });
    expect(deploy.status).toBe(201);

    const follower = spawn(tsx, [main, "logs", "-f"], { env: { ...cleanEnv(), HOME: home, NO_COLOR: "1" }, cwd: root });
    let followed = "";
    follower.stdout.on("data", (c) => (followed += c));
    follower.stderr.on("data", (c) => (followed += c));
    const followerExit = new Promise<number | null>((r) => follower.on("exit", (code) => r(code)));
    for (let i = 0; i < 100 && !followed.includes("ash-entrypoint:"); i++) await new Promise((r) => setTimeout(r, 100));
    expect(followed).toContain("ash-entrypoint:");

    const stopped = await ash(["stop"]);
    expect(stopped.code).toBe(0);
    expect(stopped.stdout).toContain(`your data stays in ${dataDir}`);
    expect(await followerExit).toBe(0);
    expect(await ourContainers()).toEqual([]);
    expect(existsSync(join(dataDir, "config.json"))).toBe(true);

    const again = await ash(["stop"]);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain("Ash is not running");
    const status = await ash(["status"]);
    expect(status.code).toBe(1);
    expect(status.stdout).toContain("Ash is not running");
    const statusJson = JSON.parse((await ash(["status", "--json"])).stdout);
    expect(statusJson).toEqual({ healthy: false, container: null, url: null, health: null });

    const restarted = await ash(["start", "--image", image!, "--no-pull", "--port", String(port)]);
    expect(restarted.code).toBe(0);
    // The key is not shown a second time; it is where the first start saved it.
    expect(restarted.stdout).toContain("API key:      saved in");
    expect(restarted.stdout).not.toContain(apiKey);
    const agents = await fetch(`http://127.0.0.1:${port}/api/agents`, { headers: { authorization: `Bearer ${apiKey}` } });
    expect(agents.status).toBe(200);
    expect(((await agents.json()) as { agents: { name: string }[] }).agents.map((a: { name: string }) => a.name)).toContain("kept-agent");
  });

  it("a stopped server container is replaced on start", async () => {
    await run("docker", ["stop", "-t", "20", NAME]);
    const before = (await inspect(NAME)).Id;
    const result = await ash(["start", "--image", image!, "--no-pull", "--port", String(port)]);
    expect(result.code).toBe(0);
    expect(result.stderr).toContain(`Removing the stopped ${NAME} container.`);
    expect((await inspect(NAME)).Id).not.toBe(before);
    expect(await ourContainers()).toHaveLength(1);
  });

  it("-e ASH_API_KEY=… wins over the first-boot key and is saved", async () => {
    await removeOurs();
    const given = "e2e-given-key-0123456789";
    const result = await ash(["start", "--image", image!, "--no-pull", "--port", String(port), "-e", `ASH_API_KEY=${given}`]);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain("the one you gave with -e ASH_API_KEY");
    expect(JSON.parse(await readFile(join(dataDir, "config.json"), "utf8")).apiKey).toBe(given);
    expect((await fetch(`http://127.0.0.1:${port}/api/agents`, { headers: { authorization: `Bearer ${given}` } })).status).toBe(200);
    expect((await ash(["stop"])).code).toBe(0);
  });

  it("a server that exits during start-up: its last log lines, one sentence, exit 1", async () => {
    await removeOurs();
    // The server refuses keys shorter than 8 characters and exits at once.
    const result = await ash(["start", "--image", image!, "--no-pull", "--port", String(port), "-e", "ASH_API_KEY=short"]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("Last lines of the server's log:");
    expect(result.stderr).toContain("ASH_API_KEY");
    expect(result.stderr).toMatch(/The server exited with code \d+ before answering; the log above says why\./);
    // The exited container stays for `ash logs`; the next start replaces it.
    const logs = await ash(["logs"]);
    expect(logs.stdout + logs.stderr).toContain("ASH_API_KEY");
    const status = await ash(["status"]);
    expect(status.code).toBe(1);
    expect(status.stdout).toMatch(new RegExp(`the ${NAME} container is exited \\(exit code \\d+\\)`));
    await removeOurs();
    const logsGone = await ash(["logs"]);
    expect(logsGone.code).toBe(1);
    expect(logsGone.stderr).toContain(`There is no ${NAME} container`);
  });

  it.skipIf(nonRootSkip)("as a user who cannot read the server's root-owned key file, the key is read through Docker", async () => {
    await removeOurs();
    const userHome = await mkdtemp(join(tmpdir(), "ash-user-home-"));
    execFileSync("chown", ["65534:65534", userHome]);
    const userData = join(userHome, ".ash");
    try {
      const env = { ...cleanEnv(), HOME: userHome, NO_COLOR: "1", ANTHROPIC_API_KEY: modelKey };
      const asUser = ["--reuid=65534", "--regid=65534", `--groups=${dockerGid}`, tsx, main];
      const result = await run("setpriv", [...asUser, "start", "--image", image!, "--no-pull", "--port", String(port)], { env });
      expect(result.code, result.stderr).toBe(0);
      const key = JSON.parse(await readFile(join(userData, "config.json"), "utf8")).apiKey;
      expect((await stat(join(userData, "initial-api-key"))).uid).toBe(0);
      expect(result.stdout).toContain(`API key:      ${key}  (shown once;`);
      expect((await fetch(`http://127.0.0.1:${port}/api/agents`, { headers: { authorization: `Bearer ${key}` } })).status).toBe(200);
      expect((await run("setpriv", [...asUser, "stop"], { env })).code).toBe(0);
    } finally {
      for (const id of (await run("docker", ["ps", "-aq", "--filter", `label=ai.ash.data-dir=${userData}`])).stdout.split("\n").filter(Boolean)) {
        await run("docker", ["rm", "-f", id]);
      }
      await rm(userHome, { recursive: true, force: true });
    }
  });

  it("a busy port is one sentence, exit 1, and no container is left", async () => {
    await removeOurs();
    const busyPort = await freePort();
    const blocker: Server = createServer();
    await new Promise<void>((r) => blocker.listen(busyPort, "127.0.0.1", () => r()));
    try {
      const result = await ash(["start", "--image", image!, "--no-pull", "--port", String(busyPort)]);
      expect(result.code).toBe(1);
      expect(result.stderr.trim().split("\n").at(-1)).toBe(`Port ${busyPort} is already in use on this machine: stop what uses it or pick another port with --port.`);
      expect(await ourContainers()).toEqual([]);
    } finally {
      blocker.close();
    }
  });

  it("a missing image with --no-pull is one sentence, exit 1, and nothing is created", async () => {
    await removeOurs();
    const missing = "ash-e2e-missing-image:none";
    const result = await ash(["start", "--image", missing, "--no-pull", "--port", String(port)]);
    expect(result.code).toBe(1);
    expect(result.stderr.trim()).toBe(`The image ${missing} is not on this machine and --no-pull was given: pull or build it first, or run without --no-pull.`);
    expect(await ourContainers()).toEqual([]);
  });

  it("bad flags are refused with exit code 2 before Docker is touched", async () => {
    await removeOurs();
    for (const args of [["--port", "70000"], ["--prot", "1"], ["-e", "9=x"], ["--timeout", "0"]]) {
      const result = await ash(["start", ...args]);
      expect(result.code, args.join(" ")).toBe(2);
      expect(result.stderr).not.toContain("Unexpected");
    }
    expect(await ourContainers()).toEqual([]);
  });

  it("--dry-run prints the spec and the docker run line and runs nothing", async () => {
    await removeOurs();
    const result = await ash(["start", "--dry-run", "--image", image!, "--port", String(port), "-e", "A=1"]);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain(`"name": "${NAME}"`);
    expect(result.stdout).toContain("<from your environment: $ANTHROPIC_API_KEY>");
    expect(result.stdout).not.toContain(modelKey);
    expect(result.stdout).toContain("docker run \\\n  --detach");
    expect(result.stdout).toContain(`-p ${port}:4100`);
    expect(await ourContainers()).toEqual([]);
  });

  describe("pulling from a registry", () => {
    let registryPort: number;
    let registryDir: string;
    let pushed: string;

    beforeAll(async () => {
      registryPort = await freePort();
      registryDir = await mkdtemp(join(tmpdir(), "ash-registry-"));
      const env = { ...process.env, ASH_REGISTRY_PORT: String(registryPort), ASH_REGISTRY_DIR: registryDir };
      const started = await run("sh", [join(root, "infra/registry.sh"), "start"], { env });
      expect(started.code, started.stderr).toBe(0);
      pushed = `127.0.0.1:${registryPort}/ash:test`;
      // One extra layer of our own on top of the image, so the pull really downloads something.
      const context = join(registryDir, "context");
      await mkdir(context);
      await writeFile(join(context, "marker"), `pull test ${Date.now()}\n`);
      await writeFile(join(context, "Dockerfile"), `FROM ${image}\nCOPY marker /ash-pull-test-marker\n`);
      const built = await run("docker", ["build", "-q", "-t", pushed, context]);
      expect(built.code, built.stderr).toBe(0);
      const push = await run("docker", ["push", pushed], { timeoutMs: 600_000 });
      expect(push.code, push.stderr).toBe(0);
      // Only the registry has the name now, so `ash start` has to pull it.
      expect((await run("docker", ["rmi", pushed])).code).toBe(0);
    }, 900_000);

    afterAll(async () => {
      await run("docker", ["rmi", pushed]);
      await run("sh", [join(root, "infra/registry.sh"), "stop"], { env: { ...process.env, ASH_REGISTRY_PORT: String(registryPort), ASH_REGISTRY_DIR: registryDir } });
      await rm(registryDir, { recursive: true, force: true });
    });

    it("pulls the image with progress lines, then starts it", async () => {
      await removeOurs();
      const result = await ash(["start", "--image", pushed, "--port", String(port)]);
      expect(result.code).toBe(0);
      expect(result.stderr).toContain(`Pulling ${pushed}…`);
      // Not a terminal: one line per layer state, plus Docker's summary.
      expect(result.stderr).toMatch(/^[0-9a-f]{12}: Pull complete$/m);
      expect(result.stderr).toContain(`Status: Downloaded newer image for ${pushed}`);
      expect((await run("docker", ["image", "inspect", pushed])).code).toBe(0);
      expect((await inspect(NAME)).Config.Image).toBe(pushed);
      expect((await ash(["stop"])).code).toBe(0);
    });

    it("a tag the registry does not have fails with one sentence naming it, and creates nothing", async () => {
      await removeOurs();
      const absent = `127.0.0.1:${registryPort}/ash:absent`;
      const result = await ash(["start", "--image", absent, "--port", String(port)]);
      expect(result.code).toBe(1);
      expect(result.stderr).toContain(`Could not pull ${absent}:`);
      // The checkout's scripts build ash-dev / ash:test; a failed pull points at them.
      const local = ["ash-dev", "ash:test"].find((image) => execFileSync("docker", ["images", "-q", image]).toString().trim() !== "");
      if (local) expect(result.stderr).toContain(`A locally built image ${local} exists: run \`ash start --image ${local} --no-pull\` to use it.`);
      expect(result.stderr).not.toContain("    at ");
      expect(await ourContainers()).toEqual([]);
    });
  });
});
