import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { createServer as createNetServer, type AddressInfo } from "node:net";
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { join } from "node:path";
import { networkInterfaces } from "node:os";
import { randomUUID } from "node:crypto";
import { toNodeHandler } from "h3/node";
import { consola, type ConsolaInstance } from "consola";
import type { ServerConfig } from "../config";
import { openDatabase } from "../db/connect";
import { migrate } from "../db/migrate";
import { migrations } from "../db/migrations";
import { countEvictedSessions, countSessionsByStatus, countSleepingSessions } from "../db/queries/sessions";
import type { AshDatabase } from "../db/types";
import { SessionManager } from "../sessions/session-manager";
import { QueueWorker } from "../queue/worker";
import { Evals } from "../evals/evals";
import type { SandboxFactory, WorkspaceStore } from "../sessions/types";
import { version } from "../version";
import { Keys } from "./auth";
import { UsageLimiter } from "./limits";
import { Vault } from "../vault/vault";
import { resealCredentials } from "../vault/credentials";
import { createApp } from "./app";
import type { AppContext } from "./context";
import { Drain } from "./drain";
import { createObservability, observeDatabase, type Observability } from "../observability";

export interface RunningServer {
  url: string;
  port: number;
  ctx: AppContext;
  /** Graceful stop: ends turns cleanly, saves live sessions, closes streams and the database. */
  close(): Promise<void>;
  /** What a graceful stop under way is doing now (for the message when it is cut short). */
  readonly closingStage: string | undefined;
}

export interface ServerParts {
  sandboxes: SandboxFactory;
  workspaces: WorkspaceStore;
}

/** Starts the whole server on `config.port`: database, migrations, keys, sessions, HTTP. */
export async function startServer(
  config: ServerConfig,
  makeParts: (config: ServerConfig, log: ConsolaInstance, serverId: string) => Promise<ServerParts>,
  observability?: Observability,
): Promise<RunningServer> {
  const log = consola.withTag("ash");
  const obs = observability ?? (await createObservability(process.env, { version, warn: (message) => log.warn(message) }));
  // The data folder holds the database, agents' secrets and users' workspaces: its owner's only.
  await mkdir(config.dataDir, { recursive: true, mode: 0o700 });
  await chmod(config.dataDir, 0o700);
  // Fail on a taken port before doing any work, with a sentence that says so.
  if (config.port !== 0) await assertPortFree(config.port, config.host);

  const db = observeDatabase(await openDatabase({ url: config.databaseUrl, dataDir: config.dataDir, connectTimeoutMs: config.databaseConnectTimeoutMs }), obs.metrics);
  let sessions: SessionManager | undefined;
  try {
    await migrate(db, migrations);
    const vault = config.credentialKey ? new Vault(config.credentialKey, config.credentialKeyPrevious) : undefined;
    if (vault && config.credentialKeyPrevious) {
      const { resealed, unreadable } = await resealCredentials(db, vault);
      log.info(`credentials: ${resealed} sealed again under the new master key${unreadable ? `; ${unreadable} sealed under a key this server does not have` : ""}`);
    }
    const keys = await Keys.load(db, { apiKey: config.apiKey, dataDir: config.dataDir, log: (m) => log.info(m), defaults: withoutUnset(config.keyLimits) });
    const serverId = await serverIdOf(config.dataDir);
    const parts = await makeParts(config, log, serverId);
    const drain = new Drain();
    sessions = new SessionManager({ config, db, serverId, sandboxes: parts.sandboxes, workspaceStore: parts.workspaces, vault, log, observability: obs, draining: () => drain.draining });
    await sessions.start();
    const live = sessions;
    obs.metrics.collectSandboxes(async () => ({ ...live.sandboxCounts(), evicted: await countEvictedSessions(db) }));
    obs.metrics.collectSessions(() => countSessionsByStatus(db));
    obs.metrics.collectSessionStates(async () => ({ ...live.liveStateCounts(), asleep: await countSleepingSessions(db) }));
    obs.metrics.collectStarts(() => ({ running: live.starts.active, queued: live.starts.queued(), queuedSpares: live.starts.queued("spare"), peak: live.starts.peak }));
    const queue = new QueueWorker({ db, sessions, serverId, config: config.queue, log });
    const evals = new Evals({ config, db, sessions, serverId, log });
    await evals.start();
    const ctx: AppContext = { config, db, keys, limits: new UsageLimiter(db), vault, sessions, queue, evals, sandboxes: parts.sandboxes, log, version, startedAt: Date.now(), observability: obs, drain };
    const app = createApp(ctx);
    // Plain node:http under h3's own node adapter: it binds exactly the asked
    // port and leaves shutdown to us (listhen's shutdown layer crashed the
    // process when a response finished on a socket that was already gone).
    const handle = toNodeHandler(app);
    const http = createHttpServer((req, res) => {
      endAfterBody(req, res);
      void handle(req, res);
    });
    await listenOn(http, config.port, config.host);
    const port = (http.address() as AddressInfo).port;
    http.on("error", (error) => log.error("HTTP server error:", error));
    log.info(`listening on http://${config.host}:${port} (database: ${db.dialect}, data: ${config.dataDir})`);
    // Heartbeats from now on: other servers can reach this one at its address.
    sessions.leases.start(config.cluster.advertiseUrl ?? advertisedAddress(config.host, port));
    queue.start();
    let closing: Promise<void> | undefined;
    let stage: string | undefined;
    return {
      url: `http://127.0.0.1:${port}`,
      port,
      ctx,
      get closingStage() {
        return stage;
      },
      close: () =>
        (closing ??= (async () => {
          const began = Date.now();
          // How long each stage took, logged at the end: a stop near its bound says where its time went.
          const took: string[] = [];
          let since = began;
          const next = (what: string) => {
            if (stage) took.push(`${stage} ${((Date.now() - since) / 1000).toFixed(1)} s`);
            stage = what;
            since = Date.now();
          };
          // Not ready from now on, and nothing new starts here; what runs may finish.
          drain.begin();
          // Claims nothing more; items whose turns the shutdown cuts short are handed back to the queue.
          queue.stop();
          evals.stop();
          next("finishing running turns and saving live sessions");
          await sessions!.shutdown();
          next("handing queued work back");
          await queue.drain();
          await evals.drain();
          next("removing sandbox resource groups");
          await parts.sandboxes.close().catch((error) => log.warn("removing this server's cgroup folders failed:", error));
          sessions!.gateway.close();
          next("closing client connections");
          drain.endStreams();
          await closeHttp(http, 5000);
          // After the sessions: their last events and spans are sent too.
          next("sending telemetry");
          await obs.shutdown(5000);
          next("closing the database");
          await db.close();
          next("stopped");
          log.info(`stopped in ${((Date.now() - began) / 1000).toFixed(1)} s (${took.join(", ")})`);
        })()),
    };
  } catch (error) {
    await sessions?.shutdown().catch(() => undefined);
    await obs.shutdown(2000).catch(() => undefined);
    await db.close().catch(() => undefined);
    throw error;
  }
}

