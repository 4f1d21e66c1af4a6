import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { Readable, Writable } from "node:stream";
import Docker from "dockerode";
import { CONTAINER_PORT, containerName, MANAGED_LABEL } from "../runspec";
import { CliError, EXIT, parseInput } from "./errors";
import { note, style } from "./output";

/**
 * Docker helpers for the lifecycle commands (`ash start/status/logs/stop`):
 * reaching the daemon, finding Ash's container, pulling with progress, reading
 * logs and waiting for `/health`.
 */

async function dockerCliPresent(): Promise<boolean> {
  try {
    await promisify(execFile)("docker", ["--version"], { timeout: 5000 });
    return true;
  } catch {
    return false;
  }
}

/** A dockerode client whose daemon has answered a ping; otherwise a `CliError` saying what is wrong. */
export async function connectDocker(): Promise<Docker> {
  const docker = new Docker();
  try {
    await withTimeout(docker.ping(), 10_000, "ping");
    return docker;
  } catch (error: any) {
    const code = error?.code ?? error?.errno;
    const where = process.env.DOCKER_HOST || "/var/run/docker.sock";
    if (code === "EACCES" || code === "EPERM") {
      throw new CliError(
        `Permission denied talking to Docker at ${where}: add your user to the "docker" group (then log in again) or run with sudo.`,
        EXIT.NO_DOCKER,
      );
    }
    if (!(await dockerCliPresent()) && (code === "ENOENT" || code === "ECONNREFUSED")) {
      throw new CliError("Docker is not installed: Ash runs its server in Docker. Install Docker Engine or Docker Desktop, then run this again.", EXIT.NO_DOCKER);
    }
    throw new CliError(`Docker is installed but its daemon does not answer at ${where}: start Docker (Docker Desktop, "sudo systemctl start docker", or on a machine without systemd "sudo dockerd &" or infra/docker-engine.sh from the Ash checkout) and try again.`, EXIT.NO_DOCKER);
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(Object.assign(new Error(`${what} timed out`), { code: "ETIMEDOUT" })), ms);
    }),
  ]);
}

export interface AshContainer {
  container: Docker.Container;
  info: Docker.ContainerInspectInfo;
}

/**
 * The server's container (`ash-server`, or ASH_CONTAINER_NAME), if there is one. A
 * container of that name that Ash did not create is never touched: that is an error
 * the user has to resolve.
 */
export async function findAshContainer(docker: Docker): Promise<AshContainer | undefined> {
  const name = parseInput(() => containerName());
  const container = docker.getContainer(name);
  let info: Docker.ContainerInspectInfo;
  try {
    info = await container.inspect();
  } catch (error: any) {
    if (error?.statusCode === 404) return undefined;
    throw error;
  }
  if (info.Config?.Labels?.[MANAGED_LABEL] !== "true") {
    throw new CliError(
      `A container named ${name} exists that Ash did not create (it has no ${MANAGED_LABEL}=true label); rename or remove it ("docker rm -f ${name}") and try again.`,
    );
  }
  return { container, info };
}

/** The host port published for the server's 4100, from the container's settings. */
export function publishedPort(info: Docker.ContainerInspectInfo): number | undefined {
  const bindings = (info.HostConfig?.PortBindings as Record<string, { HostPort?: string }[]> | undefined)?.[`${CONTAINER_PORT}/tcp`];
  const port = Number(bindings?.[0]?.HostPort);
  return Number.isInteger(port) && port > 0 ? port : undefined;
}

/** Where the published port answers: localhost, or the Docker host when DOCKER_HOST is a TCP address. */
export function serverUrl(port: number): string {
  const dockerHost = process.env.DOCKER_HOST;
  let host = "localhost";
  if (dockerHost && /^(tcp|http|https):\/\//.test(dockerHost)) {
    try {
      host = new URL(dockerHost.replace(/^tcp:/, "http:")).hostname || host;
    } catch {
      // An unparsable DOCKER_HOST: dockerode would have failed earlier; keep localhost.
    }
  }
  return `http://${host.includes(":") ? `[${host}]` : host}:${port}`;
}

export async function imageExists(docker: Docker, image: string): Promise<boolean> {
  try {
    await docker.getImage(image).inspect();
    return true;
  } catch (error: any) {
    if (error?.statusCode === 404) return false;
    throw error;
  }
}

