import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, openSync, readFileSync } from "node:fs";
import { chmod, mkdir, rm } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { untilGone } from "./launch";
import { setTimeout as sleep } from "node:timers/promises";

/**
 * A service the server offers a sandbox (the model gateway, the egress
 * proxies): inside the sandbox it is a TCP port on the sandbox's own
 * loopback; on the host it is a unix socket of this sandbox only, so the
 * server knows which sandbox every connection comes from.
 */
export interface SandboxService {
  name: string;
  /** The loopback port inside the sandbox. */
  port: number;
  accept(socket: Socket): void;
}

export interface SandboxNetwork {
  /** Where a process reaches each service: inside the sandbox, or on the host when unisolated. */
  readonly addresses: Record<string, { host: string; port: number }>;
  /** A descriptor of the sandbox's network namespace (bwrap mode), for nsenter; undefined when unisolated. */
  readonly nsFd: number | undefined;
  /**
   * Stops the loopback bridges while no process of the sandbox needs them (an
   * idle session): the namespace stays (the server holds it), so nothing of
   * the sandbox changes but that its ports do not answer until `resume`.
   */
  suspend(): Promise<void>;
  /** Starts the bridges again (at once when they run). */
  resume(): Promise<void>;
  readonly suspended: boolean;
  close(): Promise<void>;
}

export interface NetworkTools {
  bwrap?: string;
  socat?: string;
  /** util-linux nsenter: bridges started again join the kept namespace with it. */
  nsenter?: string;
}

/** A service's host-side listener, on its unix socket. */
function listenUnix(path: string, service: SandboxService): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer({ noDelay: true }, (socket) => service.accept(socket));
    server.once("error", reject);
    server.listen(path, () => resolve(server));
  });
}

function listenLoopback(service: SandboxService): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer({ noDelay: true }, (socket) => service.accept(socket));
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve(server));
  });
}

/** True when every port listens on loopback in the namespace of `pid` (read from its /proc/net/tcp). */
function listening(pid: number, ports: number[]): boolean {
  let table: string;
  try {
    table = readFileSync(`/proc/${pid}/net/tcp`, "utf8");
  } catch {
    return false;
  }
  const open = new Set<number>();
  for (const line of table.split("\n").slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields[3] === "0A") open.add(parseInt(fields[1]!.split(":")[1]!, 16));
  }
  return ports.every((port) => open.has(port));
}

function childPidOf(status: Readable): Promise<number> {
  return new Promise((resolve, reject) => {
    let pending = "";
    status.on("data", (chunk: Buffer) => {
      pending += chunk.toString("utf8");
      const match = /"child-pid":\s*(\d+)/.exec(pending);
      if (match) resolve(Number(match[1]));
    });
    status.on("end", () => reject(new Error("the network namespace holder ended before it started")));
    status.on("error", reject);
  });
}

/**
 * Gives a sandbox its own network namespace that has only loopback, with
 * the services bridged onto loopback ports (socat, one per service).
 *
 * The namespace is made by a small "holder" bwrap with its own user
 * namespace: a network namespace owned by a user namespace of ours can
 * have its loopback brought up without CAP_NET_ADMIN on the host, which
 * containers started with only SYS_ADMIN do not have (bwrap's own
 * --unshare-net fails there). Every sandboxed process then joins this
 * namespace (nsenter, before bwrap), and all processes of the sandbox share
 * it. The server holds a descriptor of the namespace, so it cannot be
 * replaced by another process's namespace if the holder dies.
 *
 * Unisolated (no bwrap), there is no namespace: each service listens on a
 * random host loopback port instead, and egress is not enforced.
 */
