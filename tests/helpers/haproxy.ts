// A load balancer in front of several test servers: Debian's HAProxy, run in the
// foreground as a child process on 127.0.0.1, with a config written to a temp
// folder. Round robin per request, health checks on /health/live, timeouts long
// enough for event streams, and a refused connection retried on another server,
// so a killed server costs its own live streams and nothing else.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./ports";
import { HAPROXY } from "./requirements";

export interface Balancer {
  /** http://127.0.0.1:<port>, the address clients use. */
  url: string;
  port: number;
  /** The config as written, for error messages. */
  config: string;
  /** What HAProxy printed so far (warnings, alerts). */
  output(): string;
  /** Stops this HAProxy (by its pid) and removes its folder. */
  close(): Promise<void>;
}

export interface BalancerOptions {
  /** The servers, as http://127.0.0.1:PORT URLs. */
  backends: string[];
  /** Milliseconds between health checks of each backend (500). */
  checkEveryMs?: number;
}

/** The HAProxy config for `backends` behind 127.0.0.1:`port`. */
export function balancerConfig(port: number, backends: string[], checkEveryMs = 500): string {
  if (backends.length === 0) throw new Error("startBalancer needs at least one backend");
  const servers = backends.map((backend, i) => {
    const url = new URL(backend);
    // Test traffic stays on this machine.
    if (url.protocol !== "http:" || url.hostname !== "127.0.0.1" || !url.port || url.pathname !== "/") {
      throw new Error(`a backend must be http://127.0.0.1:PORT, got ${JSON.stringify(backend)}`);
    }
    return `  server s${i} 127.0.0.1:${url.port} check`;
  });
  return [
    "global",
    "  nbthread 1",
    "  maxconn 1000",
    "",
    "defaults",
    "  mode http",
    "  timeout connect 2s",
    "  timeout http-request 30s",
    // Event streams stay open for minutes between events.
    "  timeout client 10m",
    "  timeout server 10m",
    "  timeout tunnel 10m",
    // The server side closes after each response, so every request is balanced anew.
    "  option http-server-close",
    // A refused or reset connection (a killed server) is retried, on another server.
    "  retries 3",
    "  retry-on conn-failure empty-response",
    "  option redispatch 1",
    "",
    "frontend ash",
    `  bind 127.0.0.1:${port}`,
    "  default_backend servers",
    "",
    "backend servers",
    "  balance roundrobin",
    // Says which backend answered (s0, s1, ...), so a test can tell where a request went.
    "  http-response set-header x-balanced-to %s",
    "  option httpchk GET /health/live",
    "  http-check expect status 200",
    `  default-server inter ${checkEveryMs}ms fastinter ${checkEveryMs}ms downinter ${checkEveryMs}ms fall 2 rise 1`,
    ...servers,
    "",
  ].join("\n");
}

/** Starts HAProxy in front of `backends` and returns once its port accepts connections. */
export async function startBalancer(options: BalancerOptions): Promise<Balancer> {
  const port = await freePort();
  const config = balancerConfig(port, options.backends, options.checkEveryMs);
  const dir = await mkdtemp(join(tmpdir(), "ash-balancer-"));
  const file = join(dir, "haproxy.cfg");
  await writeFile(file, config);

  let output = "";
  // -db: stay in the foreground, so the child's pid is HAProxy itself.
  const child: ChildProcess = spawn(HAPROXY, ["-db", "-f", file], { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
  child.stdout!.on("data", (d) => (output += d));
  child.stderr!.on("data", (d) => (output += d));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.once("error", (err) => (output += `\n${err.message}`));
  // A test process that ends without closing (a crash, a timeout) takes its balancer along.
  const reap = () => child.kill("SIGKILL");
  process.once("exit", reap);
  child.once("exit", () => process.off("exit", reap));

  const close = async () => {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      child.kill("SIGTERM");
      // HAProxy stops at once on SIGTERM; SIGKILL only if it does not within ~5 s.
      const stopped = await Promise.race([exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 5_000))]);
      if (!stopped) {
        child.kill("SIGKILL");
        await exited;
      }
    }
    await rm(dir, { recursive: true, force: true });
  };

  for (let attempt = 0; ; attempt++) {
    if (child.exitCode !== null || child.signalCode !== null) {
      await close();
      throw new Error(`haproxy exited (${child.exitCode ?? child.signalCode}) before it listened:\n${output}\nconfig:\n${config}`);
    }
    if (await accepts(port)) break;
    if (attempt >= 200) {
      await close();
      throw new Error(`haproxy did not listen on 127.0.0.1:${port} after 200 tries:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { url: `http://127.0.0.1:${port}`, port, config, output: () => output, close };
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}