// ---- Pull progress ------------------------------------------------------------

export interface PullEvent {
  id?: string;
  status?: string;
  progressDetail?: { current?: number; total?: number };
  error?: string;
}

function size(bytes: number): string {
  if (bytes >= 1e9) return `${(bytes / 1e9).toFixed(2)} GB`;
  if (bytes >= 1e6) return `${(bytes / 1e6).toFixed(1)} MB`;
  return `${Math.ceil(bytes / 1e3)} kB`;
}

const LAYER_DONE = /^(Pull complete|Already exists)$/;
// After these a layer's download is whole, whatever the last progress event said.
const DOWNLOADED = /^(Download complete|Verifying Checksum|Extracting|Pull complete)$/;

/**
 * Shows pull progress: on a terminal one line rewritten in place (layers done,
 * bytes downloaded); otherwise one line per layer whenever its state changes, so
 * logs stay short and readable.
 */
export class PullProgress {
  private readonly layers = new Map<string, { status: string; current: number; total: number }>();
  private lastLine = "";

  constructor(
    private readonly image: string,
    private readonly out: NodeJS.WriteStream = process.stderr,
    private readonly tty: boolean = Boolean(process.stderr.isTTY),
  ) {}

  update(event: PullEvent): void {
    // Events without a layer id are about the whole image ("Digest: …", "Status: …").
    if (!event.id || !event.status || event.id === this.tagOf()) {
      if (event.status && !this.tty) this.out.write(`${event.status}\n`);
      return;
    }
    const layer = this.layers.get(event.id) ?? { status: "", current: 0, total: 0 };
    const changed = layer.status !== event.status;
    layer.status = event.status;
    if (event.status === "Downloading" && event.progressDetail?.total) {
      layer.total = event.progressDetail.total;
      layer.current = event.progressDetail.current ?? layer.current;
    } else if (DOWNLOADED.test(event.status)) {
      layer.current = layer.total;
    }
    this.layers.set(event.id, layer);
    if (this.tty) this.render();
    else if (changed) this.out.write(`${event.id}: ${event.status}\n`);
  }

  done(): void {
    if (this.tty && this.lastLine) this.out.write("\n");
    this.lastLine = "";
  }

  private tagOf(): string {
    const at = this.image.lastIndexOf(":");
    return at > this.image.lastIndexOf("/") ? this.image.slice(at + 1) : "latest";
  }

  private render(): void {
    const all = [...this.layers.values()];
    const done = all.filter((l) => LAYER_DONE.test(l.status)).length;
    const current = all.reduce((sum, l) => sum + l.current, 0);
    const total = all.reduce((sum, l) => sum + l.total, 0);
    const bytes = total ? `, ${size(current)} of ${size(total)} downloaded` : "";
    const line = `Pulling ${this.image}: ${done} of ${all.length} layers done${bytes}`;
    if (line === this.lastLine) return;
    this.lastLine = line;
    this.out.write(`\r\x1b[2K${line}`);
  }
}

/** Pulls `image`, reporting progress; throws a `CliError` naming the image when it cannot. */
export async function pullImage(docker: Docker, image: string, progress: PullProgress): Promise<void> {
  try {
    const stream = await docker.pull(image);
    await new Promise<void>((resolve, reject) => {
      docker.modem.followProgress(
        stream,
        (error: Error | null, output: PullEvent[]) => {
          const failed = error ?? output?.find((event) => event.error);
          if (failed) reject(failed instanceof Error ? failed : new Error((failed as PullEvent).error));
          else resolve();
        },
        (event: PullEvent) => progress.update(event),
      );
    });
  } catch (error: any) {
    progress.done();
    const detail = String(error?.json?.message ?? error?.message ?? error).trim();
    throw new CliError(`Could not pull ${image}: ${detail}`);
  }
  progress.done();
}

// ---- Logs ---------------------------------------------------------------------

/**
 * Splits Docker's multiplexed log stream (containers without a TTY: 8-byte
 * frame headers naming stdout or stderr) into the two writers, with
 * dockerode's own demuxer; settles when the source ends or closes.
 */