export async function openSandboxNetwork(options: {
  /** Folder for the sockets (made 0700, root's). */
  dir: string;
  services: SandboxService[];
  isolated: boolean;
  tools: NetworkTools;
  /** Bound on the number of connections one bridge serves at once. */
  maxConnections?: number;
}): Promise<SandboxNetwork> {
  const servers: Server[] = [];
  let holder: ChildProcess | undefined;
  /** The host pid of the init of the holder's PID namespace (bwrap's child). */
  let holderInit: number | undefined;
  let nsFd: number | undefined;
  let suspended = false;
  let script = "";
  /** One bridge start or stop at a time. */
  let moving: Promise<void> = Promise.resolve();
  const stopHolder = async () => {
    const running = holder;
    const init = holderInit;
    holder = undefined;
    holderInit = undefined;
    if (!running || running.exitCode !== null || running.signalCode !== null) return;
    const gone = new Promise((resolve) => running.once("exit", resolve));
    try {
      process.kill(-running.pid!, "SIGKILL");
    } catch {
      running.kill("SIGKILL");
    }
    await Promise.race([gone, sleep(2000)]);
    // The namespace's init finishes dying only once every bridge in it is gone; the holder outside
    // it can exit first. Stopped means no bridge left (bounded).
    if (init !== undefined) await untilGone(init);
  };
  const close = async () => {
    await moving.catch(() => undefined);
    await stopHolder();
    if (nsFd !== undefined) {
      closeSync(nsFd);
      nsFd = undefined;
    }
    await Promise.all(servers.map((server) => new Promise((resolve) => server.close(() => resolve(undefined)))));
    if (options.isolated) await rm(options.dir, { recursive: true, force: true });
  };
  const ports = options.services.map((s) => s.port);

  /**
   * Runs the bridges in their own PID namespace (when the server dies, even by
   * SIGKILL, its init goes and takes every bridge with it, forks included),
   * in a new network namespace (the first time) or in the kept one (nsenter).
   */
  const startHolder = async (fresh: boolean) => {
    const bwrapArgs = ["--unshare-pid", "--ro-bind", "/", "/", "--dev", "/dev", "--die-with-parent", "--json-status-fd", "3", "--", "/bin/sh", "-c", script];
    const child = fresh
      ? spawn(options.tools.bwrap!, ["--unshare-user", "--unshare-net", ...bwrapArgs], { stdio: ["ignore", "ignore", "pipe", "pipe"], detached: true, env: { PATH: "/usr/bin:/bin" } })
      : spawn(options.tools.nsenter!, ["--net=/proc/self/fd/4", options.tools.bwrap!, ...bwrapArgs], { stdio: ["ignore", "ignore", "pipe", "pipe", nsFd!], detached: true, env: { PATH: "/usr/bin:/bin" } });
    holder = child;
    let stderr = "";
    child.stderr!.on("data", (d) => (stderr += d));
    const exited = new Promise<never>((_, reject) =>
      child.once("exit", (code) => reject(new Error(`the sandbox's network namespace could not be ${fresh ? "made" : "bridged again"} (exit ${code}): ${stderr.trim()}`))),
    );
    exited.catch(() => undefined);
    const pid = await Promise.race([childPidOf(child.stdio[3] as Readable), exited]);
    holderInit = pid;
    if (fresh) nsFd = openSync(`/proc/${pid}/ns/net`, "r");
    for (let attempt = 0; !listening(pid, ports); attempt++) {
      if (child.exitCode !== null) await exited;
      if (attempt >= 500) throw new Error(`the sandbox's loopback bridges did not start: ${stderr.trim()}`);
      await sleep(attempt < 20 ? 2 : 10);
    }
  };
  const suspend = () =>
    (moving = moving.then(async () => {
      if (!options.isolated || suspended || nsFd === undefined) return;
      suspended = true;
      await stopHolder();
    }));
  const resume = () =>
    (moving = moving.then(async () => {
      if (!suspended || nsFd === undefined) return;
      await startHolder(false);
      suspended = false;
    }));

  try {
    if (!options.isolated) {
      const addresses: Record<string, { host: string; port: number }> = {};
      for (const service of options.services) {
        const server = await listenLoopback(service);
        servers.push(server);
        addresses[service.name] = { host: "127.0.0.1", port: (server.address() as { port: number }).port };
      }
      return { addresses, nsFd: undefined, close, suspend, resume, suspended: false };
    }
    if (!options.tools.bwrap) throw new Error("bwrap is needed for a sandbox's network namespace");
    if (options.services.length > 0 && !options.tools.socat) {
      throw new Error("socat is not installed: it bridges the sandbox's loopback ports to the server (Debian/Ubuntu: apt-get install socat)");
    }
    await mkdir(options.dir, { recursive: true, mode: 0o700 });
    await chmod(options.dir, 0o700);
    const bridges: string[] = [];
    for (const service of options.services) {
      const path = join(options.dir, `${service.name}.sock`);
      servers.push(await listenUnix(path, service));
      await chmod(path, 0o600);
      if (!/^[A-Za-z0-9_./-]+$/.test(path)) throw new Error(`Unsupported characters in the socket path ${path}`);
      bridges.push(
        `${options.tools.socat} TCP4-LISTEN:${service.port},bind=127.0.0.1,fork,reuseaddr,backlog=1024,max-children=${options.maxConnections ?? 256} UNIX-CONNECT:${path} &`,
      );
    }
    // The holder sees the host's files read-only (it runs the bridges, which
    // reach the sockets by their host paths); sandboxed processes never do.
    script = `${bridges.join("\n")}\nexec sleep 2147483647`;
    await startHolder(true);
    const addresses = Object.fromEntries(options.services.map((s) => [s.name, { host: "127.0.0.1", port: s.port }]));
    // Without nsenter the bridges cannot be started again: they are never stopped.
    const canSuspend = Boolean(options.tools.nsenter);
    return {
      addresses,
      nsFd,
      close,
      suspend: canSuspend ? suspend : async () => {},
      resume,
      get suspended() {
        return suspended;
      },
    };
  } catch (error) {
    await close().catch(() => undefined);
    throw error;
  }
}
