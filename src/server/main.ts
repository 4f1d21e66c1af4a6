import { consola } from "consola";
import { ConfigError, loadConfig } from "../config";
import { startServer } from "./server";
import { createServerParts } from "./parts";

// `ash-server`: the process the image runs. SIGTERM/SIGINT stop it gracefully.
async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      consola.error(error.message);
      process.exit(2);
    }
    throw error;
  }
  if (config.logFormat === "json") consola.options.reporters = [{ log: (entry) => process.stdout.write(JSON.stringify({ time: entry.date.toISOString(), level: entry.type, tag: entry.tag, message: entry.args.map(String).join(" ") }) + "\n") }];

  let server;
  try {
    server = await startServer(config, createServerParts);
  } catch (error: any) {
    consola.error(error?.message ?? String(error));
    process.exit(1);
  }
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    consola.info(`${signal} received; finishing running turns and saving sessions`);
    const force = setTimeout(() => process.exit(1), 30_000);
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