export function demuxLogs(
  modem: { demuxStream(source: NodeJS.ReadableStream, stdout: NodeJS.WritableStream, stderr: NodeJS.WritableStream): void },
  source: NodeJS.ReadableStream,
  stdout: NodeJS.WritableStream,
  stderr: NodeJS.WritableStream,
  signal?: AbortSignal,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const stop = () => {
      (source as NodeJS.ReadableStream & { destroy?: () => void }).destroy?.();
      resolve();
    };
    signal?.addEventListener("abort", stop, { once: true });
    modem.demuxStream(source, stdout, stderr);
    source.on("end", resolve);
    source.on("close", resolve);
    source.on("error", (error) => (signal?.aborted ? resolve() : reject(error)));
  });
}

/** A writer that keeps what it is given. */
function collector(): { sink: Writable; text: () => string } {
  const chunks: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      chunks.push(Buffer.from(chunk));
      done();
    },
  });
  return { sink, text: () => Buffer.concat(chunks).toString("utf8") };
}

/** The last `lines` lines the container wrote (stdout and stderr interleaved), as text. */
export async function recentLogs(container: Docker.Container, lines: number): Promise<string> {
  const buffer = await container.logs({ stdout: true, stderr: true, tail: lines, follow: false });
  const { sink, text } = collector();
  await demuxLogs(container.modem, Readable.from([Buffer.from(buffer)]), sink, sink);
  return text();
}

/** Copies the container's logs to `stdout`/`stderr`; with `follow`, until the container stops or `signal` aborts. */
export async function copyLogs(
  container: Docker.Container,
  options: { follow: boolean; tail?: number; signal?: AbortSignal },
  stdout: NodeJS.WritableStream = process.stdout,
  stderr: NodeJS.WritableStream = process.stderr,
): Promise<void> {
  const tail = (options.tail ?? "all") as number;
  if (!options.follow) {
    const buffer = await container.logs({ stdout: true, stderr: true, tail, follow: false });
    await demuxLogs(container.modem, Readable.from([Buffer.from(buffer)]), stdout, stderr);
    return;
  }
  const stream = await container.logs({ stdout: true, stderr: true, tail, follow: true });
  await demuxLogs(container.modem, stream, stdout, stderr, options.signal);
}

// ---- Health -------------------------------------------------------------------

export interface HealthAnswer {
  status: number;
  body: unknown;
}

/** One `GET /health`; undefined when nothing answers within `timeoutMs`. */
export async function fetchHealth(url: string, timeoutMs = 2000): Promise<HealthAnswer | undefined> {
  // A referenced timer, unlike AbortSignal.timeout's: while a connection hangs, the
  // process must stay alive until the answer or the time limit.
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  try {
    const response = await fetch(`${url}/health`, { signal: abort.signal });
    const text = await response.text();
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      // Not JSON: keep the text.
    }
    return { status: response.status, body };
  } catch {
    return undefined;
  } finally {
    clearTimeout(timer);
  }
}

export type HealthWait = { ok: true; answer: HealthAnswer } | { ok: false; reason: "timeout" | "exited"; last?: HealthAnswer; exitCode?: number };

/**
 * Polls `GET /health` until it answers 200, the container stops running, or
 * `timeoutMs` passes (checked every 500 ms, so the loop is bounded).
 */
export async function waitForHealth(url: string, container: Docker.Container, timeoutMs: number): Promise<HealthWait> {
  const deadline = Date.now() + timeoutMs;
  let last: HealthAnswer | undefined;
  for (;;) {
    last = (await fetchHealth(url, Math.max(250, Math.min(2000, deadline - Date.now())))) ?? last;
    if (last?.status === 200) return { ok: true, answer: last };
    const state = (await container.inspect()).State;
    if (!state.Running) return { ok: false, reason: "exited", last, exitCode: state.ExitCode };
    if (Date.now() >= deadline) return { ok: false, reason: "timeout", last };
    await new Promise((r) => setTimeout(r, Math.min(500, Math.max(0, deadline - Date.now()))));
  }
}

/** Docker's error for a start that failed because the host port is taken, as a sentence; undefined for other errors. */
export function busyPortMessage(error: unknown, port: number): string | undefined {
  const text = String((error as any)?.json?.message ?? (error as any)?.message ?? error);
  if (/port is already allocated|address already in use|bind: .*in use/i.test(text)) {
    return `Port ${port} is already in use on this machine: stop what uses it or pick another port with --port.`;
  }
  return undefined;
}
