import { mkdir, readFile } from "node:fs/promises";
import { PassThrough } from "node:stream";
import { homedir } from "node:os";
import { join } from "node:path";
import { defineCommand } from "citty";
import type Docker from "dockerode";
import { AshClient } from "../../client/client";
import { AshApiError } from "../../client/errors";
import {
  applyRunSpec,
  collectRepeatedFlag,
  DEFAULT_PORT,
  defaultImage,
  formatDockerRun,
  parseEnvAssignment,
  printableSpec,
  renderRunSpec,
  type RunSpec,
} from "../../runspec";
import {
  busyPortMessage,
  connectDocker,
  findAshContainer,
  imageExists,
  demuxLogs,
  publishedPort,
  pullImage,
  PullProgress,
  recentLogs,
  serverUrl,
  waitForHealth,
} from "../docker";
import { CliError, parseInput } from "../errors";
import { line, note, printJson, style } from "../output";
import { ashHome, readSettings, settingsPath, writeSettings } from "../settings";

const args = {
  port: { type: "string", description: `Host port for the API (default ${DEFAULT_PORT})`, valueHint: "port" },
  image: { type: "string", description: `Image to run (default ${defaultImage()})`, valueHint: "image" },
  pull: { type: "boolean", default: true, description: "Pull the image first", negativeDescription: "Use the image already on this machine" },
  "database-url": { type: "string", description: "External database instead of SQLite (sets ASH_DATABASE_URL)", valueHint: "url" },
  env: { type: "string", alias: "e", description: "Set a variable in the container; repeatable. A bare KEY is read from your shell", valueHint: "KEY=VALUE" },
  "data-dir": { type: "string", description: "Host folder mounted at /data (default ~/.ash)", valueHint: "dir" },
  timeout: { type: "string", description: "Seconds to wait for GET /health to answer 200 (default 30)", valueHint: "seconds" },
  "dry-run": { type: "boolean", description: "Print the container spec and the equivalent docker run line; run nothing" },
} as const;

/** `~/x` as typed in `--data-dir=~/x`, where the shell does not expand it. */
function expandHome(path: string): string {
  if (path === "~") return process.env.HOME || homedir();
  if (path.startsWith("~/")) return join(process.env.HOME || homedir(), path.slice(2));
  return path;
}

function parseTimeout(value: string | undefined): number {
  if (value === undefined || value === "") return 30_000;
  const seconds = Number(value);
  if (!Number.isFinite(seconds) || seconds <= 0) throw new Error(`--timeout must be a number of seconds greater than 0, got ${JSON.stringify(value)}`);
  return Math.round(seconds * 1000);
}

export default defineCommand({
  meta: { name: "start", description: "Run the Ash server in Docker (pull, start, wait until healthy)" },
  args,
  run: async ({ args: flags, rawArgs }) => {
    const timeoutMs = parseInput(() => parseTimeout(flags.timeout));
    const spec = parseInput(() =>
      renderRunSpec({
        image: flags.image || undefined,
        port: flags.port,
        dataDir: expandHome(flags["data-dir"] || ashHome()),
        databaseUrl: flags["database-url"],
        env: collectRepeatedFlag(rawArgs, "e", "env").map(parseEnvAssignment),
      }),
    );

    if (flags["dry-run"]) {
      printJson(printableSpec(spec));
      line();
      line(formatDockerRun(spec));
      return 0;
    }

    const baseUrl = spec.env.ANTHROPIC_BASE_URL;
    if (baseUrl && /^https?:\/\/(localhost|127\.[\d.]+|\[::1\])(:|\/|$)/i.test(baseUrl)) {
      note(style.dim(`ANTHROPIC_BASE_URL is ${baseUrl}: inside the container that is the container itself, not this machine; use an address the container can reach (Docker Desktop: host.docker.internal).`, process.stderr));
    }
    // 1. Docker installed and answering.
    const docker = await connectDocker();

    // 2. One server at a time: a running one is reported, a stopped one is replaced.
    const existing = await findAshContainer(docker);
    if (existing?.info.State.Running) {
      const port = publishedPort(existing.info) ?? DEFAULT_PORT;
      line(`Ash is already running at ${serverUrl(port)} (container ${existing.info.Name.replace(/^\//, "")}, image ${existing.info.Config.Image}).`);
      if (port !== spec.ports[0].host || existing.info.Config.Image !== spec.image) {
        note(style.dim("It was started with other settings; run `ash stop` first to start it with these.", process.stderr));
      }
      return 0;
    }
    if (existing) {
      note(style.dim(`Removing the stopped ${spec.name} container.`, process.stderr));
      await existing.container.remove({ force: true });
    }

    // Only now that a server is really being started.
    for (const name of spec.missingHostEnv) {
      note(style.dim(`${name} is not set in your shell: the server starts, but agents cannot reach the model until you run \`ash stop\`, \`export ${name}=...\` and start again.`, process.stderr));
    }

    // 3. The data folder, made by us (not by Docker as root) so it belongs to the user.
    await mkdir(spec.dataDir, { recursive: true, mode: 0o700 });

    // 4. The image.
    if (flags.pull) {
      note(`Pulling ${spec.image}…`);
      await pullImage(docker, spec.image, new PullProgress(spec.image)).catch(async (error: unknown) => {
        throw await withLocalImageHint(docker, error);
      });
    } else if (!(await imageExists(docker, spec.image))) {
      throw new CliError(`The image ${spec.image} is not on this machine and --no-pull was given: pull or build it first, or run without --no-pull.`);
    }

    // 5. The container.
    let container: Docker.Container;
    try {
      container = await applyRunSpec(docker, spec);
    } catch (error) {
      const busy = busyPortMessage(error, spec.ports[0].host);
      if (busy) throw new CliError(busy);
      const detail = (error as any)?.json?.message ?? (error as Error).message;
      throw new CliError(`Docker could not start the ${spec.name} container: ${detail}`);
    }

    // 6. Healthy?
    const url = serverUrl(spec.ports[0].host);
    note(`Waiting for ${url}/health…`);
    const health = await waitForHealth(url, container, timeoutMs);
    if (!health.ok) {
      const logs = await recentLogs(container, 30).catch(() => "");
      if (logs.trim()) {
        note(style.dim("Last lines of the server's log:", process.stderr));
        process.stderr.write(logs.endsWith("\n") ? logs : logs + "\n");
      }
      if (health.reason === "exited") {
        throw new CliError(`The server exited with code ${health.exitCode} before answering; the log above says why. Run \`ash start\` again once it is fixed.`);
      }
      const seen = health.last ? `it answered ${health.last.status}` : "nothing answered";
      throw new CliError(
        `The server did not become healthy within ${timeoutMs / 1000} s (${seen} at ${url}/health). It is still starting or stuck: see \`ash logs\`, or \`ash stop\`; a slow machine may need --timeout.`,
      );
    }

    // 7. Where it is and how to talk to it.
    const key = await resolveApiKey(spec, url, container);
    line(style.green("Ash is running."));
    line(`  URL:          ${url}`);
    line(`  Data folder:  ${spec.dataDir}`);
    line(`  API key:      ${key}`);
    return 0;
  },
});

