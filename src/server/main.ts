import { consola } from "consola";
import { ConfigError, loadConfig, SHUTDOWN_LIMIT_MS } from "../config";
import { startServer } from "./server";
import { createServerParts } from "./parts";
import { configureLogging, createObservability, installUnexpectedErrorHandlers, type Observability } from "../observability";
import { version } from "../version";

// `ash-server`: the process the image runs. SIGTERM/SIGINT stop it gracefully.
async function main(): Promise<void> {
  let config;
  let obs: Observability;
  try {
    config = loadConfig();
    // Before anything logs: tagged loggers copy their reporters when they are made.
    configureLogging(config);
    obs = await createObservability(process.env, { version, warn: (message) => consola.warn(message) });
  } catch (error) {
    if (error instanceof ConfigError) {
      consola.error(error.message);
      process.exit(2);
    }
    throw error;
  }

  // Errors nothing handled are logged and counted; the server keeps serving (docs/decisions/server-unexpected-errors.md).
  installUnexpectedErrorHandlers({ metrics: obs.metrics, log: (message) => consola.error(message), redact: (text) => obs.redact(text) });

  let server;
  try {
    server = await startServer(config, createServerParts, obs);
  } catch (error: any) {
    consola.error(error?.message ?? String(error));
    // 2, like a bad setting: the host cannot do what the configuration asks (sandbox isolation).
    process.exit(error instanceof ConfigError ? 2 : 1);
  }
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    consola.info(`${signal} received; finishing running turns and saving sessions`);
    const force = setTimeout(() => {
      consola.error(`shutdown did not finish within ${SHUTDOWN_LIMIT_MS / 1000} s (still ${server.closingStage ?? "starting"}); exiting now`);
      process.exit(1);
    }, SHUTDOWN_LIMIT_MS);
    force.unref();
    try {
      await server.close();
      process.exit(0);
    } catch (error) {
      consola.error("shutdown failed:", error);
      process.exit(1);
    }
  };
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));
}

void main();
