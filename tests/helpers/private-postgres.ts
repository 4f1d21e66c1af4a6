// A PostgreSQL cluster of a test's own (port and folder), so stopping it
// cannot disturb other tests. Uses infra/postgres.sh.
import { execFile } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { freePort } from "./ports";

const script = fileURLToPath(new URL("../../infra/postgres.sh", import.meta.url));

export interface PrivatePostgres {
  url: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  restart(): Promise<void>;
  purge(): Promise<void>;
}

export async function privatePostgres(): Promise<PrivatePostgres> {
  const port = await freePort();
  const dir = join(tmpdir(), `ash-private-pg-${process.pid}-${Date.now()}`);
  const run = async (command: string) =>
    (await promisify(execFile)("bash", [script, command], { env: { ...process.env, ASH_PG_PORT: String(port), ASH_PG_DIR: dir } })).stdout.trim();
  return {
    url: `postgresql://ash:ash@127.0.0.1:${port}/ash`,
    start: async () => void (await run("start")),
    stop: async () => void (await run("stop")),
    restart: async () => void (await run("restart")),
    purge: async () => void (await run("purge")),
  };
}