/** Where other servers reach this one by default: the one address it listens on, or its first non-internal IPv4 address. */
function advertisedAddress(host: string, port: number): string {
  if (host !== "0.0.0.0" && host !== "::" && host !== "") return `http://${host.includes(":") ? `[${host}]` : host}:${port}`;
  for (const addresses of Object.values(networkInterfaces())) {
    for (const address of addresses ?? []) if (address.family === "IPv4" && !address.internal) return `http://${address.address}:${port}`;
  }
  return `http://127.0.0.1:${port}`;
}

/** A stable id for this server's data directory, so a restart can find what it left behind. */
async function serverIdOf(dataDir: string): Promise<string> {
  const file = join(dataDir, "server-id");
  try {
    const id = (await readFile(file, "utf8")).trim();
    if (id) return id;
  } catch (error: any) {
    if (error?.code !== "ENOENT") throw error;
  }
  const id = randomUUID();
  await writeFile(file, id + "\n", { mode: 0o600 });
  return id;
}

// What is left of a refused body (413, or answered before it was read) is
// read and dropped up to this much, then the connection is cut.
const DRAIN_MAX_BYTES = 64 * 1024 * 1024;
const DRAIN_MAX_MS = 30_000;

/**
 * When an answer is complete before its request body was read (a 413, a 401),
 * the answer's bytes go out at once but the response only ends once the rest
 * of the body has been read and dropped. Ending at once would let Node close
 * the socket while the client is still sending, the kernel would reset the
 * connection, and the client could lose the answer. The drain is bounded in
 * bytes and time; past that the connection is cut.
 */
function endAfterBody(req: IncomingMessage, res: ServerResponse): void {
  const end = res.end;
  res.end = function (this: ServerResponse, ...args: any[]) {
    if (req.complete || req.destroyed) return end.apply(this, args as any);
    const callback = typeof args[args.length - 1] === "function" ? args.pop() : undefined;
    if (args[0] !== undefined && args[0] !== null) this.write(args[0], args[1] ?? "utf8");
    drainUnreadBody(req, () => (end as (cb?: () => void) => ServerResponse).call(this, callback));
    return this;
  } as typeof res.end;
}

function drainUnreadBody(req: IncomingMessage, then: () => void): void {
  let drained = 0;
  const finish = (cut: boolean) => {
    clearTimeout(timer);
    req.off("data", onData);
    req.off("end", onEnd);
    req.off("close", onClose);
    if (cut) req.socket?.destroy();
    then();
  };
  const onData = (chunk: Buffer) => {
    drained += chunk.byteLength;
    if (drained > DRAIN_MAX_BYTES) finish(true);
  };
  const onEnd = () => finish(false);
  const onClose = () => finish(false);
  const timer = setTimeout(() => finish(true), DRAIN_MAX_MS);
  timer.unref();
  req.on("data", onData);
  req.once("end", onEnd);
  req.once("close", onClose);
  req.resume();
}

function listenOn(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (error: any) =>
      reject(new Error(error?.code === "EADDRINUSE" ? `Port ${port} is already in use.` : `Cannot listen on ${host}:${port}: ${error?.message}`));
    server.once("error", onError);
    server.listen(port, host, () => {
      server.off("error", onError);
      resolve();
    });
  });
}

/**
 * Stops accepting connections and waits for the open ones to finish (by now
 * the sessions have ended their turns, so event streams are closing); idle
 * keep-alive connections go at once, anything still open after `graceMs` is cut.
 */
function closeHttp(server: Server, graceMs: number): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    const force = setTimeout(() => server.closeAllConnections(), graceMs);
    server.close(() => {
      clearTimeout(force);
      resolve();
    });
    server.closeIdleConnections();
  });
}

function assertPortFree(port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const probe = createNetServer();
    probe.once("error", (error: any) =>
      reject(new Error(error?.code === "EADDRINUSE" ? `Port ${port} is already in use.` : `Cannot listen on ${host}:${port}: ${error?.message}`)),
    );
    probe.listen(port, host, () => probe.close(() => resolve()));
  });
}

export type { AshDatabase };

function withoutUnset<T extends Record<string, unknown>>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}
