import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { createServer as createNetServer } from "node:net";
import { join } from "node:path";
import { randomUUID } from "node:crypto";
import { listen, type Listener } from "listhen";
import { toNodeHandler } from "h3/node";
import { consola, type ConsolaInstance } from "consola";
import type { ServerConfig } from "../config";
import { openDatabase } from "../db/connect";
import { migrate } from "../db/migrate";
import { migrations } from "../db/migrations";
import { countEvictedSessions, countSessionsByStatus } from "../db/queries/sessions";
import type { AshDatabase } from "../db/types";
import { SessionManager } from "../sessions/session-manager";
import type { SandboxFactory, SnapshotStore } from "../sessions/types";
import { version } from "../version";
import { KeyRing } from "./auth";
import { createApp } from "./app";
import type { AppContext } from "./context";
import { createObservability, observeDatabase, type Observability } from "../observability";

export interface RunningServer {
  url: string;
  port: number;
  ctx: AppContext;
  /** Graceful stop: ends turns cleanly, saves live sessions, closes streams and the database. */
  close(): Promise<void>;
}

export interface ServerParts {
  sandboxes: SandboxFactory;
  snapshots: SnapshotStore;
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
    const keys = await KeyRing.load(db, { apiKey: config.apiKey, dataDir: config.dataDir, log: (m) => log.info(m) });
    const serverId = await serverIdOf(config.dataDir);
    const parts = await makeParts(config, log, serverId);
    sessions = new SessionManager({ config, db, serverId, sandboxes: parts.sandboxes, snapshots: parts.snapshots, log, observability: obs });
    await sessions.start();
    const live = sessions;
    obs.metrics.collectSandboxes(async () => ({ ...live.sandboxCounts(), evicted: await countEvictedSessions(db) }));
    obs.metrics.collectSessions(() => countSessionsByStatus(db));
    const ctx: AppContext = { config, db, keys, sessions, ...parts, log, version, startedAt: Date.now(), observability: obs };
    const app = createApp(ctx);
    const listener: Listener = await listen(toNodeHandler(app), {
      port: config.port,
      hostname: config.host,
      isProd: true,
      autoClose: false,
      showURL: false,
      qr: false,
      public: config.host !== "127.0.0.1" && config.host !== "localhost",
    } as any);
    const port = (listener.address as any).port as number;
    if (config.port !== 0 && port !== config.port) {
      await listener.close();
      throw new Error(`Port ${config.port} is already in use.`);
    }
    log.info(`listening on http://${config.host}:${port} (database: ${db.dialect}, data: ${config.dataDir})`);
    let closing: Promise<void> | undefined;
    return {
      url: `http://127.0.0.1:${port}`,
      port,
      ctx,
      close: () =>
        (closing ??= (async () => {
          await sessions!.shutdown();
          await listener.close();
          // After the sessions: their last events and spans are sent too.
          await obs.shutdown(5000);
          await db.close();
        })()),
    };
  } catch (error) {
    await sessions?.shutdown().catch(() => undefined);
    await obs.shutdown(2000).catch(() => undefined);
    await db.close().catch(() => undefined);
    throw error;
  }
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