/**
 * Finds the API key, saves it with the URL for the other commands, and says what to
 * show. A key given with -e wins; otherwise the server's first-boot key from
 * `<data>/initial-api-key` is shown once, and afterwards only where it is saved.
 */
async function resolveApiKey(spec: RunSpec, url: string, container: Docker.Container): Promise<string> {
  const saved = await readSettings();
  const where = `saved in ${settingsPath()}`;
  const given = spec.env.ASH_API_KEY;
  if (given) {
    await writeSettings({ url, apiKey: given });
    return `the one you gave with -e ASH_API_KEY (${where})`;
  }

  const initial = await readInitialKey(spec.dataDir, container);
  if (initial && initial !== saved.apiKey) {
    await writeSettings({ url, apiKey: initial });
    return `${style.bold(initial)}  (shown once; ${where})`;
  }
  const apiKey = initial ?? saved.apiKey;
  await writeSettings({ url, apiKey });
  if (!apiKey) {
    return "unknown: the server made one on its first start and initial-api-key is gone from the data folder; run `ash stop`, then `ash start -e ASH_API_KEY=<a new key>`.";
  }
  // A key saved from an earlier run may belong to another data folder or an old -e ASH_API_KEY.
  try {
    await new AshClient({ url, apiKey }).listAgents();
  } catch (error) {
    if (error instanceof AshApiError && error.statusCode === 401) {
      return `the key ${where} is not accepted by this server; run \`ash stop\`, then \`ash start -e ASH_API_KEY=<the right key>\`.`;
    }
  }
  return where;
}

/**
 * The server writes its first-boot key just before it answers /health. The file is
 * read from the host; when the container wrote it as a user we cannot read (root,
 * 0600), it is read through Docker instead.
 */
async function readInitialKey(dataDir: string, container: Docker.Container): Promise<string | undefined> {
  const path = join(dataDir, "initial-api-key");
  for (let attempt = 0; attempt < 10; attempt++) {
    try {
      const text = (await readFile(path, "utf8")).trim();
      if (text) return text;
    } catch (error: any) {
      if (error?.code === "EACCES" || error?.code === "EPERM") return readThroughDocker(container);
      if (error?.code !== "ENOENT") throw error;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return undefined;
}

async function readThroughDocker(container: Docker.Container): Promise<string | undefined> {
  const exec = await container.exec({ Cmd: ["cat", "/data/initial-api-key"], AttachStdout: true, AttachStderr: true });
  const stream = await exec.start({ hijack: true, stdin: false });
  const stdout = new PassThrough();
  const chunks: Buffer[] = [];
  stdout.on("data", (chunk: Buffer) => chunks.push(chunk));
  await demuxLogs(container.modem, stream, stdout, new PassThrough().resume());
  const text = Buffer.concat(chunks).toString("utf8").trim();
  if ((await exec.inspect()).ExitCode !== 0) return undefined;
  return text || undefined;
}

/** Images this checkout's scripts build: a failed pull points at them when they exist. */
const LOCAL_IMAGES = ["ash-dev", "ash:test"];

async function withLocalImageHint(docker: Docker, error: unknown): Promise<unknown> {
  if (!(error instanceof CliError)) return error;
  for (const image of LOCAL_IMAGES) {
    if (await imageExists(docker, image)) {
      return new CliError(`${error.message}\nA locally built image ${image} exists: run \`ash start --image ${image} --no-pull\` to use it.`, error.exitCode);
    }
  }
  return error;
}
